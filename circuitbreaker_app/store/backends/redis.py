"""Counters and state entries in Redis, through redis-py directly with short timeouts.

Used when the cache is Django's or django-redis's ``RedisCache``, or
``CIRCUITBREAKER["REDIS_URL"]`` is set. :class:`RedisStateCache` holds the state entries as
JSON next to the counters (one ``MGET`` reads both), and :class:`RedisCounters` records an
outcome in one Lua script (``lua/*.lua`` beside this module) that also returns the
circuit's newer state, if any, so a process learns of another's transition from the very
round trip that records its failure. Redis's ``TIME`` is the one clock every process's
decisions use.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from typing import Any

from circuitbreaker_app import conf
from circuitbreaker_app.store.backends.base import (
    Counters,
    Tally,
    Watch,
    decode,
    encode,
)
from circuitbreaker_app.store.backends.redis_link import RedisLink, redis_url_for
from circuitbreaker_app.store.backends.redis_wire import LuaScript
from circuitbreaker_app.store.entry import CircuitEntry
from circuitbreaker_app.store.windows import MAX_RUNS, BucketAdd, CountAdd, parse_count


def _script(name: str) -> str:
    """The Lua script ``lua/<name>.lua`` shipped beside this module."""
    return files("circuitbreaker_app.store.backends").joinpath(f"lua/{name}.lua").read_text()


#: Record an outcome in a time bucket (INCRBY + PEXPIRE), watching the state entry.
RECORD_LUA = _script("record")
#: Apply a batch to a count window (a line-by-line port of ``windows.apply_count``).
COUNT_LUA = _script("count")
#: Free a permit only if it still holds the caller's token.
RELEASE_LUA = _script("release")
#: Take a permit (SET NX PX), over anything at its key that is not a permit.
CLAIM_LUA = _script("claim")
#: Publish a state entry unless a later generation of the same circuit is there.
PUBLISH_LUA = _script("publish")
#: The scripts a failure's write calls, with their SHA1s (:meth:`RedisLink.evalsha`).
RECORD = LuaScript(RECORD_LUA)
COUNT = LuaScript(COUNT_LUA)


def _entry_in(result: list[Any]) -> CircuitEntry | None:
    """The state entry a record script returned beside its value (JSON), decoded here, at
    the backend's edge: None when there is none or it is not a well-formed entry."""
    return CircuitEntry.from_json(decode(result[1])) if len(result) > 1 else None


def _count_reply(raw: Any, expected: list[int] | None) -> list[int]:
    """The count window count.lua returned (cjson's ``[seq,n,f,s,…]``), as
    :func:`parse_count` reads it: ``expected`` itself when the window is the one the write
    expected (the common failure), so it is taken without being checked or compared again."""
    if type(raw) is bytes:
        try:
            window = list(map(int, raw[1:-1].split(b",")))
        except ValueError:  # not a list of integers: parse_count() says what it is
            return parse_count(decode(raw))
        return expected if window == expected else parse_count(window)
    return parse_count(decode(raw))


class RedisStateCache:
    """The store's cache on the Redis path: the subset of Django's cache API it uses.

    State entries are JSON (not pickles), so the Lua scripts can read their generation;
    counters are plain integers, which are JSON too, so one ``MGET`` reads a state entry
    and its window buckets together. Keys go through the Django cache's ``make_key``
    (its ``KEY_PREFIX`` and ``VERSION``), so clearing that cache clears these too.
    """

    def __init__(self, link: RedisLink) -> None:
        self.link = link

    def get(self, key: str, default: Any = None) -> Any:
        return self.get_many([key]).get(key, default)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        values = self.link.mget(keys)
        found = {}
        for key, raw in zip(keys, values, strict=True):
            value = decode(raw)
            if value is not None:
                found[key] = value
        return found

    def _px(self, timeout: float | None) -> int | None:
        return None if timeout is None else max(1, int(timeout * 1000))

    def set(self, key: str, value: Any, timeout: float | None = None) -> None:
        self.link.run(
            self.link.client.set, self.link.make_key(key), encode(value), px=self._px(timeout)
        )

    def add(self, key: str, value: Any, timeout: float | None = None) -> bool:
        return bool(
            self.link.run(
                self.link.client.set,
                self.link.make_key(key),
                encode(value),
                px=self._px(timeout),
                nx=True,
            )
        )

    def delete(self, key: str) -> bool:
        return bool(self.link.run(self.link.client.delete, self.link.make_key(key)))

    def publish(self, key: str, entry: CircuitEntry) -> bool:
        """Write a state entry unless a later generation of the circuit is already there."""
        return bool(
            self.link.run(
                self.link.script(PUBLISH_LUA),
                keys=[self.link.make_key(key)],
                args=[encode(entry.to_json()), entry.circuit_id, entry.generation],
            )
        )


class RedisCounters(Counters):
    """Window buckets and trial permits in Redis, one round trip per operation.

    ``incr`` is a Lua script (``INCRBY`` + ``PEXPIRE`` of a new key); a permit is a
    ``SET NX PX`` holding a random token, freed by a compare-and-delete script. Values sit
    beside the state entries of :class:`RedisStateCache`, which reads both in one ``MGET``.
    """

    in_cache = True
    #: The call totals are a hash the record scripts add to (``HINCRBY``).
    tally_in_add = True

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        #: Called with the name of the cache call each operation replaces ("incr", "add",
        #: "delete", "get_many"), before it is sent: lets tests count round trips.
        self.on_call: Callable[[str], None] | None = None
        #: The Redis keys of a write (window or bucket, state entry, call totals), by
        #: store keys and total fields: made once, not per failure through Django's key
        #: function.
        self._made: dict[tuple[Any, ...], list[str]] = {}

    def _keys(self, key: str, watch: str | None, tally: tuple[str, Tally] | None) -> list[str]:
        """The Redis keys of a write to ``key``, watching ``watch``, adding ``tally`` (a
        write looks them up in :attr:`_made` itself, the same way, and calls this on a miss)."""
        made_key = (key, watch, tally[0], *tally[1]) if tally and watch else (key, watch)
        keys = self._made.get(made_key)
        if keys is None:
            make_key = self.link.make_key
            keys = [make_key(key)]
            if watch:
                keys.append(make_key(watch))
                if tally is not None:
                    keys += [make_key(f"{tally[0]}/{field}") for field in tally[1]]
            if len(self._made) >= 256:
                self._made.clear()
            self._made[made_key] = keys
        return keys

    def _note(self, operation: str) -> None:
        if self.on_call is not None:
            self.on_call(operation)

    def incr(self, key: str, delta: int, ttl: float, known: bool = True) -> int:
        return self.record(key, delta, ttl, None, -1, -1)[0]

    def record(
        self,
        key: str,
        delta: int,
        ttl: float,
        watch: str | None,
        generation: int,
        circuit_id: int,
        tally: tuple[str, Tally] | None = None,
    ) -> tuple[int, CircuitEntry | None]:
        """Add ``delta`` to ``key`` (and ``tally`` to the call totals); also return the state
        entry under ``watch`` when its generation or circuit id is not ``generation`` /
        ``circuit_id`` (None when it is not a well-formed entry)."""
        if self.on_call is not None:  # _note(), inlined
            self.on_call("incr")
        args = [delta, max(1, int(ttl * 1000)), generation, circuit_id]
        if tally is not None and watch:
            args += tally[1].values()
        keys = self._made.get(
            (key, watch, tally[0], *tally[1]) if tally and watch else (key, watch)
        ) or self._keys(key, watch, tally)
        result = self.link.evalsha(RECORD, keys, args)
        entry = _entry_in(result) if watch and len(result) > 1 else None
        return int(result[0]), entry

    def add_count(self, change: CountAdd) -> list[int]:
        return self.record_count(change, None, -1, -1)[0]

    def record_count(
        self,
        change: CountAdd,
        watch: str | None,
        generation: int,
        circuit_id: int,
        tally: tuple[str, Tally] | None = None,
    ) -> tuple[list[int], CircuitEntry | None]:
        """Apply ``change`` to its count window (one script call, like :meth:`record`).

        ``seen`` matters to the script only with successes (count.lua reads it there
        alone): without, it is sent as 0, so a circuit's failures send one command that
        :class:`RedisLink` packs once."""
        if self.on_call is not None:  # _note(), inlined
            self.on_call("incr")
        successes = change.successes
        args = [
            successes,
            change.outcome,
            change.seen if successes else 0,
            change.size,
            max(1, int(change.ttl * 1000)),
            MAX_RUNS,
            generation,
            circuit_id,
        ]
        if tally is not None and watch:
            args += tally[1].values()
        key = change.key
        keys = self._made.get(
            (key, watch, tally[0], *tally[1]) if tally and watch else (key, watch)
        ) or self._keys(key, watch, tally)
        result = self.link.evalsha(COUNT, keys, args)
        entry = _entry_in(result) if watch and len(result) > 1 else None
        return _count_reply(result[0], change.expected), entry

    def claim(self, key: str, ttl: float, value: int = 1) -> bool:
        self._note("add")
        link = self.link
        px = max(1, int(ttl * 1000))
        return bool(link.run(link.script(CLAIM_LUA), keys=[link.make_key(key)], args=[value, px]))

    def release(self, key: str, value: int) -> None:
        self._note("delete")
        self.link.run(self.link.script(RELEASE_LUA), keys=[self.link.make_key(key)], args=[value])

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        self._note("get_many")
        values = self.link.mget(keys)
        found = {key: decode(raw) for key, raw in zip(keys, values, strict=True)}
        return {key: value for key, value in found.items() if value is not None}

    def delete(self, key: str) -> None:
        self._note("delete")
        self.link.run(self.link.client.delete, self.link.make_key(key))

    def add(
        self,
        change: BucketAdd | CountAdd,
        known: bool,
        watch: Watch | None,
        tally: tuple[str, Tally] | None = None,
    ) -> tuple[Any, CircuitEntry | None]:
        """One script call that records ``change`` (and ``tally``) and reads the watched
        state entry."""
        key, generation, circuit_id = watch if watch is not None else (None, -1, -1)
        if tally is not None and key is None:
            self.add_tally(*tally)
            tally = None
        if isinstance(change, CountAdd):
            return self.record_count(change, key, generation, circuit_id, tally)
        return self.record(change.key, change.delta, change.ttl, key, generation, circuit_id, tally)

    def add_tally(self, key: str, tally: Tally) -> None:
        """``INCRBY`` each outcome's total (no expiry; one pipelined round trip)."""
        self._note("incr")
        link = self.link

        def send() -> None:
            pipe = link.client.pipeline(transaction=False)
            for field, count in tally.items():
                pipe.incrby(link.make_key(f"{key}/{field}"), count)
            pipe.execute()

        link.run(send)

    def after_fork(self) -> None:
        self.link.reset_after_fork()

    def through(self, cache: Any) -> RedisCounters:
        self.on_call = cache.note
        return self


def handles(cache_alias: str) -> bool:
    """True when ``REDIS_URL`` is set or the cache is a Redis cache with a URL."""
    return redis_url_for(cache_alias) is not None


def connect(
    cache_alias: str,
    db_alias: str,
    *,
    wall: Callable[[], float],
    clock_sink: Callable[[float], None] | None,
    **clocks: Any,
) -> Any:
    """State entries and counters in Redis, through one :class:`RedisLink`; keys go
    through the Django cache's ``make_key`` (its ``KEY_PREFIX`` and ``VERSION``)."""
    from django.core.cache import caches

    from circuitbreaker_app.store.backends import Backend

    url = redis_url_for(cache_alias)
    assert url is not None, "connect() after handles() said yes"
    link = RedisLink(
        url,
        make_key=caches[cache_alias].make_key,
        timeout=float(conf.get("REDIS_TIMEOUT")),
        clock_sink=clock_sink,
        wall=wall,
    )
    return Backend("redis", RedisStateCache(link), RedisCounters(link), link.label, link)
