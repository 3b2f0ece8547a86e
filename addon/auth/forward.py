"""Forward authentication, in the spirit of nginx `auth_request`: ask the app's own endpoint.

keyrelay sends GET <url> with the client's Cookie and Authorization headers (plus the original
method and URI). 2xx: allowed, the identity is in `identity_header`; 401: not authenticated;
403: authenticated but not allowed; anything else, or no answer: the auth service is down
(fail closed). Answers are cached for `cache` seconds per distinct question (credentials,
method and URI: everything the service is sent), and concurrent identical questions share one
call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import urllib.error
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass

from addon.auth.identity import Identity
from addon.config.auth import ForwardSpec

logger = logging.getLogger(__name__)

MAX_CACHED = 10_000


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

    async def check(self, credentials: dict[str, str], method: str, uri: str) -> Verdict:
        """`credentials`: the client's cookie / authorization headers that are present."""
        # The service may decide on anything it is sent, so the cache key is all of it.
        sent = (sorted(credentials.items()), method, uri)
        key = hashlib.sha256(repr(sent).encode()).digest()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        if key in self._pending:
            return await asyncio.shield(self._pending[key])
        future: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            verdict = await asyncio.to_thread(self._ask, credentials, method, uri)
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
