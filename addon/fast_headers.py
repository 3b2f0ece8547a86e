"""mitmproxy's header lookups by name, with the same answers and fewer layers.

`Headers.get("content-length")` goes through `Mapping.get`, `_MultiDict.__getitem__`,
`Headers.get_all`, `_MultiDict.get_all`, `always_bytes` and a `_kconv` call per field: six
Python frames and a `try`/`except KeyError` for one name. The engine looks up a dozen names per
request (framing, Host, Expect, Upgrade...) and every addon more: about a tenth of mitmdump's
CPU. This module gives `http.Headers` its own `get_all`, `get`, `__getitem__` and
`__contains__`, each doing what the inherited chain does in one frame: the same encoding of
the name (UTF-8, surrogateescape), the same case folding (`bytes.lower`), the same values in
the same order, joined with ", ", and the same errors (`KeyError`, `TypeError`).

This reaches into mitmproxy's internals. It was checked against the `Headers`, `_MultiDict`
and `strutils.always_bytes` of the versions in CHECKED; on any other it refuses to install, logs
why, and mitmproxy runs at its stock speed. `--set keyrelay_fast_headers=false` turns it off.
Loaded on its own (`mitmdump -s addon/fast_headers.py`) it speeds up any mitmdump.
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.utils import strutils
from mitmproxy.version import VERSION

logger = logging.getLogger(__name__)

# The same list as dispatch.py's (a test holds them equal): this module imports nothing of
# keyrelay's, so that `mitmdump -s addon/fast_headers.py` loads alone.
CHECKED = frozenset({"12.2.1", "12.2.2", "12.2.3", "12.3.1"})
OPTION = "keyrelay_fast_headers"


def get_all(self: http.Headers, name: str | bytes) -> list[str]:
    """`Headers.get_all`: every value of that name, in order, not folded."""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    if not isinstance(raw, bytes):
        raw = strutils.always_bytes(
            raw
        )  # None passes (and fails below, as it does); else TypeError
    key = raw.lower()
    return [v.decode("utf-8", "surrogateescape") for k, v in self.fields if k.lower() == key]


def get(self: http.Headers, name: str | bytes, default: Any = None) -> Any:
    """`Mapping.get` over `__getitem__`: the values folded with ", ", or the default."""
    values = get_all(self, name)
    return ", ".join(values) if values else default


def getitem(self: http.Headers, name: str | bytes) -> str:
    values = get_all(self, name)
    if not values:
        raise KeyError(name)
    return ", ".join(values)


def contains(self: http.Headers, name: object) -> bool:
    return bool(get_all(self, name))  # type: ignore[arg-type]


FAST = {"get_all": get_all, "get": get, "__getitem__": getitem, "__contains__": contains}


class _Installed:
    """What `http.Headers` itself held before: a method, or None where it inherited one."""

    def __init__(self) -> None:
        self.stock: dict[str, Any] | None = None

    def install(self) -> None:
        if self.stock is None:
            # A reload of this module runs here again, over its own functions: each names the
            # stock it replaced.
            held = {name: http.Headers.__dict__.get(name) for name in FAST}
            self.stock = {name: getattr(v, "keyrelay_stock", v) for name, v in held.items()}
        for name, function in FAST.items():
            function.keyrelay_stock = self.stock[name]  # type: ignore[attr-defined]
            setattr(http.Headers, name, function)

    def uninstall(self) -> None:
        for name, value in (self.stock or {}).items():
            if value is not None:
                setattr(http.Headers, name, value)
            elif name in http.Headers.__dict__:
                delattr(http.Headers, name)  # inherited again


INSTALLED = _Installed()


def installed() -> bool:
    return http.Headers.__dict__.get("get_all") is get_all


class FastHeaders:
    """The option, and the lookups installed or removed to follow it."""

    def load(self, loader: Any) -> None:
        loader.add_option(
            OPTION,
            bool,
            True,
            "Look up mitmproxy's headers by name in one step (same answers, same errors). "
            "false: mitmproxy's own lookups.",
        )

    def configure(self, updated: set[str]) -> None:
        if OPTION not in updated:
            return
        if not ctx.options.keyrelay_fast_headers:
            if installed():
                INSTALLED.uninstall()
                logger.info("keyrelay: fast header lookups off")
            return
        if installed():
            return
        if VERSION not in CHECKED:
            logger.warning(
                "keyrelay: fast header lookups not installed: checked against mitmproxy %s, "
                "this is %s (it runs at mitmproxy's own speed)",
                ", ".join(sorted(CHECKED)),
                VERSION,
            )
            return
        INSTALLED.install()
        logger.info("keyrelay: fast header lookups on")


addons = [FastHeaders()]  # `mitmdump -s addon/fast_headers.py`: the lookups alone
