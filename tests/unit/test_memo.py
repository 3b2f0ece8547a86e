"""The bounded memo the router and ownership remember their decisions in."""

from __future__ import annotations

from addon.memo import Memo


def test_a_memo_keeps_short_keys_up_to_its_size_then_starts_afresh() -> None:
    memo: Memo[str, int | None] = Memo(size=2, longest=5)
    memo.remember("a", 1, 1)
    memo.remember("toolong", 2, 7)  # past `longest`: decided again each time
    assert memo == {"a": 1}
    memo.remember("b", None, 1)  # None is a value like any other
    assert memo.get("b", "absent") is None
    memo.remember("c", 3, 1)  # full: everything is forgotten, then c is kept
    assert memo == {"c": 3}
