"""The objects alive when the proxy starts, moved out of the garbage collector's sight, once.

mitmproxy, keyrelay and what they import are about 110,000 objects (functions, types, modules)
that live as long as the process. Python's full collection scans every one of them: 60-80 ms
each, every few seconds under load here, a few per cent of the CPU and a stall for every flow
in flight. `gc.freeze()` after a collection at start leaves them out of all later scans.
"""

from __future__ import annotations

import gc
import logging

logger = logging.getLogger(__name__)

_done = False  # not gc.get_freeze_count(): the interpreter freezes a few hundred of its own


def freeze_once() -> int | None:
    """Collect, then freeze what is alive; the number frozen. Only the first call in a process
    does it (a reloaded script's old module must stay collectable): later ones return None."""
    global _done
    if _done:
        return None
    _done = True
    gc.collect()
    before = gc.get_freeze_count()
    gc.freeze()
    frozen = gc.get_freeze_count() - before
    logger.info("keyrelay: %d objects alive at start frozen out of the collector's scans", frozen)
    return frozen
