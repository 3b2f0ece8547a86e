"""A faster hook dispatch for mitmproxy: a table of the callables that implement each hook.

mitmproxy's `AddonManager.trigger_event` walks all ~40 built-in addons on every event, with a
generator, a `getattr` and a `safecall` context manager each, whether or not the addon has
that hook: about half of mitmdump's CPU. This module replaces it, on one AddonManager
instance, with a loop over a per-hook list of (chain item, callables), found by the same
traversal mitmproxy uses and built on first use of each hook name. The semantics stay
mitmproxy's: the same order; sync and async hooks; `AddonHalt` stops the event; an exception
in one chain item is logged as mitmproxy logs it ("Addon error: ...") and the next item runs;
attributes that are modules are skipped; a non-callable hook is an AddonManagerError.

`handle_lifecycle` is replaced too: the same events, with the `UpdateHook` after a flow's
event built only when an addon implements `update` (no built-in addon of mitmdump does).
(fast_paths.py cuts the rest of the hook path: `Hook.args` and the hook watchdog.)

The table is dropped whenever the chain can change: `add`, `remove`, `register` (which a
script (re)load calls, keyrelay's own included) and `clear`. It is rebuilt lazily at the next
event, so a script that swaps its module in after `register` returns is seen.

This reaches into mitmproxy's internals: it was checked against the AddonManager of the
versions in addon/engine's CHECKED (fingerprinted there); on any other it refuses to install,
logs why, and mitmproxy runs at its stock speed. `--set keyrelay_fast_dispatch=false` turns it
off. Loaded on its own (`mitmdump -s addon/dispatch.py`, with keyrelay installed: it imports
addon/engine, which imports nothing else of keyrelay's) it speeds up any mitmdump.
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import Callable
from typing import Any

from mitmproxy import addonmanager, ctx, exceptions, flow, hooks

from addon import engine

logger = logging.getLogger(__name__)
mitmproxy_logger = logging.getLogger(addonmanager.__name__)  # where "Addon error" goes

OPTION = "keyrelay_fast_dispatch"
_WRAPPED = ("add", "remove", "register", "clear")

Entry = tuple[Any, tuple[Callable[..., Any], ...]]  # a chain item and its hook callables


class Table:
    """The per-hook dispatch of one AddonManager, installed over its methods."""

    def __init__(self, manager: addonmanager.AddonManager) -> None:
        self.manager = manager
        self.hooks: dict[str, list[Entry]] = {}
        self._originals: dict[str, Any] = {}

    def install(self) -> None:
        manager = self.manager
        for name in _WRAPPED:
            self._originals[name] = getattr(manager, name)
            setattr(manager, name, self._invalidating(self._originals[name]))
        manager.trigger_event = self.trigger_event  # type: ignore[method-assign]
        manager.handle_lifecycle = self.handle_lifecycle  # type: ignore[method-assign]
        manager.keyrelay_dispatch = self  # type: ignore[attr-defined]

    def uninstall(self) -> None:
        for name in (*_WRAPPED, "trigger_event", "handle_lifecycle", "keyrelay_dispatch"):
            self.manager.__dict__.pop(name, None)  # the class's own methods show through
        self.hooks.clear()

    def _invalidating(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def changed(*args: Any, **kwargs: Any) -> Any:
            self.hooks.clear()
            try:
                return method(*args, **kwargs)
            finally:
                self.hooks.clear()  # what ran meanwhile may have cached a half-changed chain

        return changed

    def entries(self, name: str) -> list[Entry]:
        """Each chain item with the callables implementing `name`, in mitmproxy's order."""
        table = []
        for item in self.manager.chain:
            found = []
            for addon in addonmanager.traverse([item]):
                func = getattr(addon, name, None)
                if not func or isinstance(func, types.ModuleType):
                    continue  # a module imported under a hook's name is not a hook
                if not callable(func):
                    func = _not_callable(name, addon)
                found.append(func)
            if found:
                table.append((item, tuple(found)))
        return table

    def table(self, name: str) -> list[Entry]:
        table = self.hooks.get(name)
        if table is None:
            table = self.hooks[name] = self.entries(name)
        return table

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        """mitmproxy's: the event, then `update` for a flow; the second built only when
        some addon implements it."""
        message = event.args()[0]
        await self.trigger_event(event)
        if isinstance(message, flow.Flow) and self.table(hooks.UpdateHook.name):
            await self.trigger_event(hooks.UpdateHook([message]))

    async def trigger_event(self, event: hooks.Hook) -> None:
        table = self.table(event.name)
        if not table:
            return
        args = event.args()
        for _item, funcs in table:
            try:
                for func in funcs:
                    result = func(*args)
                    if result is not None and inspect.isawaitable(result):
                        await result
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception as error:
                _addon_error(error)


def _not_callable(name: str, addon: Any) -> Callable[..., Any]:
    def raises(*_args: Any) -> None:
        raise exceptions.AddonManagerError(f"Addon handler {name} ({addon}) not callable")

    return raises


def _addon_error(error: Exception) -> None:
    """What mitmproxy's safecall logs, with the traceback starting at the addon's frame."""
    traceback = error.__traceback__
    if traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next  # this module's own frame
    mitmproxy_logger.error(f"Addon error: {error}", exc_info=(type(error), error, traceback))


def installed(manager: addonmanager.AddonManager) -> Table | None:
    table = manager.__dict__.get("keyrelay_dispatch")
    return table if isinstance(table, Table) else None


class FastDispatch:
    """The option, and the table installed or removed to follow it."""

    def load(self, loader: Any) -> None:
        loader.add_option(
            OPTION,
            bool,
            True,
            "Dispatch mitmproxy's hooks through a table of the addons that implement each "
            "(same order and error handling, about twice as fast). false: mitmproxy's own.",
        )

    def configure(self, updated: set[str]) -> None:
        if OPTION not in updated:
            return
        manager = ctx.master.addons
        table = installed(manager)
        if not ctx.options.keyrelay_fast_dispatch:
            if table is not None:
                table.uninstall()
                logger.info("keyrelay: fast hook dispatch off")
            return
        if table is not None:
            return  # a script reload: the table already follows the chain
        if not engine.checked("dispatch"):
            return
        Table(manager).install()
        logger.info("keyrelay: fast hook dispatch on")


addons = [FastDispatch()]  # `mitmdump -s addon/dispatch.py`: the engine alone, tuned
