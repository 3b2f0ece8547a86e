"""The `keyrelay` command (and `keyrelay-web`): mitmdump (mitmweb) in reverse mode with keyrelay's
addon and its base options, wherever keyrelay is installed, writing nothing at start.

The one place those options live: `pip install .` puts both commands on PATH (pyproject's
[project.scripts]); scripts/dev, web, record and replay run them through scripts/_mitm, and the
container image and the systemd unit in deploy/ run `keyrelay`. Arguments go to mitmproxy after
the base options, so they override them (`--listen-port 9000`, `--set keyrelay_rules=...`).

- `--mode reverse:http://keyrelay.invalid`: keyrelay routes every request itself; the target
  is a placeholder that is never reached. Its scheme is `http`: in front of an `https` target
  mitmproxy listens for HTTP/3 on UDP as well, an entrance none of keyrelay's transport bounds
  cover, and a drain that stopped that UDP server crashed the process as it exited (a thread of
  mitmproxy_rs calling into a Python already finalizing: SIGSEGV, about one stop in two).
- `--listen-host`/`--listen-port`: `KEYRELAY_HOST` (127.0.0.1) and `KEYRELAY_PORT` (8080).
- `connection_strategy=lazy`: eager mode would connect to the placeholder before keyrelay routes.
- `tcp_timeout=3600`: mitmproxy closes a silent connection after it (600 s by default), which
  would race keyrelay's own first-byte timeout on a long, non-streamed generation.
- `flow_detail=0` (mitmdump only, unless the arguments set it: mitmproxy refuses an option set
  twice): keyrelay's access log has one line per request already; mitmdump's own per-flow lines
  would say it twice, and cost CPU. `--set flow_detail=1` brings them back.
- `PYTHONOPTIMIZE=1` unless set: drops mitmproxy's `if __debug__` checks (a type check of every
  request and response, event-type checks in its protocol layers), 5-13% less CPU per request
  (scripts/bench). keyrelay checks nothing with `assert` (its asserts only narrow types), nor do
  its hooks depend on one to fail closed. `PYTHONOPTIMIZE=` (empty) keeps the checks.

PYTHONOPTIMIZE is read when Python starts, so a process started without the level asked for
starts Python again once (the same process id: a service manager's signals still reach it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

ADDON_SCRIPT = Path(__file__).resolve().with_name("proxy.py")
REVERSE_MODE = "reverse:http://keyrelay.invalid"
TOOLS = ("mitmdump", "mitmweb")


def mitmproxy_args(tool: str, args: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The tool's command line (without its name): the base options, then `args`."""
    quiet = []
    if tool == "mitmdump" and not any("flow_detail" in a for a in args):
        quiet = ["--set", "flow_detail=0"]
    return [
        *("--mode", REVERSE_MODE),
        *("--listen-host", env.get("KEYRELAY_HOST") or "127.0.0.1"),
        *("--listen-port", env.get("KEYRELAY_PORT") or "8080"),
        *("--set", "connection_strategy=lazy"),
        *("--set", "tcp_timeout=3600"),
        *quiet,
        *("-s", str(ADDON_SCRIPT)),
        *args,
    ]


def optimize_setting(env: Mapping[str, str]) -> tuple[str, int]:
    """PYTHONOPTIMIZE as keyrelay runs it (1 unless set) and the level Python makes of it."""
    value = env.get("PYTHONOPTIMIZE", "1")
    if not value:
        return value, 0
    return value, int(value) if value.isdigit() else 1  # Python: any other word means 1


def run(tool: str, args: Sequence[str]) -> NoReturn:
    """Start Python again if its optimisation level is not the one asked for, then the tool."""
    value, level = optimize_setting(os.environ)
    if sys.flags.optimize != level:
        env = {**os.environ, "PYTHONOPTIMIZE": value}
        # -P: the working directory is not put on sys.path (it may hold another `addon`).
        python = sys.executable
        os.execve(python, [python, "-P", "-m", "addon.cli", tool, *args], env)
    start(tool, args)


def start(tool: str, args: Sequence[str]) -> NoReturn:
    """Run `tool` with keyrelay in this process."""
    if tool not in TOOLS:
        raise SystemExit(f"keyrelay: unknown tool {tool!r} (one of {', '.join(TOOLS)})")
    from mitmproxy.tools import main as mitmproxy_main  # only in the process that runs it

    sys.argv = [tool, *args]  # what mitmproxy names itself by in its messages
    getattr(mitmproxy_main, tool)(mitmproxy_args(tool, args, os.environ))
    raise SystemExit(0)


def main() -> NoReturn:
    """`keyrelay [mitmdump arguments...]`"""
    run("mitmdump", sys.argv[1:])


def web() -> NoReturn:
    """`keyrelay-web [mitmweb arguments...]`"""
    run("mitmweb", sys.argv[1:])


if __name__ == "__main__":  # how run() starts Python again: never again from here
    if len(sys.argv) < 2:
        raise SystemExit("usage: python -m addon.cli mitmdump|mitmweb [arguments...]")
    start(sys.argv[1], sys.argv[2:])
