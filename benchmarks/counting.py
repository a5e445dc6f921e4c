"""Counting the I/O a guarded call causes, without a Redis MONITOR.

* Database queries: Django's ``CaptureQueriesContext`` on every connection.
* Django cache operations: :class:`~circuitbreaker_app.testing.CountingCache` wrapped
  around the store's cache object.
* Redis: :class:`RedisCounter` patches redis-py's connection class in this process, so
  it sees every byte any client here sends (Django's ``RedisCache``, pybreaker's
  ``CircuitRedisStorage``, or a Redis-specialised path of the store), and nobody else's:
  ``INFO commandstats`` would also count the other clients of a shared server. A *round
  trip* is one ``send_packed_command`` (a pipeline's commands go in one send and count
  once); a *command* is one reply read; command names are taken from ``send_command``
  and from pipelines' ``pack_commands``. The store's script calls on its own connection
  (``RedisLink._own_call``) send and read on the socket, past those methods: each that
  redis-py's methods did not see counts as one round trip and one ``EVALSHA``.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from circuitbreaker_app.testing import CACHE_OPERATIONS, CountingCache

__all__ = ["CACHE_OPERATIONS", "CountingCache", "count_store_cache"]


def count_store_cache(store: Any) -> CountingCache:
    """Put a :class:`CountingCache` in front of ``store``'s cache, wherever it is held.

    The store's cache is rewired, and its counters are made ``through`` the wrapper, so
    every cache operation, and every counters operation standing for one, is counted. Redis
    round trips are seen by :class:`RedisCounter` as well.
    """
    original = store.cache
    counting = CountingCache(original)
    store.cache = counting
    # The counters contract's own hook (as tests/helpers.FakeStore does): counters kept in
    # the cache go through ``counting``, others report each operation to ``counting.note``.
    store.counters = store.counters.through(counting)
    return counting


class RedisCounter:
    """Round trips and commands sent by redis-py in this process while active."""

    def __init__(self) -> None:
        self.round_trips = 0
        self.commands = 0
        self.names: Counter[str] = Counter()
        self._active = False
        self._patched = False
        self._named = False  # the command being sent was named when it was packed

    def _patch(self) -> None:
        if self._patched:
            return
        from redis.connection import AbstractConnection

        counter = self
        send = AbstractConnection.send_packed_command
        read = AbstractConnection.read_response
        send_one = AbstractConnection.send_command
        pack_many = AbstractConnection.pack_commands

        def _name(args: Any) -> str:
            name = args[0] if args else b"?"
            return (name.decode() if isinstance(name, bytes) else str(name)).upper()

        def _packed_name(command: Any) -> str:
            # b"*N\r\n$len\r\nNAME\r\n...": a command packed by its caller (the store's
            # script calls), which sends it without send_command or pack_commands.
            first = command if isinstance(command, (bytes, str)) else command[0]
            first = first.encode() if isinstance(first, str) else bytes(first)
            parts = first.split(b"\r\n", 3)
            return parts[2].decode().upper() if len(parts) > 2 else "?"

        def send_command(self: Any, *args: Any, **kwargs: Any) -> Any:
            if counter._active:
                counter.names[_name(args)] += 1
                counter._named = True
            return send_one(self, *args, **kwargs)

        def pack_commands(self: Any, commands: Any) -> Any:
            commands = list(commands)
            if counter._active:
                for args in commands:
                    counter.names[_name(args)] += 1
                counter._named = True
            return pack_many(self, commands)

        def send_packed_command(self: Any, command: Any, check_health: bool = True) -> Any:
            if counter._active:
                counter.round_trips += 1
                if not counter._named:
                    counter.names[_packed_name(command)] += 1
            counter._named = False
            return send(self, command, check_health)

        def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
            if counter._active:
                counter.commands += 1
            return read(self, *args, **kwargs)

        from circuitbreaker_app.store.backends.redis_link import RedisLink

        own_call = RedisLink._own_call

        def _own_call(self: Any, script: Any, keys: Any, args: Any) -> Any:
            if not counter._active:
                return own_call(self, script, keys, args)
            before = counter.round_trips
            result = own_call(self, script, keys, args)
            if counter.round_trips == before:  # sent and read on the socket itself
                counter.round_trips += 1
                counter.commands += 1
                counter.names["EVALSHA"] += 1
            return result

        RedisLink._own_call = _own_call  # type: ignore[method-assign]
        AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
        AbstractConnection.read_response = read_response  # type: ignore[method-assign]
        AbstractConnection.send_command = send_command  # type: ignore[method-assign]
        AbstractConnection.pack_commands = pack_commands  # type: ignore[method-assign]
        self._patched = True

    @contextlib.contextmanager
    def counting(self) -> Iterator[RedisCounter]:
        try:
            self._patch()
        except ImportError:  # no redis-py: nothing to count
            yield self
            return
        self._active = True
        try:
            yield self
        finally:
            self._active = False

    def reset(self) -> None:
        self.round_trips = 0
        self.commands = 0
        self.names.clear()


REDIS = RedisCounter()
