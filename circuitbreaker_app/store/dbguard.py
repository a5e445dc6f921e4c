"""Bounded database waits: a database that hangs costs a guarded call at most one wait.

DESIGN §4: a database that accepts connections but never answers must cost a guarded call
at most one bounded wait (``CIRCUITBREAKER["DB_TIMEOUT"]``, default 0.5 s) per outage per
process; after that, transitions apply in memory and a background thread writes them.

:class:`DatabaseGuard` runs each of the store's own queries under a deadline:

* before the breaker's connection is opened (PostgreSQL over TCP), a pre-flight asks the
  server to start a session (an ``SSLRequest``, answered at once by a live server) and
  waits at most ``DB_TIMEOUT`` for the answer — libpq and psycopg never wait less than
  2 s for a connection, whatever ``connect_timeout`` says;
* while a query runs, a timer asks the server, halfway through ``DB_TIMEOUT``, whether it
  still answers (the same pre-flight on a new connection); when it does not, the query's
  socket is shut down at ``DB_TIMEOUT``, so the driver returns with an error instead of
  waiting for ever. A server that answers is slow, not hung (a lock wait, a loaded
  machine): its query may run up to ten times ``DB_TIMEOUT`` (at least 5 s);
* the first error or expired deadline marks the database down for this process: from then
  on the store's queries fail at once (:class:`DatabaseUnavailable`, a Django
  ``OperationalError``, which the store already handles by deciding in memory and keeping
  transitions to write later), and a daemon thread retries with exponential backoff
  (:data:`FIRST_RETRY` to :data:`MAX_RETRY` seconds). When a retry gets an answer, the
  database is up again and the thread writes every transition made meanwhile.

Engines without a socket of their own (SQLite) run queries without a deadline. The
database cache (``DatabaseCache``) is not guarded: with it, the cache shares the
database's fate — use Redis in production.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from django.db import InterfaceError, OperationalError, connections

logger = logging.getLogger("circuitbreaker_app")

T = TypeVar("T")

#: Seconds before the first retry after the database was found down, doubled each time.
FIRST_RETRY = 0.5
#: The longest pause between two retries.
MAX_RETRY = 5.0
#: PostgreSQL's SSLRequest: length 8, code 80877103. A live server answers "S" or "N".
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


class DatabaseUnavailable(OperationalError):
    """The database was found down (or too slow) and has not answered a retry since."""


def _postgres_address(settings: dict[str, Any]) -> tuple[str, int] | None:
    """(host, port) of a PostgreSQL alias reached over TCP, else None."""
    if not str(settings.get("ENGINE", "")).endswith(("postgresql", "postgis")):
        return None
    host = settings.get("HOST") or ""
    if not host or host.startswith("/"):
        return None  # a Unix socket: a local server, no network in between
    return host, int(settings.get("PORT") or 5432)


def preflight(address: tuple[str, int], timeout: float) -> None:
    """Raise :class:`DatabaseUnavailable` unless the server answers an SSLRequest in time."""
    try:
        with socket.create_connection(address, timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(SSL_REQUEST)
            if not sock.recv(1):
                raise OSError("the server closed the connection")
    except OSError as exc:
        raise DatabaseUnavailable(
            f"the database at {address[0]}:{address[1]} did not answer within {timeout:g} s "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def _socket_of(raw: Any) -> int | None:
    """The file descriptor of a driver connection (psycopg 2 and 3), else None."""
    fileno = getattr(raw, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
    except Exception:
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


#: The longest a query may run while its server still answers (a lock wait, a loaded
#: machine), as a multiple of ``DB_TIMEOUT``, and at least :data:`SLOW_LIMIT_MIN` seconds.
SLOW_LIMIT_FACTOR = 10
SLOW_LIMIT_MIN = 5.0


class _Deadline:
    """Shut a connection's socket down when its server stops answering.

    Halfway through ``timeout`` the server is asked, on a new TCP connection, to start a
    session (:func:`preflight`, waiting the other half): a hung server or path does not
    answer, and the query's connection is cut at ``timeout``. A server that answers is
    alive but slow (a lock wait, a loaded machine): the query may go on, up to
    :data:`SLOW_LIMIT_FACTOR` × ``timeout``. Without an address to ask (not PostgreSQL
    over TCP) the connection is cut at ``timeout``.
    """

    def __init__(self, fd: int, timeout: float, address: tuple[str, int] | None) -> None:
        self.fd = fd
        self.timeout = timeout
        self.address = address
        self.fired = False
        self._done = False
        self._lock = threading.Lock()
        first = timeout / 2 if address is not None else timeout
        self._timer = self._start(first, self._check if address is not None else self._cut)

    def _start(self, delay: float, action: Callable[[], None]) -> threading.Timer:
        timer = threading.Timer(delay, action)
        timer.daemon = True
        timer.start()
        return timer

    def _check(self) -> None:
        if self._done:
            return
        assert self.address is not None
        try:
            preflight(self.address, self.timeout / 2)
        except DatabaseUnavailable:
            self._cut()
            return
        with self._lock:
            if not self._done:
                limit = max(self.timeout * SLOW_LIMIT_FACTOR, SLOW_LIMIT_MIN)
                self._timer = self._start(limit - self.timeout, self._cut)

    def _cut(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=os.dup(self.fd))
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the driver; the query fails
                finally:
                    sock.close()

    def finish(self) -> None:
        with self._lock:
            self._done = True
            self._timer.cancel()


class DatabaseGuard:
    """Runs the store's queries on ``alias`` with a deadline; knows when the database is down."""

    def __init__(
        self,
        alias: str,
        timeout: float,
        on_recovery: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.alias = alias
        self.timeout = timeout
        self.on_recovery = on_recovery
        self.clock = clock
        #: True from the first failed or timed-out query until a retry gets an answer.
        self.down = False
        self._lock = threading.Lock()
        self._retrier: threading.Thread | None = None
        self._pid = os.getpid()

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` under the deadline; fails at once while the database is down."""
        if self.down:
            raise DatabaseUnavailable(
                f"database {self.alias!r} is down (retrying in the background)"
            )
        try:
            with self.deadline():
                return fn(*args)
        except (OperationalError, InterfaceError):  # unreachable, timed out, broken
            self.mark_down()
            raise

    @contextlib.contextmanager
    def deadline(self) -> Iterator[None]:
        """Bound the queries of this block (and the connection they may open)."""
        connection = connections[self.alias]
        if connection.connection is None and not connection.in_atomic_block:
            address = _postgres_address(connection.settings_dict)
            if address is not None:
                preflight(address, self.timeout)
            connection.ensure_connection()
        fd = _socket_of(connection.connection)
        if fd is None:
            yield
            return
        timer = _Deadline(fd, self.timeout, _postgres_address(connection.settings_dict))
        expired = DatabaseUnavailable(
            f"database {self.alias!r} did not answer within {self.timeout:g} s"
        )
        # Once the deadline has cut the connection, Django must not open a new one inside
        # this block (leaving a failed transaction.atomic() does, and a connection to a
        # hung server waits at least 2 s): while the block runs, reconnecting fails.
        # (An attribute of the connection object shadows the method for this block only.)
        previous: Callable[[], None] | None = vars(connection).get("ensure_connection")
        ensure = connection.ensure_connection

        def ensure_unless_expired() -> None:
            if timer.fired:
                raise expired
            ensure()

        connection.ensure_connection = ensure_unless_expired  # type: ignore[method-assign]
        try:
            yield
        except Exception as exc:
            if timer.fired and exc is not expired:
                raise expired from exc
            raise
        finally:
            timer.finish()
            if previous is not None:
                connection.ensure_connection = previous  # type: ignore[method-assign]
            else:
                del connection.ensure_connection

    def mark_down(self) -> None:
        """The database failed: fail fast from now on, and retry in the background."""
        with self._lock:
            self.down = True
            if os.getpid() != self._pid:  # a forked child never uses the parent's thread
                self._pid, self._retrier = os.getpid(), None
            if self._retrier is not None and self._retrier.is_alive():
                return
            self._retrier = threading.Thread(
                target=self._retry, name=f"circuitbreaker-db-retry:{self.alias}", daemon=True
            )
            self._retrier.start()

    def check_now(self) -> bool:
        """Ask the database once (bounded); when it answers, it is up again and what
        waited for it is written (``on_recovery``). True when it answered."""
        try:
            with self.deadline():
                with connections[self.alias].cursor() as cursor:
                    cursor.execute("SELECT 1")
        except Exception:
            with contextlib.suppress(Exception):
                connections[self.alias].close()
            return False
        self.down = False
        try:
            self.on_recovery()
        except Exception:
            logger.exception("circuitbreaker: writing transitions after the outage failed")
        return True

    def _retry(self) -> None:
        """Ask the database until it answers (backoff), then write what waited for it."""
        pause = FIRST_RETRY
        try:
            while self.down:
                time.sleep(pause)
                if self.check_now():
                    return
                pause = min(pause * 2, MAX_RETRY)
        finally:
            with contextlib.suppress(Exception):
                connections[self.alias].close()  # this thread's own connection
