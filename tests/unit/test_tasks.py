"""tasks.spawn: background work kept alive until done; failures logged by type only."""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings
import weakref

import pytest

from addon import tasks


def test_without_a_loop_the_coroutine_is_closed_unrun() -> None:
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    coroutine = work()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would be a warning
        assert tasks.spawn(coroutine) is None
        del coroutine
        gc.collect()
    assert not ran


def test_a_spawned_task_is_kept_alive_until_done_then_let_go() -> None:
    async def scenario() -> None:
        async def work() -> None:
            await asyncio.get_running_loop().create_future()  # referenced by this task only

        task = tasks.spawn(work())
        assert task is not None
        alive = weakref.ref(task)
        del task
        await asyncio.sleep(0)  # now waiting: the loop holds it weakly, if at all
        gc.collect()
        running = alive()
        assert running is not None and not running.done()
        running.cancel()
        del running
        await asyncio.sleep(0.001)
        gc.collect()
        assert alive() is None  # finished: not kept for ever either

    asyncio.run(scenario())


def test_a_failed_task_is_logged_by_its_type_only(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async def fails() -> None:
            raise ConnectionError("redis://:hunter2@10.0.0.9 refused")

        async def cancelled() -> None:
            await asyncio.sleep(10)

        tasks.spawn(fails())
        slow = tasks.spawn(cancelled())
        assert slow is not None
        await asyncio.sleep(0)
        slow.cancel()
        await asyncio.sleep(0.001)

    with caplog.at_level(logging.WARNING, logger="addon.tasks"):
        asyncio.run(scenario())
    assert [r.getMessage() for r in caplog.records] == [
        "keyrelay: a background task failed: ConnectionError"
    ]
    assert "hunter2" not in caplog.text
