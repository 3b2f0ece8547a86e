"""The profile summary charges keyrelay only with keyrelay's own work: not the hook dispatch,
not the engine's fast paths the engine calls itself, not mitmproxy's reading under a wrapper."""

from __future__ import annotations

import importlib
import sys

from support.repo import REPO

sys.path.insert(0, str(REPO))  # bench/ is a directory of the repo, not an installed package
profile = importlib.import_module("bench.profile")

ROOT = "run (mitmproxy/proxy/server.py:1)"
TABLE = "Table.trigger_event (/r/addon/dispatch.py:2)"
OURS = "KeyRelay.requestheaders (/r/addon/relay.py:3)"
LOOKUP = "get_all (/r/addon/fast_paths.py:4)"
READ = "read_headers (/r/addon/transport/head_limit.py:5)"
ENGINE_READ = "Http1Server.read_headers (mitmproxy/proxy/layers/http/_http1.py:6)"


def test_only_keyrelays_own_frames_count_as_keyrelays() -> None:
    collapsed = "\n".join(
        [
            f"{ROOT};{TABLE};{OURS} 10",  # keyrelay's hook
            f"{ROOT};{TABLE};{OURS};{LOOKUP} 5",  # keyrelay looking a header up: keyrelay's
            f"{ROOT};{LOOKUP} 20",  # the engine looking a header up: the engine's
            f"{ROOT};{TABLE} 15",  # dispatching: not keyrelay's
            f"{ROOT};{READ};{ENGINE_READ} 50",  # mitmproxy's reading, under keyrelay's cap
        ]
    )
    summary = profile.summarize(collapsed.replace("/r/", f"{profile.REPO}/"), "keyrelay")
    assert "(100 samples)" in summary
    assert "inside keyrelay's addon code: 15.0% of samples" in summary
    assert "15.0% incl  addon/relay.py:KeyRelay.requestheaders" in summary
    assert "incl  addon/fast_paths.py" not in summary
