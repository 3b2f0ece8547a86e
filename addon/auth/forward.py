"""Forward authentication, in the spirit of nginx `auth_request`: ask the app's own endpoint.

keyrelay sends GET <url> with the client's Cookie and Authorization headers (plus the original
method and URI). 2xx: allowed, the identity is in `identity_header`; 401: not authenticated;
403: authenticated but not allowed; anything else, or no answer: the auth service is down
(fail closed). Answers are cached for `cache` seconds per credentials (and provider), so a
client cannot miss the cache with a fresh query string per request; with `per_uri: true`, for
apps that decide per method and URI, per method and URI too. Concurrent identical questions
share one call, and at most `concurrency` calls run at once, on threads of their own: a flood
of new credentials waits its turn (at most `timeout`, then 503), it does not hold up the
rest of keyrelay's threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from addon.auth.identity import Identity
from addon.config.auth import ForwardSpec
from addon.redis_client import Every

logger = logging.getLogger(__name__)

MAX_CACHED = 10_000
LOG_EVERY = 10.0  # seconds between two "calls are queued" logs


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int  # 200 allowed, 401, 403, or 503 (the auth service failed)
    identity: str | None = None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a login redirect means "not authenticated", never follow it


_opener = urllib.request.build_opener(_NoRedirect)


class ForwardAuth:
    def __init__(self, spec: ForwardSpec) -> None:
        self.spec = spec
        self._cache: OrderedDict[bytes, tuple[float, Verdict]] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[Verdict]] = {}
        self._slots = asyncio.Semaphore(spec.concurrency)
        self._threads = ThreadPoolExecutor(spec.concurrency, "keyrelay-forward-auth")
        self._log = Every(LOG_EVERY)

    def stop(self) -> None:
        """No longer used by the rules: calls under way finish on their own."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def check(
        self, credentials: dict[str, str], method: str, uri: str, scope: str = ""
    ) -> Verdict:
        """`credentials`: the client's cookie / authorization headers that are present; `scope`:
        the provider asking (a yes for one provider is no yes for another)."""
        question: tuple[object, ...] = (sorted(credentials.items()), scope)
        if self.spec.per_uri:
            question += (method, uri)
        key = hashlib.sha256(repr(question).encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        if key in self._pending:
            return await asyncio.shield(self._pending[key])
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            verdict = await self._call(credentials, method, uri)
            if verdict.status != 503 and self.spec.cache > 0:
                self._remember(key, now + self.spec.cache, verdict)
            future.set_result(verdict)
            return verdict
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: waiters re-raise it, nobody logs it twice
            raise
        finally:
            del self._pending[key]

    async def _call(self, credentials: dict[str, str], method: str, uri: str) -> Verdict:
        """One call to the app, once one of `concurrency` slots is free (503 if none frees up
        within `timeout`)."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self.spec.timeout)
        except TimeoutError:
            if self._log("queued"):
                logger.error(
                    "keyrelay: auth: %d forward auth calls busy for %gs: answering 503",
                    self.spec.concurrency,
                    self.spec.timeout,
                )
            return Verdict(503)
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._threads, self._ask, credentials, method, uri)
        finally:
            self._slots.release()

    def _remember(self, key: bytes, until: float, verdict: Verdict) -> None:
        self._cache[key] = (until, verdict)
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_CACHED:
            self._cache.popitem(last=False)

    def _ask(self, credentials: dict[str, str], method: str, uri: str) -> Verdict:
        headers = {**credentials, "x-original-method": method, "x-original-uri": uri}
        request = urllib.request.Request(self.spec.url, headers=headers, method="GET")
        try:
            with _opener.open(request, timeout=self.spec.timeout) as response:
                identity = response.headers.get(self.spec.identity_header)
                return Verdict(200, identity.strip() if identity else None)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code in (401, 403):
                return Verdict(e.code)
            if 300 <= e.code < 400:
                return Verdict(401)
            logger.error("keyrelay: auth: forward auth answered %d", e.code)
            return Verdict(503)
        except OSError as e:
            logger.error("keyrelay: auth: forward auth failed: %s", type(e).__name__)
            return Verdict(503)


def identity_from(verdict: Verdict, fallback: Identity) -> Identity:
    return Identity("forward", verdict.identity) if verdict.identity else fallback
