"""A dict of decisions remembered by key, bounded: each key at most so long, so many keys at
most, all forgotten at once when full (keys are as many as clients make, and a decision is
cheap to make again). A dict, so a lookup costs no more than one."""

from __future__ import annotations


class Memo[K, V](dict[K, V]):
    def __init__(self, size: int, longest: int) -> None:
        super().__init__()
        self.size = size  # keys at most
        self.longest = longest  # a key's length (the caller's measure) at most

    def remember(self, key: K, value: V, length: int) -> None:
        if length > self.longest:
            return  # memory stays small: a long key is decided again each time
        if len(self) >= self.size:
            self.clear()
        self[key] = value
