"""keyrelay's patches to mitmproxy, and the one list of mitmproxy versions they were checked on.

Nine modules replace a piece of mitmproxy or reach into its internals (PATCHES). Their code was
read against the mitmproxy versions in CHECKED; what they touch there is fingerprinted in
fingerprints.py, and tests/unit/test_engine_fingerprints.py names the patch to read again when
a fingerprint differs. scripts/ install 12.3.1, pinned in constraints.txt.

On any other version none of them installs. Six are security patches: then start-up stops with
one line (`Gate`, exit 2), unless `keyrelay_unprotected=true`, which is logged as an error at
every start while they step aside. The other three step aside with a warning: the two speed
patches (dispatch.py, fast_paths.py), and transport/websocket_close.py (a metered WebSocket
session keyrelay ends then has its client's messages dropped instead of a close).

This module imports nothing of keyrelay's: `mitmdump -s addon/dispatch.py` loads it alone.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy.version import VERSION

logger = logging.getLogger(__name__)

# Each has the fingerprints in fingerprints.py: 12.3.1 as installed (constraints.txt pins it),
# 12.2.1-12.2.3 read from their release tags.
CHECKED = frozenset({"12.2.1", "12.2.2", "12.2.3", "12.3.1"})
UNPROTECTED = "keyrelay_unprotected"


@dataclass(frozen=True, slots=True)
class Patch:
    module: str  # what to read again when mitmproxy's code under it changes
    title: str  # what it gives, for the line that stops start-up
    without: str  # what goes missing when it is not installed
    security: bool = True


PATCHES: dict[str, Patch] = {
    "head_limit": Patch(
        "addon/transport/head_limit.py",
        "the request-head cap",
        "request heads are not capped",
    ),
    "h1_framing": Patch(
        "addon/transport/h1_framing.py",
        "HTTP/1 framing of HTTP/2 bodies",
        "HTTP/2 request bodies without content-length are not framed for HTTP/1 upstreams",
    ),
    "h2_bounds": Patch(
        "addon/transport/h2_bounds.py",
        "the HTTP/2 bounds",
        "HTTP/2 clients are not bounded (buffered answers, stream rate)",
    ),
    "connections": Patch(
        "addon/transport/connections.py",
        "the request-head deadline",
        "no deadline for request heads",
    ),
    "timeouts": Patch(
        "addon/transport/timeouts.py",
        "the upstream timeouts",
        "no connect, first-byte or idle timeouts, and a request body over its limit does not "
        "cut its upstream connection",
    ),
    "errorpage": Patch(
        "addon/errorpage.py",
        "the JSON error page",
        "error pages are mitmproxy's (HTML, naming internal addresses, no CORS)",
    ),
    "websocket_close": Patch(
        "addon/transport/websocket_close.py",
        "closing a WebSocket with a code",
        "a metered WebSocket session keyrelay ends is not closed with its code (what its client "
        "sends is dropped instead)",
        security=False,
    ),
    "dispatch": Patch(
        "addon/dispatch.py",
        "the fast hook dispatch",
        "fast hook dispatch not installed (it runs at mitmproxy's own speed)",
        security=False,
    ),
    "fast_paths": Patch(
        "addon/fast_paths.py",
        "the fast paths",
        "fast paths not installed (it runs at mitmproxy's own speed)",
        security=False,
    ),
}


def _versions() -> str:
    return ", ".join(sorted(CHECKED))


def _security() -> list[Patch]:
    return [p for p in PATCHES.values() if p.security]


def _titles() -> str:
    *most, last = (p.title for p in _security())
    return f"{', '.join(most)} and {last}"


def checked(patch: str) -> bool:
    """Whether `patch` may install on this mitmproxy. A speed patch that may not says so here;
    the missing security patches are the Gate's to report, once for all of them."""
    if VERSION in CHECKED:
        return True
    if not PATCHES[patch].security:
        logger.warning(
            "keyrelay: %s: checked against mitmproxy %s, this is %s",
            PATCHES[patch].without,
            _versions(),
            VERSION,
        )
    return False


def replace(owner: type, name: str, replacement: Any, patch: str) -> bool:
    """Set `owner.name` to `replacement` (once) on a checked version. False when not installed."""
    if getattr(owner, name) is replacement:
        return True
    if not checked(patch):
        return False
    setattr(owner, name, replacement)
    return True


class Gate:
    """`keyrelay_unprotected`, and the stop at start-up when the security patches cannot install."""

    def __init__(self) -> None:
        self.started = False

    def load(self, loader: Any) -> None:
        loader.add_option(
            UNPROTECTED,
            bool,
            False,
            "Start on a mitmproxy version keyrelay was not checked against, without "
            f"{_titles()}. Logged as an error at every start.",
        )

    def configure(self, updated: set[str]) -> None:
        # The first configure decides (mitmproxy's lists every option); later, the option's own.
        if VERSION in CHECKED or (self.started and UNPROTECTED not in updated):
            return
        unchecked = f"mitmproxy {VERSION} is not one keyrelay was checked against ({_versions()})"
        if ctx.options.keyrelay_unprotected:
            _error_without_stopping(
                f"keyrelay: UNPROTECTED ({UNPROTECTED}=true): {unchecked}: "
                + "; ".join(p.without for p in _security())
            )
        elif not self.started:
            # One line and a non-zero exit, before anything listens (as a bad rules file does).
            print(
                f"keyrelay: {unchecked}: install one (pip install -c constraints.txt -e .), "
                f"or set {UNPROTECTED}=true to start without {_titles()}",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(2)
        else:
            raise exceptions.OptionsError(
                f"{UNPROTECTED}: mitmproxy {VERSION} was not checked, the security patches "
                "are not installed and cannot be now"
            )
        self.started = True


def _error_without_stopping(message: str) -> None:
    """Log an error to every handler but mitmproxy's start-up check (errorcheck), which stops
    mitmdump on any error logged while it starts: this one the operator asked for. Matched by
    name: on a version keyrelay was not checked against, the class may have moved."""
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ != "ErrorCheckHandler" and record.levelno >= handler.level:
            handler.handle(record)
