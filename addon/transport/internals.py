"""The one way keyrelay replaces a piece of mitmproxy: only on the versions it was read against.

head_limit.py, h1_framing.py, h2_bounds.py and connections.py reach into mitmproxy's internals
(see each for what and why). Their code was compared with mitmproxy's in CHECKED; on any other
version the replacement is not installed and a warning says what goes unprotected.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy.version import VERSION

logger = logging.getLogger(__name__)

CHECKED = frozenset({"12.2.1", "12.2.2", "12.2.3", "12.3.1"})


def checked(consequence: str) -> bool:
    """Whether this mitmproxy is one of CHECKED; if not, warn that `consequence`."""
    if VERSION in CHECKED:
        return True
    logger.warning(
        "keyrelay: %s: checked against mitmproxy %s, this is %s",
        consequence,
        ", ".join(sorted(CHECKED)),
        VERSION,
    )
    return False


def replace(owner: type, name: str, replacement: Any, consequence: str) -> bool:
    """Set `owner.name` to `replacement` (once) on a checked version. False when not installed."""
    if getattr(owner, name) is replacement:
        return True
    if not checked(consequence):
        return False
    setattr(owner, name, replacement)
    return True
