"""The loopback upstream every network benchmark calls: a tiny threaded HTTP server.

It runs in its own process (``python -m benchmarks.upstream PORT``) so that neither the
load generator nor the benchmark runner competes with it for a GIL, counts every request
that reaches it, and is steered over the same socket:

- ``GET /_control/state``: ``{"mode", "hits", "failed", "held"}`` (``failed``: requests
  answered 503; control requests are not counted);
- ``POST /_control/mode?mode=M``: switch to ``ok`` (200 at once), ``fail`` (503 at once: a
  dead dependency that still answers, so its requests can be counted) or ``hold`` (accept
  the request, then answer nothing until the mode changes or ``HOLD_LIMIT`` passes: a
  hung dependency, whose callers' timeouts fire);
- ``POST /_control/reset``: hits back to 0.

Only 127.0.0.1 is ever bound.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MODES = ("ok", "fail", "hold")
HOLD_LIMIT = 30.0  # seconds a held request waits at most (bounds the server's threads)


class Handler(BaseHTTPRequestHandler):
    server: Upstream
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK stall every keep-alive response by ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = urlsplit(self.path)
        if path.path.startswith("/_control/"):
            self._control(path.path, parse_qs(path.query))
            return
        mode = self.server.arrived()
        if mode == "hold":
            mode = self.server.hold()
        if mode == "ok":
            self._send(200, b'{"status": "ok"}')
        else:
            self.server.answered_503()
            self._send(503, b'{"error": "upstream down"}')

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path)
        if path.path.startswith("/_control/"):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            self._control(path.path, parse_qs(path.query))
            return
        self.do_GET()

    def _control(self, path: str, query: dict[str, list[str]]) -> None:
        server = self.server
        if path == "/_control/mode":
            mode = (query.get("mode") or [""])[0]
            if mode not in MODES:
                self._send(400, json.dumps({"error": f"mode must be one of {MODES}"}).encode())
                return
            server.set_mode(mode)
        elif path == "/_control/reset":
            server.reset()
        elif path != "/_control/state":
            self._send(404, b"{}")
            return
        self._send(200, json.dumps(server.state()).encode())


class Upstream(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.mode = "ok"
        self.hits = 0
        self.failed = 0
        self.held = 0
        self.first_hit_at: float | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that timed out and left while its request was held: expected here.
        import sys as _sys

        if not isinstance(_sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def arrived(self) -> str:
        with self._lock:
            self.hits += 1
            return self.mode

    def answered_503(self) -> None:
        with self._lock:
            self.failed += 1

    def hold(self) -> str:
        deadline = time.monotonic() + HOLD_LIMIT
        with self._changed:
            self.held += 1
            try:
                while self.mode == "hold" and time.monotonic() < deadline:
                    self._changed.wait(deadline - time.monotonic())
                return self.mode if self.mode != "hold" else "fail"
            finally:
                self.held -= 1

    def set_mode(self, mode: str) -> None:
        with self._changed:
            self.mode = mode
            self._changed.notify_all()

    def reset(self) -> None:
        with self._lock:
            self.hits = 0
            self.failed = 0

    def state(self) -> dict[str, object]:
        with self._lock:
            return {"mode": self.mode, "hits": self.hits, "failed": self.failed, "held": self.held}


def main() -> None:
    port = int(sys.argv[1])
    server = Upstream(port)
    print(json.dumps({"ready": True, "port": port}), flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.set_mode("fail")  # free held requests
        server.server_close()


if __name__ == "__main__":
    main()
