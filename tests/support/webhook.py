"""A webhook receiver on loopback for keyrelay's spend alerts: records what is posted, checks
each body's HMAC signature, and can fail or hang on demand."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from .lifecycle import StartStop


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    signed: bool  # the signature header is the HMAC-SHA256 of the body with the secret

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver(StartStop):
    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.deliveries: list[Delivery] = []  # taken (2xx) ones
        self.attempts: list[Delivery] = []  # every POST, failed ones too
        self.fail_next = 0  # answer this many POSTs 500
        self.hang_next = 0  # hold this many POSTs until `release` is set, then take them
        self.release = threading.Event()
        self.hanging = threading.Event()  # a POST is being held
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/keyrelay"

    def start(self) -> Self:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                expected = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
                given = headers.get("x-keyrelay-signature", "")
                delivery = Delivery(self.path, headers, body, hmac.compare_digest(given, expected))
                if receiver._hold():
                    receiver.hanging.set()
                    receiver.release.wait(60)
                status = receiver._take(delivery)
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _hold(self) -> bool:
        with self._cond:
            if self.hang_next:
                self.hang_next -= 1
                return True
            return False

    def _take(self, delivery: Delivery) -> int:
        with self._cond:
            self.attempts.append(delivery)
            if self.fail_next:
                self.fail_next -= 1
                return 500
            self.deliveries.append(delivery)
            self._cond.notify_all()
            return 200

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Delivery]:
        """The taken deliveries once there are `count` (fewer after `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.deliveries) < count and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return list(self.deliveries)
