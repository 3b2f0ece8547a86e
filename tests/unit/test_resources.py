"""Resources: what a rules reload keeps, stops and starts."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from addon.resources import Resources


class Thing:
    made = 0

    def __init__(self, name: str) -> None:
        Thing.made += 1
        self.name = name
        self.starts = 0
        self.stopped = False

    def start(self) -> None:
        self.starts += 1

    def stop(self) -> None:
        self.stopped = True


class Connection:
    """Ends with an async close(), like a Redis link."""

    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        await asyncio.sleep(0)
        self.closed = True


def load(resources: Resources, *names: str) -> dict[str, Thing]:
    with resources.reload() as live:
        return {name: live.get(("thing", name), partial(Thing, name)) for name in names}


def test_a_reload_reuses_what_it_still_asks_for_and_stops_the_rest() -> None:
    resources = Resources()
    first = load(resources, "a", "b")
    second = load(resources, "a", "c")
    assert second["a"] is first["a"] and not first["a"].stopped
    assert first["b"].stopped
    assert not second["c"].stopped
    resources.stop()
    assert second["a"].stopped and second["c"].stopped


def test_one_load_asking_twice_gets_one_object() -> None:
    resources = Resources()
    with resources.reload() as live:
        before = Thing.made
        one = live.get("x", lambda: Thing("x"))
        assert live.get("x", lambda: Thing("other")) is one
        assert Thing.made == before + 1


def test_a_failed_load_stops_what_it_made_and_keeps_the_old_set() -> None:
    resources = Resources()
    old = load(resources, "a", "b")
    made: dict[str, Thing] = {}
    with pytest.raises(RuntimeError), resources.reload() as live:
        made["a"] = live.get(("thing", "a"), lambda: Thing("a"))
        made["new"] = live.get(("thing", "new"), lambda: Thing("new"))
        raise RuntimeError("a broken rules file")
    assert made["a"] is old["a"] and not old["a"].stopped  # still in use by the old rules
    assert made["new"].stopped
    assert not old["b"].stopped
    assert load(resources, "a", "b") == old  # the old set is still the one held


def test_resources_start_once_running_and_again_after_a_reload() -> None:
    resources = Resources()
    first = load(resources, "a")
    assert first["a"].starts == 0  # no event loop yet
    resources.start()
    assert first["a"].starts == 1
    second = load(resources, "a", "b")
    assert second["b"].starts == 1  # a resource made while running starts at once
    assert second["a"].starts == 2  # starting twice is harmless (and expected)


def test_an_async_close_is_run_in_the_background() -> None:
    async def scenario() -> Connection:
        resources = Resources()
        with resources.reload() as live:
            connection = live.get("redis", Connection)
        with resources.reload():
            pass  # no longer asked for
        await asyncio.sleep(0.001)
        return connection

    assert asyncio.run(scenario()).closed
