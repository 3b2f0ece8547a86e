"""Public keys for RS256/ES256 JWTs: a JWKS file read at load, or a URL fetched in the
background and refreshed on a timer. A request never waits for a fetch, except the very first
ones while the initial fetch is still under way (bounded by its timeout)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.request
from pathlib import Path

import jwt

logger = logging.getLogger(__name__)

FETCH_TIMEOUT = 5.0
RETRY_AFTER_FAILURE = 10.0
UNKNOWN_KID_COOLDOWN = 30.0  # a token with an unknown kid may bring the next refresh forward


class JwksError(ValueError):
    pass


def parse_jwks(data: bytes, algorithms: tuple[str, ...]) -> dict[str | None, jwt.PyJWK]:
    """kid -> key, for keys usable with one of `algorithms` (others are ignored)."""
    try:
        raw = json.loads(data)
        keys = raw["keys"]
    except (ValueError, KeyError, TypeError) as e:
        raise JwksError("is not a JWKS document ({'keys': [...]})") from e
    out: dict[str | None, jwt.PyJWK] = {}
    for entry in keys:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK.from_dict(entry)
        except jwt.PyJWTError:
            continue  # a key type this verifier does not use
        if key.algorithm_name in algorithms:
            out[entry.get("kid")] = key
    if not out:
        raise JwksError(f"has no signing key for {', '.join(algorithms)}")
    return out


class JwksKeys:
    """The current key set of one source. `get(kid)` is a dictionary lookup."""

    def __init__(self, algorithms: tuple[str, ...], *, file: Path | None, url: str | None):
        self.algorithms, self.file, self.url = algorithms, file, url
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._loaded = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_fetch = 0.0
        self.refresh = 300.0
        if file is not None:
            try:
                self._keys = parse_jwks(file.read_bytes(), algorithms)
            except OSError as e:
                raise JwksError(f"{file} cannot be read: {e.strerror}") from e
            self._loaded.set()

    def start(self) -> None:
        """Begin background fetching (URL sources); idempotent; needs a running event loop."""
        if self.url is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def get(self, kid: str | None) -> jwt.PyJWK | None:
        if not self._loaded.is_set():
            self.start()
            try:
                await asyncio.wait_for(self._loaded.wait(), FETCH_TIMEOUT)
            except TimeoutError:
                return None
        key = self._keys.get(kid)
        if key is None and kid is not None and len(self._keys) == 1 and None in self._keys:
            key = self._keys[None]  # a set whose only key has no kid
        if key is None and time.monotonic() - self._last_fetch > UNKNOWN_KID_COOLDOWN:
            self._wake.set()  # keys may have rotated: fetch soon, in the background
        return key

    async def _run(self) -> None:
        assert self.url is not None
        while True:
            delay = self.refresh
            try:
                data = await asyncio.to_thread(_fetch, self.url)
                self._keys = parse_jwks(data, self.algorithms)
                self._loaded.set()
                logger.info("keyrelay: auth: %d JWT keys from %s", len(self._keys), self.url)
            except (OSError, JwksError) as e:
                delay = RETRY_AFTER_FAILURE
                logger.error("keyrelay: auth: JWKS from %s failed: %s", self.url, e)
            self._last_fetch = time.monotonic()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)


def _fetch(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
        return bytes(response.read(1 << 20))
