"""The fast paths against mitmproxy's own: the same values and the same errors for every header
name, the same option values and copies, the same hook arguments, the same watchdog steps;
through the option, and out of the way on a version they were not checked against."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

import pytest
from mitmproxy import hooks, http, optmanager
from mitmproxy.proxy import server
from mitmproxy.test import taddons

from addon import engine, fast_paths

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
def paths(fast: bool) -> Iterator[None]:
    was = fast_paths.PATHS.installed()
    fast_paths.PATHS.install()  # records mitmproxy's own the first time
    if not fast:
        fast_paths.PATHS.uninstall()
    assert (http.Headers.__dict__.get("get_all") is fast_paths.get_all) is fast
    try:
        yield
    finally:
        (fast_paths.PATHS.install if was else fast_paths.PATHS.uninstall)()


def compare(fields: tuple[tuple[bytes, bytes], ...], names: tuple[Any, ...]) -> list[Any]:
    headers = http.Headers(fields)
    with paths(fast=False):
        stock = [outcomes(headers, name) for name in names]
    with paths(fast=True):
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


def current_paths() -> dict[tuple[type, str], Any]:
    return {(owner, name): owner.__dict__.get(name) for owner, name in fast_paths.FAST}


def test_the_option_installs_and_removes_them() -> None:
    addon = fast_paths.FastPaths()
    with paths(fast=False), taddons.context(addon) as tctx:
        tctx.configure(addon, keyrelay_fast_paths=True)
        assert current_paths() == fast_paths.FAST
        tctx.configure(addon, keyrelay_fast_paths=False)
        assert not any(f is fast_paths.FAST[key] for key, f in current_paths().items())
        assert "get" not in http.Headers.__dict__  # Mapping's own again
        assert "__contains__" not in http.Headers.__dict__
        assert optmanager._Option.current.__module__ == optmanager.__name__


def test_they_step_aside_on_a_version_they_were_not_checked_against(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engine, "VERSION", "99.0")
    addon = fast_paths.FastPaths()
    with paths(fast=False), taddons.context(addon) as tctx, caplog.at_level(logging.WARNING):
        tctx.configure(addon, keyrelay_fast_paths=True)
        assert not fast_paths.PATHS.installed()
    assert "fast paths not installed (it runs at mitmproxy's own speed): checked against" in (
        caplog.text
    )


def test_option_reads_give_the_same_values_and_fresh_copies() -> None:
    options = optmanager.OptManager()
    defaults: dict[str, Any] = {
        "flag": True,
        "count": 3,
        "ratio": 0.5,
        "text": "1m",
        "hosts": ["a"],
    }
    for name, default in defaults.items():
        options.add_option(name, type(default), default, "")
    options.add_option("none", Optional[str], None, "")  # noqa: UP045 - mitmproxy's typespec
    options.update(count=7, hosts=["b", "c"])

    def reads() -> list[tuple[Any, bool]]:
        seen = []
        for name in [*defaults, "none"]:
            value = getattr(options, name)
            held = options._options[name]
            stored = held._default if held.value is optmanager.unset else held.value
            seen.append((value, value is stored))
        return seen

    with paths(fast=False):
        stock = reads()
    with paths(fast=True):
        fast = reads()
        options.hosts.append("changed")  # a copy: the option itself is not changed
        assert options.hosts == ["b", "c"]
    assert fast == stock
    assert stock[1] == (7, True) and stock[3] == ("1m", True) and stock[4] == (["b", "c"], False)


def test_hook_args_are_mitmproxys_for_every_hook() -> None:
    with paths(fast=True):
        stock = (fast_paths.PATHS.stock or {})[hooks.Hook, "args"]
    for kind in hooks.all_hooks.values():
        values = [object() for _ in dataclasses.fields(kind)]
        event = kind(*values)
        assert fast_paths.hook_args(event) == stock(event) == values, kind


def test_the_watchdog_is_disarmed_and_rearmed_as_mitmproxy_does_it() -> None:
    def trace(disarm: Any) -> list[tuple[bool, int]]:
        async def scenario() -> list[tuple[bool, int]]:
            dog = server.TimeoutWatchdog(60, lambda: asyncio.sleep(0))
            dog.last_activity = 0.0
            seen = []
            with disarm(dog):
                seen.append((dog.can_timeout.is_set(), dog.blocker))
                with pytest.raises(RuntimeError), disarm(dog):
                    seen.append((dog.can_timeout.is_set(), dog.blocker))
                    raise RuntimeError
                seen.append((dog.can_timeout.is_set(), dog.blocker))
                assert dog.last_activity == 0.0  # still disarmed: no activity yet
            seen.append((dog.can_timeout.is_set(), dog.blocker))
            assert dog.last_activity > 0.0
            return seen

        return asyncio.run(scenario())

    with paths(fast=True):
        stock = (fast_paths.PATHS.stock or {})[server.TimeoutWatchdog, "disarm"]
    expected = [(False, 1), (False, 2), (False, 1), (True, 0)]
    assert trace(fast_paths.disarm) == trace(stock) == expected
