"""The hook dispatch table against mitmproxy's own dispatch: the same calls, in the same order,
with the same arguments, the same errors logged, through a script reload."""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import addonmanager, exceptions, hooks
from mitmproxy.addons.script import Script
from mitmproxy.proxy.layers.http import HttpRequestHeadersHook, HttpRequestHook
from mitmproxy.test import taddons, tflow

from addon import dispatch, engine

LOG: list[tuple[str, str, int]] = []  # (addon, hook, id of the first argument)


class Recorder:
    def __init__(self, name: str, *, children: list[Any] | None = None) -> None:
        self.name = name
        if children is not None:
            self.addons = children

    def requestheaders(self, flow: Any) -> None:
        LOG.append((self.name, "requestheaders", id(flow)))

    async def request(self, flow: Any) -> None:
        await asyncio.sleep(0)
        LOG.append((self.name, "request", id(flow)))


class Raises(Recorder):
    def requestheaders(self, flow: Any) -> None:
        LOG.append((self.name, "requestheaders", id(flow)))
        raise RuntimeError(f"{self.name} failed")


class Halts(Recorder):
    async def request(self, flow: Any) -> None:
        LOG.append((self.name, "request", id(flow)))
        raise exceptions.AddonHalt


class Updates(Recorder):
    def update(self, flows: list[Any]) -> None:
        LOG.append((self.name, "update", id(flows[0])))


class ModuleNamedLikeAHook:
    name = "module-attr"
    requestheaders = types.ModuleType("requestheaders")


SCRIPT = """
import dispatch_test_log

class Scripted:
    name = "scripted-{version}"
    def requestheaders(self, flow):
        dispatch_test_log.LOG.append((self.name, "requestheaders", id(flow)))

addons = [Scripted()]
"""


def chain() -> list[Any]:
    return [
        Recorder("first"),
        Raises("raises", children=[Recorder("skipped-child")]),
        Recorder("parent", children=[Recorder("child", children=[Recorder("grandchild")])]),
        ModuleNamedLikeAHook(),
        Halts("halts"),
        Recorder("after-halt"),
    ]


async def run(tmp_path: Path, caplog: pytest.LogCaptureFixture, *, fast: bool) -> list[Any]:
    LOG.clear()
    sys.modules["dispatch_test_log"] = sys.modules[__name__]
    script_file = tmp_path / f"script-{fast}.py"
    script_file.write_text(SCRIPT.format(version=1))

    async def scenario() -> None:
        with taddons.context() as tctx:
            manager = tctx.master.addons
            if fast:
                dispatch.Table(manager).install()
            scripts = Recorder("scripts", children=[])  # as mitmproxy's ScriptLoader holds them
            manager.add(*chain(), scripts)
            script = Script(str(script_file), reload=True)
            assert script.reloadtask is not None
            script.reloadtask.cancel()  # this test stands in for the file watcher
            scripts.addons.append(script)
            manager.register(script)
            script.loadscript()
            flow = tflow.tflow()
            for _ in range(2):
                await manager.trigger_event(HttpRequestHeadersHook(flow))
                await manager.handle_lifecycle(HttpRequestHook(flow))
            script_file.write_text(SCRIPT.format(version=2))
            script.loadscript()  # what the file watcher does on a change
            await manager.trigger_event(HttpRequestHeadersHook(flow))
            manager.remove(script)
            scripts.addons.remove(script)
            await manager.trigger_event(HttpRequestHeadersHook(flow))
            await manager.trigger_event(hooks.UpdateHook([flow]))
            manager.add(Updates("updates"))  # now handle_lifecycle has an `update` to call
            await manager.handle_lifecycle(HttpRequestHook(flow))

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger=addonmanager.__name__):
        await scenario()
    errors = [(r.getMessage(), r.exc_info[2].tb_frame.f_code.co_name) for r in caplog.records]
    first_flow_ids = {entry[2] for entry in LOG}
    assert len(first_flow_ids) == 1  # one flow, passed through every time
    return [entry[:2] for entry in LOG] + errors


def test_the_table_calls_what_mitmproxy_calls_in_the_same_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def both() -> tuple[list[Any], list[Any]]:  # one event loop: mitmproxy logs to it
        return await run(tmp_path, caplog, fast=False), await run(tmp_path, caplog, fast=True)

    stock, fast = asyncio.run(both())
    assert fast == stock
    # And the scenario exercised what it claims to.
    assert ("grandchild", "request") in stock and ("after-halt", "request") not in stock
    assert ("skipped-child", "requestheaders") not in stock
    assert ("scripted-2", "requestheaders") in stock
    assert stock.count(("scripted-1", "requestheaders")) == 2
    assert stock.count(("scripted-2", "requestheaders")) == 1  # not after its removal
    assert ("Addon error: raises failed", "requestheaders") in stock
    assert stock.count(("updates", "update")) == 1  # from handle_lifecycle, once it has one


def test_it_steps_aside_on_a_version_it_was_not_checked_against(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engine, "VERSION", "99.0")
    addon = dispatch.FastDispatch()
    with taddons.context(addon) as tctx, caplog.at_level(logging.WARNING):
        tctx.configure(addon, keyrelay_fast_dispatch=True)
        assert dispatch.installed(tctx.master.addons) is None
    assert "fast hook dispatch not installed (it runs at mitmproxy's own speed): checked " in (
        caplog.text
    )
    assert "checked against mitmproxy 12.2.1, 12.2.2, 12.2.3, 12.3.1, this is 99.0" in caplog.text


def test_the_option_installs_and_removes_it() -> None:
    addon = dispatch.FastDispatch()
    with taddons.context(addon) as tctx:
        manager = tctx.master.addons
        tctx.configure(addon, keyrelay_fast_dispatch=True)
        table = dispatch.installed(manager)
        assert table is not None and manager.trigger_event == table.trigger_event
        tctx.configure(addon, keyrelay_fast_dispatch=False)
        assert dispatch.installed(manager) is None
        assert manager.trigger_event.__func__ is addonmanager.AddonManager.trigger_event  # type: ignore[attr-defined]
        assert manager.handle_lifecycle.__func__ is addonmanager.AddonManager.handle_lifecycle  # type: ignore[attr-defined]
