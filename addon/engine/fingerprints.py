"""Fingerprints of the mitmproxy code keyrelay's patches replace or reach into.

One line per function or class: its fingerprint, the same on every version in CHECKED, and the
patches that rely on it (an attribute they read is fingerprinted by the code that sets it; two
lines are hyper-h2's and h11's, pinned beside mitmproxy in constraints.txt). When an upgrade
changes one, tests/unit/test_engine_fingerprints.py fails and names the patch modules to read
again; once they are read (and mended), the line takes the new fingerprint, and CHECKED the
new version instead of those it no longer matches.

A fingerprint is the sha256 (first 16 hex digits) of the source `inspect.getsource` would give
for mitmproxy's own function, comments and line breaks inside brackets aside. It is read from
the module's source, not from the live object: a patch may already have replaced that.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import io
import tokenize
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType

from addon.engine import PATCHES

# module -> qualname -> (fingerprint, the patches that rely on it)
FINGERPRINTS: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "mitmproxy.proxy.layers.http._http1": {
        "Http1Connection.__init__": ("b488d89ff491d61e", ("head_limit",)),
        "Http1Connection._handle_event": ("e2f97505007a60c6", ("head_limit",)),
        "Http1Connection.mark_done": ("dfd00c8ea8040812", ("timeouts",)),
        "Http1Server.read_headers": ("0a89cffcbe53ddcb", ("head_limit", "errorpage")),
        "Http1Server.send": ("96227370168af6ee", ("errorpage",)),
        "Http1Client.send": ("fe2358342a10a73d", ("h1_framing",)),
        "make_error_response": ("c51db6c36908f303", ("errorpage",)),
    },
    "mitmproxy.proxy.layers.http._base": {
        "format_error": ("7857d43644f72170", ("errorpage",)),
    },
    "mitmproxy.proxy.layers.http._http2": {
        "Http2Connection.__init__": ("232e114865842c00", ("h2_bounds",)),
        "Http2Connection._handle_event": ("9d4f5bc8b9e9f39a", ("h2_bounds", "errorpage")),
        "Http2Connection.protocol_error": ("96051f0b6a4af562", ("h2_bounds",)),
        "Http2Server._handle_event": ("506991f3f9dd3fd9", ("h2_bounds",)),
    },
    "mitmproxy.proxy.layers.http._http_h2": {
        "BufferedH2Connection.send_data": ("466255a687855c6e", ("h2_bounds",)),
        "BufferedH2Connection.reset_stream": ("fb62192b2a5ed9dc", ("h2_bounds",)),
    },
    "mitmproxy.proxy.layers.http._http3": {
        "Http3Connection._handle_event": ("0d97738c4f21816f", ("errorpage",)),
    },
    "mitmproxy.proxy.layers.http": {
        "HttpLayer.__init__": ("8cc1284ccfb06668", ("timeouts",)),
        "HttpLayer._handle_event": ("0ece69f869e6bd35", ("timeouts",)),
        "HttpLayer.make_stream": ("06a668dfa3bb1dcf", ("websocket_close",)),
        "HttpStream.flow_done": ("6fc07fb34199230d", ("websocket_close",)),
    },
    "mitmproxy.proxy.layers.websocket": {
        "WebsocketLayer.start": ("47a5fc01e500a74f", ("websocket_close",)),
        "WebsocketLayer.relay_messages": ("78edf1f769f5f767", ("websocket_close",)),
    },
    "h2.connection": {
        "H2Connection.send_headers": ("dacda6a33a4ecc49", ("errorpage",)),
    },
    "h11._receivebuffer": {
        "ReceiveBuffer": ("61affaf460290e22", ("head_limit",)),
    },
    "mitmproxy.addons.proxyserver": {
        "Proxyserver.register_connection": ("4a527f8b52d3b521", ("connections", "timeouts")),
    },
    "mitmproxy.proxy.mode_servers": {
        "ServerInstance.handle_stream": ("03cd65b53b489ee9", ("connections", "timeouts")),
    },
    "mitmproxy.proxy.server": {
        "ConnectionIO": ("5827eaddd780d215", ("connections", "timeouts")),
        "ConnectionHandler.__init__": ("99d25d6d401b24c5", ("connections", "timeouts")),
        "ConnectionHandler.handle_client": ("59b680bae6b40f35", ("connections",)),
        "ConnectionHandler.on_timeout": ("43c98fccd36e081c", ("connections",)),
        "ConnectionHandler.open_connection": ("8b1df9a94bc268c9", ("timeouts",)),
        "ConnectionHandler.server_event": ("ff1e6d3d88d7abf4", ("timeouts",)),
        "ConnectionHandler.hook_task": ("2d2c1ee92b80b939", ("errorpage",)),
        "TimeoutWatchdog.register_activity": ("8aa4c3887f380c4f", ("timeouts", "fast_paths")),
        "TimeoutWatchdog.disarm": ("65724ffc24981c99", ("fast_paths",)),
    },
    "mitmproxy.coretypes.multidict": {
        "_MultiDict.get_all": ("124ef2c037d1eff6", ("fast_paths",)),
        "_MultiDict.__getitem__": ("d2697b4b3bfc7bbe", ("fast_paths",)),
    },
    "mitmproxy.http": {
        "Headers.get_all": ("3800a7e7f28818aa", ("fast_paths",)),
        "Headers._kconv": ("ea3c8eb41e4ba7ed", ("fast_paths",)),
    },
    "mitmproxy.optmanager": {
        "_Option.default": ("da2a55717f17da82", ("fast_paths",)),
        "_Option.current": ("9f306a1d2bedbfaf", ("fast_paths",)),
    },
    "mitmproxy.hooks": {
        "Hook.args": ("49be2a7cd9f142a4", ("fast_paths",)),
    },
    "mitmproxy.addonmanager": {
        "traverse": ("3bf66d8da38eceb9", ("dispatch",)),
        "safecall": ("e22881de6eed84ed", ("dispatch",)),
        "AddonManager.clear": ("e59511431877adf3", ("dispatch",)),
        "AddonManager.register": ("51267bdded0050f6", ("dispatch",)),
        "AddonManager.add": ("7da344cf23976373", ("dispatch",)),
        "AddonManager.remove": ("feb63b933fd5a7b7", ("dispatch",)),
        "AddonManager.handle_lifecycle": ("4a83db735ad5bb04", ("dispatch",)),
        "AddonManager._iter_hooks": ("0b1828f03a20057c", ("dispatch",)),
        "AddonManager.invoke_addon": ("b73289e168e0a08a", ("dispatch",)),
        "AddonManager.trigger_event": ("fcc2e1cee2a4cf82", ("dispatch",)),
    },
}

_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_LAYOUT = {tokenize.COMMENT, tokenize.NL}
_BY_TYPE = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def source_of(module_source: str, qualname: str) -> str:
    """The source of `qualname` (a function, a class, Class.method) in a module's source: its
    last definition, decorators included, as `inspect.getsource` gives it."""
    body, node = ast.parse(module_source).body, None
    for name in qualname.split("."):
        found = [n for n in body if isinstance(n, _DEFINITIONS) and n.name == name]
        if not found:
            raise LookupError(qualname)
        node = found[-1]
        body = node.body
    assert node is not None
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    lines = module_source.splitlines(keepends=True)[first - 1 : node.end_lineno]
    return "".join(lines)


def fingerprint(source: str) -> str:
    """sha256 of the source's tokens, without comments, line breaks inside brackets and the
    width of indentation."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    words = [
        tokenize.tok_name[t.type] if t.type in _BY_TYPE else t.string
        for t in tokens
        if t.type not in _LAYOUT
    ]
    return hashlib.sha256("\0".join(words).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Drift:
    target: str  # module:qualname
    recorded: str
    found: str | None  # None: mitmproxy no longer has it
    patches: tuple[str, ...]

    def __str__(self) -> str:
        now = "is gone" if self.found is None else f"is now {self.found}"
        modules = ", ".join(PATCHES[p].module for p in self.patches)
        return f"{self.target} {now} (recorded {self.recorded}): read {modules} again"


def _found(module: Callable[[str], ModuleType], name: str) -> Iterator[str | None]:
    """The fingerprint of each of the module's recorded targets as installed (None: gone)."""
    try:
        text: str | None = inspect.getsource(module(name))
    except (ImportError, OSError):
        text = None
    for qualname in FINGERPRINTS[name]:
        try:
            yield None if text is None else fingerprint(source_of(text, qualname))
        except LookupError:
            yield None


def drifted(module: Callable[[str], ModuleType] = importlib.import_module) -> list[Drift]:
    """What differs from the table, each naming the patches that rely on it. `module` imports
    a module by name (a test hands in a changed copy)."""
    return [
        Drift(f"{name}:{qualname}", recorded, found, patches)
        for name, targets in FINGERPRINTS.items()
        for ((qualname, (recorded, patches)), found) in zip(
            targets.items(), _found(module, name), strict=True
        )
        if found != recorded
    ]
