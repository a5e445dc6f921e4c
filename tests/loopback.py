"""A real HTTP server on the loopback interface, in a thread, for network-level tests.

``responses`` mocks the transport adapter; timeouts, refused connections, truncated
bodies and concurrent half-open trials need real sockets. The server counts every
request that reaches it, and its behaviour is switched by ``server.mode``:

- ``"ok"``: 200 with a JSON body;
- ``"fail"``: 500;
- ``"throttle"``: 429 with ``Retry-After: 1``;
- ``"hang"``: waits until ``server.release`` is set (or 30 s), then 200, so a client
  timeout can fire without the test sleeping;
- ``"truncate"``: announces 100 bytes of body, sends 7 and closes the connection;
- ``"stream"``: sends a 503 status line and headers at once, then holds the body until
  ``server.release`` is set (a client that judges the status line need not wait).

Ports come from the range reserved for this suite's HTTP tests (``CB_TEST_PORTS``,
default 18400-18499), so parallel runs of other suites never collide with it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeVar

S = TypeVar("S", bound=ThreadingHTTPServer)


def port_range() -> range:
    low, _, high = os.environ.get("CB_TEST_PORTS", "18400-18499").partition("-")
    return range(int(low), int(high) + 1)


def _bind_in_range(factory):  # type: ignore[no-untyped-def]
    last: OSError | None = None
    for port in port_range():
        try:
            return factory(port)
        except OSError as exc:  # in use: try the next one
            last = exc
    raise RuntimeError(f"no free port in {port_range()}: {last}")


def closed_port() -> int:
    """A loopback port in our range that nothing listens on (connections are refused)."""

    def probe(port: int) -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free now; we never listen on it
        return port

    return _bind_in_range(probe)


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.server.arrived()
        mode = self.server.mode
        if mode == "hang":
            self.server.release.wait(30)
            mode = "ok"
        if mode == "stream":
            self.send_response(503)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.flush()
            self.server.release.wait(30)
            self.wfile.write(b"{}")
            return
        if mode == "truncate":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"a": 1')
            self.wfile.flush()
            self.close_connection = True
            return
        status, body = {
            "ok": (200, b'{"status": "ok"}'),
            "throttle": (429, b'{"error": "slow down"}'),
        }.get(mode, (500, b'{"error": 1}'))
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.mode = "ok"
        self.hits = 0
        self.release = threading.Event()
        self._hits_changed = threading.Condition()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that timed out and hung up is what some tests are about

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def arrived(self) -> None:
        with self._hits_changed:
            self.hits += 1
            self._hits_changed.notify_all()

    def wait_for_hits(self, count: int, timeout: float = 10.0) -> bool:
        """Block until ``count`` requests have arrived (True), or ``timeout`` passes."""
        with self._hits_changed:
            return self._hits_changed.wait_for(lambda: self.hits >= count, timeout)


@contextlib.contextmanager
def serving(factory: Callable[[int], S]) -> Iterator[S]:
    """Serve ``factory(port)`` (an HTTP server class) on the first free port of our range,
    in a thread, until the block ends."""
    server = _bind_in_range(factory)
    thread = threading.Thread(target=server.serve_forever, name="loopback-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextlib.contextmanager
def loopback_server() -> Iterator[LoopbackServer]:
    """The counting :class:`LoopbackServer`; requests still hanging are released at the end."""
    with serving(LoopbackServer) as server:
        try:
            yield server
        finally:
            server.release.set()


class TcpProxy:
    """Forwards a spare port on ``host`` to ``target`` (e.g. PostgreSQL), a thread per
    direction and connection; ``cut()`` refuses and drops everything; ``stall()`` keeps
    accepting connections but forwards nothing either way (a server that accepts
    connections but never answers), until ``resume()``."""

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.target = target
        self.host = host
        self.port = 0  # chosen by the system on the first start, kept by a restart
        self.listener: socket.socket | None = None
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.stalled = threading.Event()

    def stall(self) -> None:
        self.stalled.set()

    def resume(self) -> None:
        """Answer again; connections opened or used while stalled are dropped (their
        protocol state is lost), as after a real hang."""
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()
        self.stalled.clear()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.stalled.is_set():
                with self.lock:
                    self.sockets.add(client)  # accepted, never answered
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.stalled.is_set():
                    continue  # swallowed: the other side waits for ever
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self.listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not.
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()
