"""The Redis connection key pools and tenant tables share: `limits_backend.redis` from the rules
(the same server the shared rate limits use), with its key prefix, timeout and pool size."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from addon.redis_client import Every, RedisConnection, RedisFailed

logger = logging.getLogger(__name__)

T = TypeVar("T")
LOG_EVERY = 30.0  # seconds between two logs of the same kind of Redis failure


class RedisLink(RedisConnection):
    def __init__(self, url: str, *, prefix: str, timeout: float, connections: int) -> None:
        super().__init__(url, timeout=timeout, size=connections, decode_responses=True)
        self.settings = (url, prefix, timeout, connections)
        self.prefix = prefix
        self._log = Every(LOG_EVERY)

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def ask(self, what: str, command: Callable[[], Awaitable[T]]) -> T:
        """`call`, with failures logged now and then (never a key or an address)."""
        try:
            return await self.call(command)
        except RedisFailed as e:
            if self._log(e.kind):
                logger.error("keyrelay: keys: Redis failed (%s): %s", what, e)
            raise
