"""The one-step header lookups against mitmproxy's own: the same values and the same errors for
every name, through the option, and out of the way on a version they were not checked against."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.test import taddons

from addon import fast_headers

FIELDS = (
    (b"Content-Length", b"5"),
    (b"x-\xc3\xbc", b"caf\xc3\xa9"),
    (b"X-\xc3\x9c", b"upper"),  # bytes.lower folds ASCII only: not the same name as x-ü
    (b"\xff", b"\xfe"),  # not UTF-8 either way
    (b"content-length", b"7"),  # repeated: folded with ", "
    (b"", b"empty name"),
    (b"Set-Cookie", b"a=1"),
    (b"set-cookie", b"b=2"),
)
NAMES: tuple[Any, ...] = (
    "content-length",
    "Content-Length",
    b"CONTENT-LENGTH",
    "x-ü",
    "X-Ü",
    "x-\udcc3\udcbc",  # the same bytes, spelt with surrogates
    "\udcff",
    b"\xff",
    "",
    b"",
    "set-cookie",
    "missing",
    None,
    5,
    ("content-length",),
)


def outcomes(headers: http.Headers, name: Any) -> list[Any]:
    """Each lookup's value, or the type and arguments of what it raised."""
    lookups: list[Callable[[], Any]] = [
        lambda: headers.get_all(name),
        lambda: headers.get(name),
        lambda: headers.get(name, "default"),
        lambda: headers[name],
        lambda: name in headers,
    ]
    seen = []
    for lookup in lookups:
        try:
            seen.append(("value", lookup()))
        except Exception as error:  # which error it is, is what is compared
            seen.append((type(error), error.args))
    return seen


@contextmanager
def lookups(fast: bool) -> Iterator[None]:
    was = fast_headers.installed()
    fast_headers.INSTALLED.install()  # records mitmproxy's own the first time
    if not fast:
        fast_headers.INSTALLED.uninstall()
    assert (http.Headers.__dict__.get("get_all") is fast_headers.get_all) is fast
    try:
        yield
    finally:
        (fast_headers.INSTALLED.install if was else fast_headers.INSTALLED.uninstall)()


def compare(fields: tuple[tuple[bytes, bytes], ...], names: tuple[Any, ...]) -> list[Any]:
    headers = http.Headers(fields)
    with lookups(fast=False):
        stock = [outcomes(headers, name) for name in names]
    with lookups(fast=True):
        fast = [outcomes(headers, name) for name in names]
    assert fast == stock
    return stock


def test_every_lookup_answers_and_fails_as_mitmproxys_does() -> None:
    stock = dict(zip(map(repr, NAMES), compare(FIELDS, NAMES), strict=True))
    # And the cases are the ones claimed: folding, case, no match, each kind of error.
    assert stock["'Content-Length'"][1] == ("value", "5, 7")
    assert stock["'x-ü'"][0] == ("value", ["café"])
    assert stock["'X-Ü'"][0] == ("value", ["upper"])  # its own field, not x-ü's
    assert stock["b'\\xff'"][0] == ("value", ["\udcfe"])
    assert stock["'missing'"][2:4] == [("value", "default"), (KeyError, ("missing",))]
    assert stock["None"][0][0] is AttributeError
    assert stock["5"][0][0] is TypeError


def test_random_heads_and_names_agree() -> None:
    rng = random.Random(16)
    alphabet = [b"a", b"B", b"-", b"\xc3", b"\xbc", b"\xff", b" ", b"Z"]

    def word() -> bytes:
        return b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))

    for _ in range(200):
        fields = tuple((word(), word()) for _ in range(rng.randint(0, 6)))
        names = tuple(
            rng.choice([name, name.decode("utf-8", "surrogateescape"), name.upper()])
            for name in [word() for _ in range(4)] + [f[0] for f in fields[:2]]
        )
        compare(fields, names)


def test_the_option_installs_and_removes_them() -> None:
    addon = fast_headers.FastHeaders()
    with lookups(fast=False), taddons.context(addon) as tctx:
        tctx.configure(addon, keyrelay_fast_headers=True)
        assert fast_headers.installed() and http.Headers.get is fast_headers.get
        tctx.configure(addon, keyrelay_fast_headers=False)
        assert not fast_headers.installed()
        assert "get" not in http.Headers.__dict__  # Mapping's own again
        assert "__contains__" not in http.Headers.__dict__


def test_they_step_aside_on_a_version_they_were_not_checked_against(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(fast_headers, "VERSION", "99.0")
    addon = fast_headers.FastHeaders()
    with lookups(fast=False), taddons.context(addon) as tctx, caplog.at_level(logging.WARNING):
        tctx.configure(addon, keyrelay_fast_headers=True)
        assert not fast_headers.installed()
    assert "fast header lookups not installed: checked against mitmproxy 12.2.1" in caplog.text
