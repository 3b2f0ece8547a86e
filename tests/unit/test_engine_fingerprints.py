"""The mitmproxy code under keyrelay's patches is the code they were read against; a change to
it names the patch to read again (shown on a changed copy of mitmproxy's HTTP/1 layer)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from mitmproxy.proxy.layers.http import _http1

from addon.engine import PATCHES
from addon.engine.fingerprints import FINGERPRINTS, Drift, drifted, fingerprint, source_of


def test_the_code_under_every_patch_is_as_recorded() -> None:
    drifts = drifted()
    assert drifts == [], "mitmproxy changed under keyrelay's patches:\n" + "\n".join(
        map(str, drifts)
    )


def test_every_patch_is_fingerprinted_and_every_line_names_patches() -> None:
    named = {
        p for targets in FINGERPRINTS.values() for _, patches in targets.values() for p in patches
    }
    assert named == set(PATCHES)


def changed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: str, new: str
) -> Callable[[str], ModuleType]:
    """Import by name, except for mitmproxy's HTTP/1 layer: a copy with `old` made `new`,
    compiled into a throwaway module of the same package."""
    source = inspect.getsource(_http1)
    assert source.count(old) == 1
    path = tmp_path / "_http1_changed.py"
    path.write_text(source.replace(old, new))
    name = f"{_http1.__package__}._http1_changed"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, copy)
    spec.loader.exec_module(copy)
    return lambda module: copy if module == _http1.__name__ else importlib.import_module(module)


def test_a_changed_statement_names_the_patch_to_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = changed_copy(
        tmp_path,
        monkeypatch,
        'request.http_version = "HTTP/1.1"',  # in Http1Client.send, which h1_framing.py wraps
        'request.http_version = "HTTP/1.0"',
    )
    assert 'request.http_version = "HTTP/1.0"' in inspect.getsource(
        copy(_http1.__name__).Http1Client.send
    )
    [drift] = drifted(copy)
    assert drift == Drift(
        f"{_http1.__name__}:Http1Client.send",
        FINGERPRINTS[_http1.__name__]["Http1Client.send"][0],
        drift.found,
        ("h1_framing",),
    )
    assert str(drift).endswith(": read addon/transport/h1_framing.py again")


def test_a_function_gone_names_every_patch_relying_on_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = changed_copy(tmp_path, monkeypatch, "def make_error_response(", "def error_response(")
    [drift] = drifted(copy)
    assert (drift.target, drift.found) == (f"{_http1.__name__}:make_error_response", None)
    assert str(drift).startswith(f"{_http1.__name__}:make_error_response is gone")
    assert str(drift).endswith(": read addon/errorpage.py again")


def test_comments_and_layout_do_not_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = changed_copy(
        tmp_path,
        monkeypatch,
        'request.headers.insert(0, "Host", request.authority)',
        'request.headers.insert(  # a comment\n0, "Host",\n    request.authority)',
    )
    assert drifted(copy) == []


def test_a_fingerprint_is_of_the_code_a_definition_has() -> None:
    first = "    @staticmethod\n    def f(x):  # why\n        return x\n"
    module = "class A:\n" + first + "    def f(y):\n        return y\n"
    assert source_of(module, "A.f") == "    def f(y):\n        return y\n"  # the last, as Python's
    assert source_of("class A:\n" + first, "A.f") == first  # decorators included
    assert fingerprint(first) == fingerprint(first.replace("    ", "  "))  # indentation's width
    assert fingerprint(first) == fingerprint(first.replace("  # why", ""))
    assert fingerprint(first) != fingerprint(first.replace("return x", "return -x"))
    with pytest.raises(LookupError):
        source_of(module, "A.g")
