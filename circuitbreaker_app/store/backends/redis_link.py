"""The connection of the Redis backend: one redis-py client with short timeouts, skipped
for a moment after a failure, that also reads Redis's clock (see ``redis.py``)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from circuitbreaker_app import conf
from circuitbreaker_app.store.backends.redis_url import (
    SINGLE_SCHEMES,
    RedisURLError,
    mask_redis_url,
    parse_redis_url,
    redis_client,
)
from circuitbreaker_app.store.backends.redis_wire import (
    PACKED_COMMANDS,
    LuaScript,
    hiredis_packer,
    kernel_timeouts,
)

REDIS_CACHE_BACKENDS = frozenset(
    {"django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache"}
)
#: Seconds between two readings of Redis's ``TIME`` (piggybacked on a refresh).
CLOCK_SYNC_INTERVAL = 30.0
#: Seconds a script call's own connection may sit idle before it is checked (one poll)
#: for a close by the server (a restart, ``timeout``, ``CLIENT KILL``) before its next use.
IDLE_CHECK = 1.0


class RedisUnavailable(ConnectionError):
    """Redis failed moments ago: skip it until the retry time instead of waiting again."""


def redis_url_for(cache_alias: str) -> str | None:
    """The Redis URL the store should use directly, or None for the generic cache path.

    ``CIRCUITBREAKER["REDIS_URL"]`` wins; otherwise the first server of a Redis cache's
    ``LOCATION`` (the one Django writes to).
    """
    from django.conf import settings

    url = conf.get("REDIS_URL")
    if url:
        return str(url)
    params = settings.CACHES.get(cache_alias, {})
    if params.get("BACKEND") not in REDIS_CACHE_BACKENDS:
        return None
    location = params.get("LOCATION")
    locations = location.split(",") if isinstance(location, str) else location
    if not locations:
        return None
    first = str(locations[0]).strip()
    return first if first.startswith(("redis://", "rediss://", "unix://")) else None


class RedisLink:
    """One redis-py client with short timeouts, shared by the state cache and the counters.

    A failed operation marks Redis down for ``retry_after`` seconds: until then every
    operation fails at once without touching the network, so an outage (even a server
    that hangs) costs each process at most one timeout per ``retry_after``, never one per
    call. Also reads Redis's ``TIME`` now and then, for the store's shared clock.

    The client is made from the URL on first use (:func:`.redis_url.redis_client`): one
    server, a Redis Cluster or a Sentinel service. A cluster client reads the slot map
    when it is made, so a cluster that is down then is an outage like any other, not an
    error at start. After a Sentinel failover the first round trip that fails marks Redis
    down; the next one (``retry_after`` later) asks the sentinels for the new primary.
    """

    def __init__(
        self,
        url: str,
        make_key: Callable[[str], str],
        timeout: float,
        clock_sink: Callable[[float], None] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        import redis
        from redis.exceptions import NoScriptError, RedisClusterException, ResponseError

        self.url = url
        self.label = f"Redis ({mask_redis_url(url)})"
        self.make_key = make_key
        self.timeout = timeout
        #: ``single``, ``cluster`` or ``sentinel`` (see :mod:`.redis_url`). A one-server URL
        #: (perhaps the cache's ``LOCATION``, which no check reads) is not checked here:
        #: a bad option is an outage when the client is made, never an error of the store.
        single = url.partition("://")[0].lower() in SINGLE_SCHEMES
        self.kind = "single" if single else parse_redis_url(url).kind
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._connecting = threading.Lock()
        self._abandoned: list[Any] = []  # clients of a parent process (never closed here)
        self.errors: tuple[type[BaseException], ...] = (
            redis.RedisError,
            RedisClusterException,
            OSError,
            RedisURLError,  # a one-server URL redis-py cannot use, found when the client is made
        )
        self._replies = (NoScriptError, ResponseError)
        self.retry_after = 1.0
        self.round_trips = 0
        self._down_until = 0.0
        self._probe = threading.Lock()
        self._clock_sink = clock_sink
        self._wall = wall
        self._sync_at = 0.0  # time.monotonic() of the next TIME reading
        #: The connection script calls take when it is free (see :meth:`evalsha`).
        self._own: Any = None
        self._own_lock = threading.Lock()
        self._own_used = 0.0  # time.monotonic() of its last use
        self._own_sock: Any = None  # its socket, once set to kernel timeouts
        self._pack = hiredis_packer()
        #: Packed script calls by command (see :meth:`_own_call`), at most PACKED_COMMANDS.
        self._packs: dict[tuple[Any, ...], bytes] = {}
        self._own_reader: Any = None  # hiredis's reader of the own socket, when read here
        self._own_buffer: Any = None
        self._not_enough: Any = None
        self._push_type: Any = None

    @property
    def client(self) -> Any:
        """The redis-py client, made on first use; while that fails, Redis is down."""
        client = self._client
        if client is None:
            with self._connecting:
                client = self._client
                if client is None:
                    self._check_down()
                    try:
                        client = self._client = redis_client(self.url, self.timeout)
                    except self.errors:
                        self._down_until = time.monotonic() + self.retry_after
                        raise
        return client

    def script(self, source: str) -> Any:
        """The Lua script ``source`` registered with the current client."""
        client = self.client
        script = self._scripts.get(source)
        if script is None or script.registered_client is not client:
            script = self._scripts[source] = client.register_script(source)
        return script

    def evalsha(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """``EVALSHA`` of ``script``: one round trip (through :meth:`run`), its reply.

        On one server or Sentinel, the command goes straight to a connection of the
        script calls' own: packed in one C call, one send, one read, without redis-py's
        command, pool and retry layers (a pool checkout alone polls the socket and reads
        the pid twice). The connection comes from the client's pool (``make_connection``),
        so it has the client's timeouts, TLS, credentials, database and, with Sentinel,
        asks for the primary when it connects. A thread that finds it busy, and a
        cluster (which routes by slot), go through redis-py's script call instead.
        """
        if self.kind == "cluster" or not self._own_lock.acquire(blocking=False):
            return self.run(self._script_call, script, keys, args)
        try:
            if self._down_until:  # a probe, or skipped: run() decides
                return self.run(self._own_call, script, keys, args)
            # run(), inlined for the commonest call (Redis up)
            self.round_trips += 1
            try:
                result = self._own_call(script, keys, args)
            except self.errors:
                self._down_until = time.monotonic() + self.retry_after
                raise
            self._down_until = 0.0
            return result
        finally:
            self._own_lock.release()

    def _script_call(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return self.script(script.source)(keys=keys, args=args)

    def _own_call(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        # redis-py's exceptions, imported once (an import statement here would cost every
        # call a lookup in sys.modules and a check of the module's spec).
        NoScriptError, ResponseError = self._replies  # noqa: N806
        conn = self._own
        if conn is None:
            conn = self._own = self.client.connection_pool.make_connection()
        now = time.monotonic()
        if now - self._own_used > IDLE_CHECK:
            self._check_idle(conn)
        self._own_used = now
        if conn._sock is None:
            # connect() itself, as a pool checkout does: a Sentinel connection asks for the
            # primary there (``send_packed_command`` would connect to its default address).
            conn.connect()
        if conn._sock is not self._own_sock:
            self._own_socket(conn)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        # Most writes of a circuit send the same arguments (its failures, above all): their
        # command is packed once. Keys and arguments are str and int only, so equal
        # commands pack alike (``True == 1`` or ``1.0 == 1`` would not).
        packed = self._packs.get(command)
        if packed is None:
            packed = self._packed(conn, command)
            if len(self._packs) >= PACKED_COMMANDS:
                self._packs.clear()
            self._packs[command] = packed
        reader = self._own_reader
        try:
            try:
                if reader is None:
                    conn.send_packed_command([packed], check_health=False)
                    return conn.read_response()
                # What send_packed_command() and read_response() do for a plain, TLS or
                # Unix connection with hiredis's reader (RESP2 or 3), without their layers
                # (a check of the host's name, keyword arguments, four isinstance tests).
                # Socket errors become redis-py's, below; the scripts sent here never
                # return an error inside an array, which redis-py would raise.
                sock = conn._sock
                sock.sendall(packed)
                reply = reader.gets()
                while reply is self._not_enough:
                    read = sock.recv_into(self._own_buffer)
                    if not read:
                        raise OSError("Connection closed by server.")
                    reader.feed(self._own_buffer, 0, read)
                    reply = reader.gets()
                if type(reply) is not list:  # an error reply, a push (RESP3), …
                    return self._odd_reply(conn, reply)
                return reply
            except NoScriptError:  # a restarted or flushed server: EVAL caches it again
                command = ("EVAL", script.source, *command[2:])
                conn.send_packed_command([self._packed(conn, command)], check_health=False)
                return conn.read_response()
        except ResponseError:
            raise  # a whole reply was read: the connection is in step
        except OSError as exc:  # as redis-py reports it, on the reader path
            conn.disconnect()  # never reuse a connection that may hold a late reply
            from redis.exceptions import ConnectionError, TimeoutError

            if isinstance(exc, socket.timeout):
                raise TimeoutError(f"Timeout on {self.label}") from exc
            raise ConnectionError(f"Error on {self.label}: {exc}") from exc
        except BaseException:
            conn.disconnect()  # never reuse a connection that may hold a late reply
            raise

    def _odd_reply(self, conn: Any, reply: Any) -> Any:
        """A reply read by :meth:`_own_call` that is not an array, as redis-py takes it: an
        error reply is raised, a push notification handled and the reply read after it."""
        if isinstance(reply, Exception):
            raise reply
        if self._push_type is not None and isinstance(reply, self._push_type):
            conn._parser.handle_push_response(reply)
            return conn.read_response()
        return reply

    def _own_socket(self, conn: Any) -> None:
        """Take a new socket of the own connection: kernel timeouts, and its reader when
        :meth:`_own_call` may read replies straight from it (else None: redis-py reads, as
        with a redis-py whose hiredis parser is not the one this knows)."""
        from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection

        self._kernel_timeouts(conn._sock)
        self._own_reader = None
        try:
            from redis._parsers.hiredis import NOT_ENOUGH_DATA, _HiredisParser
        except ImportError:
            return
        parser = getattr(conn, "_parser", None)
        reader = getattr(parser, "_reader", None)
        buffer = getattr(parser, "_buffer", None)
        if (
            type(conn) in (Connection, SSLConnection, UnixDomainSocketConnection)
            and type(parser) is _HiredisParser
            and reader is not None
            and isinstance(buffer, bytearray)
        ):
            self._not_enough = NOT_ENOUGH_DATA
            self._push_type = getattr(parser, "_hiredis_PushNotificationType", None)
            self._own_buffer = buffer
            self._own_reader = reader

    def _kernel_timeouts(self, sock: Any) -> None:
        """Take ``sock`` as the own connection's socket, with kernel timeouts
        (:func:`.redis_wire.kernel_timeouts`)."""
        self._own_sock = sock
        kernel_timeouts(sock, self.timeout)

    def _check_idle(self, conn: Any) -> None:
        """Drop the connection when the server closed it while it sat idle (what a pool
        checkout checks before every command), so the call connects again, not fails."""
        if conn._sock is None:
            return
        self._own_sock = None  # can_read() gives the socket Python's timeout back
        try:
            stale = conn.can_read()
        except self.errors:
            stale = True
        if stale:
            conn.disconnect()

    def _packed(self, conn: Any, command: tuple[Any, ...]) -> bytes:
        pack = self._pack
        return pack(command) if pack is not None else b"".join(conn.pack_command(*command))

    def _check_down(self) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            raise RedisUnavailable(f"{self.label} failed less than {self.retry_after:g} s ago")

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One round trip: ``fn(*args)``, or :class:`RedisUnavailable` while Redis is down.

        Once the retry time has passed, one thread tries Redis again while the others keep
        skipping it, so a server that still hangs costs one more timeout, not one per thread.
        """
        probing = False
        if self._down_until:
            if time.monotonic() < self._down_until or not self._probe.acquire(blocking=False):
                raise RedisUnavailable(f"{self.label} failed less than {self.retry_after:g} s ago")
            probing = True
        self.round_trips += 1
        try:
            result = fn(*args, **kwargs)
        except self.errors:
            self._down_until = time.monotonic() + self.retry_after
            raise
        finally:
            if probing:
                self._probe.release()
        self._down_until = 0.0
        return result

    def mget(self, keys: list[str]) -> list[Any]:
        """``MGET`` of store keys; with Redis's ``TIME`` in the same round trip when due.

        In a cluster, keys of several circuits sit in several slots: they are read with
        one ``MGET`` per slot, pipelined per node (the keys of one circuit share a slot,
        so a refresh stays one ``MGET``), and ``TIME`` is a round trip of its own.
        """
        redis_keys = [self.make_key(key) for key in keys]
        clock_due = self._clock_sink is not None and time.monotonic() >= self._sync_at
        client = self.client
        if self.kind == "cluster":
            values = self.run(client.mget_nonatomic, redis_keys)
            if clock_due:
                # One node's clock (the default node's) for every reading, as on one server.
                node = client.get_default_node()
                self._read_clock(lambda: self.run(client.time, target_nodes=node))
            return list(values)
        if not clock_due:
            return list(self.run(client.mget, redis_keys))
        pipe = client.pipeline(transaction=False)
        pipe.mget(redis_keys)
        pipe.time()
        found: list[Any] = []

        def read() -> tuple[int, int]:
            values, now = self.run(pipe.execute)
            found.extend(values)
            return now

        self._read_clock(read)
        return found

    def _read_clock(self, read: Callable[[], tuple[int, int]]) -> None:
        """Pass the offset of Redis's clock (``read()`` returns ``TIME``) to the store."""
        before = self._wall()
        seconds, micros = read()
        after = self._wall()
        self._sync_at = time.monotonic() + CLOCK_SYNC_INTERVAL
        offset = seconds + micros / 1e6 - (before + after) / 2
        if abs(offset) < 86_400 and self._clock_sink is not None:  # ignore nonsense
            self._clock_sink(offset)

    def reset_after_fork(self) -> None:
        """Forget the parent's connections in a forked child (never close them: the parent
        still uses the sockets); the child makes a client of its own on first use."""
        if self._client is not None:
            self._abandoned.append(self._client)
        if self._own is not None:
            self._abandoned.append(self._own)
        self._client = None
        self._own = None
        self._own_sock = None
        self._own_reader = None
        self._own_lock = threading.Lock()
        self._scripts = {}
        self._connecting = threading.Lock()
        self._probe = threading.Lock()
        self._down_until = 0.0
        self._sync_at = 0.0
