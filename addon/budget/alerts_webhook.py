"""Posting alerts to the operator's webhook, on a thread of its own: never on a request's path.

`post` only puts the alert on a bounded queue (full: dropped, with a log line) and returns.
One daemon thread sends them in order: a JSON POST signed with HMAC-SHA256 of its body
(`X-Keyrelay-Signature: sha256=<hex>`), each attempt bounded by the timeout, retried with a
doubling pause after a failure it may recover from (no connection, a timeout, 408, 429, 5xx).
A webhook that hangs holds up later alerts, never a request.

When keyrelay stops (or a reload drops this webhook), `stop` takes no more alerts; an attempt
under way ends as it would (within the spec's `timeout`), and then the thread gets one grace
period of `timeout` for what is still queued: one attempt each, no retries, no pauses. `join`
waits for it, twice `timeout` at most; what is left after it is dropped with one log line.

The URL may itself be a secret (many chat webhooks are), so no log line names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from addon.config.alerts import WebhookSpec

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Keyrelay-Signature"
ALERT_HEADER = "X-Keyrelay-Alert"  # the alert's id: the same on every retry of it
FIRST_PAUSE = 1.0  # seconds before the first retry; doubled before each next one
MOST_PAUSE = 30.0
_RETRIED = frozenset({408, 425, 429})


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not an invitation: the body is not sent elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Webhook:
    def __init__(self, spec: WebhookSpec, secret: str) -> None:
        self.spec = spec
        self._secret = secret
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(spec.queue)
        self._closing = threading.Event()
        self._deadline = 0.0  # monotonic; set by `stop`: the end of the flush
        self._attempt_ends = 0.0  # monotonic: when the attempt under way times out
        self._sending: str | None = None  # the alert the thread is posting
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # a post and a stop in turn: nothing queued after a stop
        # No proxy from the environment, no redirects: the alert goes where the rules say.
        self._open = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect).open

    def post(self, alert_id: str, payload: dict[str, Any]) -> bool:
        """Queue an alert; False when it is dropped (the queue is full, or the webhook is
        stopping), with a log line."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        with self._lock:
            if self._closing.is_set():
                logger.warning("keyrelay: alerts: the webhook is closing; dropped %s", alert_id)
                return False
            self._start()
            try:
                self._queue.put_nowait((alert_id, body))
            except queue.Full:
                logger.warning(
                    "keyrelay: alerts: the webhook queue is full (%d waiting); dropped %s",
                    self.spec.queue,
                    alert_id,
                )
                return False
        return True

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="keyrelay-alerts-webhook", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Take no more alerts: the thread posts what is queued, one attempt each, for the spec's
        `timeout` after the attempt under way (if any) ends. Never blocks; a second call changes
        nothing."""
        with self._lock:
            if self._closing.is_set():
                return
            # A hanging POST must not use up the grace of the alerts queued behind it.
            self._deadline = max(time.monotonic(), self._attempt_ends) + self.spec.timeout
            self._closing.set()  # also cuts a retry's pause short
            with contextlib.suppress(queue.Full):  # full: the thread is not waiting on it
                self._queue.put_nowait(None)

    def join(self) -> None:
        """After `stop`: wait for the flush, until its deadline at most, then log what it did
        not post. Blocks (call it off the event loop). A thread still in a hanging POST is a
        daemon: it ends with the process."""
        if self._thread is not None:
            self._thread.join(max(0.0, self._deadline - time.monotonic()))
        self._log_unposted()

    def _log_unposted(self) -> None:
        left = [self._sending] if self._sending is not None else []
        with contextlib.suppress(queue.Empty):
            while True:
                if (item := self._queue.get_nowait()) is not None:
                    left.append(item[0])
        if left:  # ids only: the URL may hold a secret
            logger.error(
                "keyrelay: alerts: %d alert(s) not posted in the time given at closing: %s",
                len(left),
                ", ".join(left),
            )

    def _run(self) -> None:
        while (item := self._next()) is not None:
            self._sending = item[0]
            self._deliver(*item)
            self._sending = None

    def _next(self) -> tuple[str, bytes] | None:
        """The next alert to post; None once stopped and the queue is empty or time is up."""
        if not self._closing.is_set():
            return self._queue.get()  # None: `stop` woke it
        if time.monotonic() >= self._deadline:
            return None
        with contextlib.suppress(queue.Empty):
            return self._queue.get_nowait()
        return None

    def _deliver(self, alert_id: str, body: bytes) -> None:
        pause = FIRST_PAUSE
        for attempt in range(self.spec.retries + 1):
            outcome, again = self._attempt(alert_id, body)
            if outcome is None:
                return
            if not again or attempt == self.spec.retries or self._closing.is_set():
                logger.error(
                    "keyrelay: alerts: the webhook did not take %s after %d attempt(s): %s",
                    alert_id,
                    attempt + 1,
                    outcome,
                )
                return
            logger.warning(
                "keyrelay: alerts: the webhook failed (%s); retrying %s in %gs",
                outcome,
                alert_id,
                pause,
            )
            self._closing.wait(pause)  # a stop cuts it short: one last attempt, in the flush
            pause = min(pause * 2, MOST_PAUSE)

    def _attempt(self, alert_id: str, body: bytes) -> tuple[str | None, bool]:
        """One POST: (None, _) when taken; else what went wrong and whether to try again."""
        self._attempt_ends = time.monotonic() + self.spec.timeout
        request = urllib.request.Request(
            self.spec.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "keyrelay-alerts",
                SIGNATURE_HEADER: signature(self._secret, body),
                ALERT_HEADER: alert_id,
            },
        )
        try:
            with self._open(request, timeout=self.spec.timeout) as answer:
                answer.read(65536)
                status = answer.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (OSError, http.client.HTTPException) as e:
            # The type only: a message may name the address (and so the URL's secret).
            reason = getattr(e, "reason", None)  # urllib's URLError wraps the socket's error
            return type(reason if isinstance(reason, BaseException) else e).__name__, True
        if 200 <= status < 300:
            return None, False
        return f"status {status}", status >= 500 or status in _RETRIED
