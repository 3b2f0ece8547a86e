"""The Redis connection key pools and tenant tables share: `limits_backend.redis` from the rules
(the same server the shared rate limits use), with its key prefix and timeout."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

T = TypeVar("T")
LOG_EVERY = 30.0  # seconds between two logs of the same Redis failure


class RedisUnavailable(Exception):
    """Redis did not answer in time or failed; the message names the error type only."""


class RedisLink:
    def __init__(self, url: str, *, prefix: str, timeout: float) -> None:
        self.settings = (url, prefix, timeout)
        self.client: Any = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # a request waits for one attempt, never a series
            health_check_interval=0,
            decode_responses=True,
        )
        self.prefix, self.timeout = prefix, timeout
        self._logged = 0.0

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def call(self, awaitable: Awaitable[T], what: str) -> T:
        try:
            return await asyncio.wait_for(awaitable, self.timeout * 2)
        except (RedisError, OSError, TimeoutError) as e:
            now = time.monotonic()
            if now - self._logged > LOG_EVERY:
                self._logged = now
                logger.error("keyrelay: keys: Redis failed (%s): %s", what, type(e).__name__)
            raise RedisUnavailable(type(e).__name__) from e

    async def close(self) -> None:
        await self.client.aclose()
