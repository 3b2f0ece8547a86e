"""The app a browser page comes from: its files, and (when given keyrelay's port) `/api/*` passed
on to keyrelay, as an app's own server or reverse proxy puts keyrelay under the app's origin.
Then the page's requests to keyrelay are same-origin and carry the app's cookies, which a browser
never sends with the plugins' cross-origin fetches (their credentials mode is `same-origin`)."""

from __future__ import annotations

import functools
import http.client
import http.server
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

# Hop-by-hop headers (RFC 9110 section 7.6.1) and those http.client sets itself.
_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length"}


class _Server(http.server.ThreadingHTTPServer):
    relay_port: int | None = None  # keyrelay's, once it runs


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _relayed(self) -> bool:
        port = self.server.relay_port
        if port is None or not self.path.startswith("/api/"):
            return False
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            self.send_response(answer.status)
            for name, value in answer.getheaders():
                if name.lower() not in _HOP:
                    self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            conn.close()
        return True

    def do_GET(self) -> None:
        if not self._relayed():
            super().do_GET()

    def do_POST(self) -> None:
        if not self._relayed():
            self.send_error(405)


class AppServer:
    """Serves `directory` on 127.0.0.1 (reach it as http://localhost:PORT); after relay(port),
    keyrelay under `/api/` too."""

    def __init__(self, directory: Path) -> None:
        handler = functools.partial(_Handler, directory=str(directory))
        self.server = _Server(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def relay(self, port: int) -> None:
        self.server.relay_port = port

    def __enter__(self) -> AppServer:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
