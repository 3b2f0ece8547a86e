"""The engine gate: on a mitmproxy version keyrelay was not checked against, start-up stops with
one line, unless keyrelay_unprotected, which is logged as an error and leaves every security
patch out. The version is faked where addon/engine reads it; the start is keyrelay's own hooks,
called as mitmproxy calls them when it loads the script (a real mitmdump:
tests/e2e/test_engine_e2e.py)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator

import pytest
from mitmproxy import exceptions, hooks
from mitmproxy.proxy.layers.http import _http1, _http2, _http3, _http_h2
from mitmproxy.proxy.server_hooks import ServerConnectionHookData
from mitmproxy.test import taddons, tflow
from support.repo import REPO, RULES

from addon import engine
from addon.config.transport import Timeouts
from addon.relay import KeyRelay

UNCHECKED = "12.3.99"
# Every attribute of mitmproxy's that a security patch replaces.
REPLACED = [
    (_http1.Http1Server, "read_headers"),  # head_limit.py
    (_http1.Http1Client, "send"),  # h1_framing.py
    (_http2.Http2Server, "_handle_event"),  # h2_bounds.py
    (_http1, "make_error_response"),  # errorpage.py
    (_http2, "format_error"),
    (_http3, "format_error"),
    (_http_h2.BufferedH2Connection, "send_headers"),
]


@pytest.fixture
def unchecked(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """An unchecked mitmproxy, whose replaced attributes are markers: one still there after
    keyrelay started was never replaced."""
    monkeypatch.setattr(engine, "VERSION", UNCHECKED)
    markers = [object() for _ in REPLACED]
    for (owner, name), marker in zip(REPLACED, markers, strict=True):
        monkeypatch.setattr(owner, name, marker)
    yield markers
    assert [getattr(owner, name) for owner, name in REPLACED] == markers


def start(tctx: taddons.context, relay: KeyRelay, *settings: str) -> None:
    """What mitmdump does with `--set` and `-s addon/proxy.py`: the settings wait for their
    options, the script is loaded, then configured with every option."""
    tctx.options.set(f"keyrelay_rules={RULES}", *settings, defer=True)
    tctx.master.addons.add(relay)
    tctx.master.addons.invoke_addon_sync(relay, hooks.ConfigureHook(set(tctx.options.keys())))


def test_an_unchecked_mitmproxy_stops_start_up_with_one_line(
    unchecked: list[object], capsys: pytest.CaptureFixture[str]
) -> None:
    relay = KeyRelay()
    with taddons.context() as tctx, pytest.raises(SystemExit) as stopped:
        start(tctx, relay)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        f"keyrelay: mitmproxy {UNCHECKED} is not one keyrelay was checked against "
        "(12.2.1, 12.2.2, 12.2.3, 12.3.1): install one (pip install -c constraints.txt -e .), "
        "or set keyrelay_unprotected=true to start without the request-head cap, HTTP/1 framing "
        "of HTTP/2 bodies, the HTTP/2 bounds, the request-head deadline, the upstream timeouts "
        "and the JSON error page\n"
    )
    assert relay.rules is None  # stopped before the rules were read


def test_keyrelay_unprotected_starts_without_them_and_says_so_as_an_error(
    unchecked: list[object], caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        relay = KeyRelay()
        with taddons.context() as tctx, caplog.at_level(logging.INFO):
            start(tctx, relay, "keyrelay_unprotected=true")
            assert relay.rules is not None
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1 and errors[0].startswith(
                f"keyrelay: UNPROTECTED (keyrelay_unprotected=true): mitmproxy {UNCHECKED} "
            )
            for patch in engine.PATCHES.values():
                assert (patch.without in errors[0]) is patch.security
            assert not relay.connections._can_close  # no head deadline

            # Timeouts step aside: no flow is watched, no connect is timed.
            clock, flow = relay.transport.clock, tflow.tflow()
            clock.routed(flow, (flow.client_conn.id, "api.openai.com", 443), "openai", Timeouts())
            assert clock.finished(flow) is None
            clock.connecting(
                ServerConnectionHookData(server=flow.server_conn, client=flow.client_conn)
            )
            assert clock._connects == {}

            # Turning it off now would leave the process unprotected anyway: refused.
            with pytest.raises(exceptions.OptionsError, match="cannot be now"):
                tctx.options.update(keyrelay_unprotected=False)
            assert tctx.options.keyrelay_unprotected

    asyncio.run(scenario())


def test_on_a_checked_mitmproxy_the_option_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert engine.VERSION in engine.CHECKED  # constraints.txt installs a checked one
    relay = KeyRelay()
    with taddons.context() as tctx, caplog.at_level(logging.WARNING):
        start(tctx, relay, "keyrelay_unprotected=true")
        assert relay.connections._can_close
    assert [r for r in caplog.records if r.name == engine.__name__] == []


@pytest.mark.parametrize("patch", ["dispatch", "fast_paths"])
def test_a_speed_patch_steps_aside_with_a_warning(
    patch: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engine, "VERSION", UNCHECKED)
    with caplog.at_level(logging.WARNING):
        assert not engine.checked(patch)
        assert not engine.checked("head_limit")  # a security patch's absence: the gate's line
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert engine.PATCHES[patch].without in caplog.text


def test_one_list_of_checked_versions_for_every_patch() -> None:
    """Each patch module goes through addon/engine; none keeps a list or reads the version."""
    for name, patch in engine.PATCHES.items():
        source = (REPO / patch.module).read_text()
        assert re.search(rf"engine\.(checked|replace)\([^)]*\"{name}\"", source), name
    own = [
        str(path.relative_to(REPO))
        for path in (REPO / "addon").rglob("*.py")
        if re.search(r"^CHECKED = |mitmproxy\.version import VERSION", path.read_text(), re.M)
    ]
    assert own == ["addon/engine/__init__.py"]
