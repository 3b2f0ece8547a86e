"""The engine's per-request steps, with the same results in fewer of them.

mitmproxy does a few things on every request through layers of generality that cost more than
the thing itself. Each is replaced here by one function that does exactly what the layers do:

- A header lookup by name (`Headers.get`, `[]`, `in`, `get_all`) goes through `Mapping.get`,
  `_MultiDict.__getitem__`, `Headers.get_all`, `_MultiDict.get_all`, `always_bytes` and a
  `_kconv` call per field. The engine looks up about a dozen names per request and every addon
  more. Here: one frame, the same encoding of the name (UTF-8, surrogateescape), the same case
  folding (`bytes.lower`), the same values in order, folded with ", ", the same errors.
- An option read (`ctx.options.x`, about 20 per request in the HTTP layer and built-in addons)
  deep-copies the value, twice when it is the default. A copy of None, a bool, a number or a
  string is that same object, so only other values are copied here.
- `Hook.args()` asks `dataclasses.fields` on every call, up to three times per hook: here each
  hook class's field names are read once. A hook class with its own `args` keeps it.
- The watchdog the server disarms around every hook is a generator context manager: here a
  plain one, with the same steps.

This reaches into mitmproxy's internals: class attributes of `http.Headers`, `_Option`, `Hook`
and `TimeoutWatchdog`, so it is process-wide. It was checked against the code of the versions
in addon/engine's CHECKED (fingerprinted there); on any other it installs nothing, logs why,
and mitmproxy runs at its stock speed. `--set keyrelay_fast_paths=false` puts mitmproxy's own
back. Loaded on its own (`mitmdump -s addon/fast_paths.py`, with keyrelay installed: it imports
addon/engine, which imports nothing else of keyrelay's) it speeds up any mitmdump.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, hooks, http, optmanager
from mitmproxy.proxy import server
from mitmproxy.utils import strutils

from addon import engine

logger = logging.getLogger(__name__)

OPTION = "keyrelay_fast_paths"

# -- header lookups by name ---------------------------------------------------------------------


def get_all(self: http.Headers, name: str | bytes) -> list[str]:
    """`Headers.get_all`: every value of that name, in order, not folded."""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    if not isinstance(raw, bytes):
        # None passes (to fail at .lower(), as it does in mitmproxy); anything else: TypeError.
        raw = strutils.always_bytes(raw)
    key, size = raw.lower(), len(raw)  # bytes.lower keeps the length: most names differ in it
    return [
        v.decode("utf-8", "surrogateescape")
        for k, v in self.fields
        if len(k) == size and k.lower() == key
    ]


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


# -- option reads --------------------------------------------------------------------------------

_ITS_OWN_COPY = frozenset({type(None), bool, int, float, str, bytes})  # copy.deepcopy(x) is x


def option_current(self: optmanager._Option) -> Any:
    """`_Option.current`: the value, or the default, as a deep copy."""
    value = self._default if self.value is optmanager.unset else self.value
    return value if type(value) in _ITS_OWN_COPY else copy.deepcopy(value)


# -- the hook path -------------------------------------------------------------------------------

_ARG_NAMES: dict[type[hooks.Hook], tuple[str, ...]] = {}


def hook_args(self: hooks.Hook) -> list[Any]:
    """`Hook.args`: the values of the hook's dataclass fields, in order."""
    names = _ARG_NAMES.get(type(self))
    if names is None:
        names = _ARG_NAMES[type(self)] = tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]
    return [getattr(self, name) for name in names]


class _Disarmed:
    """`TimeoutWatchdog.disarm()`: the same steps, without a generator per hook."""

    __slots__ = ("watchdog",)

    def __init__(self, watchdog: server.TimeoutWatchdog) -> None:
        self.watchdog = watchdog

    def __enter__(self) -> None:
        watchdog = self.watchdog
        watchdog.can_timeout.clear()
        watchdog.blocker += 1

    def __exit__(self, *_exc: object) -> None:
        watchdog = self.watchdog
        watchdog.blocker -= 1
        if watchdog.blocker == 0:
            watchdog.register_activity()
            watchdog.can_timeout.set()


def disarm(watchdog: server.TimeoutWatchdog) -> _Disarmed:
    return _Disarmed(watchdog)


# -- installing ----------------------------------------------------------------------------------

FAST: dict[tuple[type, str], Callable[..., Any]] = {
    (http.Headers, "get_all"): get_all,
    (http.Headers, "get"): get,
    (http.Headers, "__getitem__"): getitem,
    (http.Headers, "__contains__"): contains,
    (optmanager._Option, "current"): option_current,
    (hooks.Hook, "args"): hook_args,
    (server.TimeoutWatchdog, "disarm"): disarm,
}


class _Paths:
    """What each class itself held before: a function, or None where it inherited one."""

    def __init__(self) -> None:
        self.stock: dict[tuple[type, str], Any] | None = None

    def install(self) -> None:
        if self.stock is None:
            # A reload of this module runs here again, over its own functions: each of them
            # names the stock one it replaced.
            held = {(owner, name): owner.__dict__.get(name) for owner, name in FAST}
            self.stock = {key: getattr(v, "keyrelay_stock", v) for key, v in held.items()}
        for (owner, name), function in FAST.items():
            function.keyrelay_stock = self.stock[owner, name]  # type: ignore[attr-defined]
            setattr(owner, name, function)

    def uninstall(self) -> None:
        for (owner, name), value in (self.stock or {}).items():
            if value is not None:
                setattr(owner, name, value)
            elif name in owner.__dict__:
                delattr(owner, name)  # inherited again

    def installed(self) -> bool:
        return all(owner.__dict__.get(name) is f for (owner, name), f in FAST.items())


PATHS = _Paths()


class FastPaths:
    """The option, and the fast paths installed or removed to follow it."""

    def load(self, loader: Any) -> None:
        loader.add_option(
            OPTION,
            bool,
            True,
            "Header lookups, option reads and hook arguments in one step each (same results). "
            "false: mitmproxy's own.",
        )

    def configure(self, updated: set[str]) -> None:
        if OPTION not in updated:
            return
        if not ctx.options.keyrelay_fast_paths:
            if PATHS.installed():
                PATHS.uninstall()
                logger.info("keyrelay: fast paths off")
            return
        if PATHS.installed():
            return
        if not engine.checked("fast_paths"):
            return
        PATHS.install()
        logger.info("keyrelay: fast paths on")


addons = [FastPaths()]  # `mitmdump -s addon/fast_paths.py`: these alone
