"""Where breakers keep state: the only module doing I/O.

Three layers, fastest first (DESIGN §4):

* process memory: one :class:`CircuitRuntime` per circuit, a snapshot of its state
  trusted for ``STATE_TTL`` seconds, plus successes not yet flushed;
* the cache: each circuit's current state and definition, window buckets and
  half-open trial permits, shared by every process;
* the database: definitions, durable state and the event log; every transition is one
  ``UPDATE … WHERE generation = g`` and one event row, published to the cache on commit.

A guarded call that succeeds in CLOSED, or is rejected in OPEN, touches none of them
except once per ``STATE_TTL`` (one ``get_many`` to refresh, one ``incr`` to flush).

With Redis (the cache is Django's or django-redis's ``RedisCache``, or
``CIRCUITBREAKER["REDIS_URL"]`` is set) the shared layer talks to Redis through redis-py
directly, with short socket timeouts: :class:`RedisStateCache` holds the state entries as
JSON next to the counters (one ``MGET`` reads both), and :class:`RedisCounters` records an
outcome in one Lua script that also returns the circuit's newer state, if any, so a process
learns of another's transition from the very round trip that records its failure.
Redis's ``TIME`` is the one clock every process's decisions use. See docs/architecture.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.core.cache import caches
from django.core.signals import setting_changed
from django.db import Error as DjangoDatabaseError
from django.db import IntegrityError, connections, transaction
from django.db.models.functions import Now

from circuitbreaker_app import conf
from circuitbreaker_app.buckets import (
    MAX_RUNS,
    BucketAdd,
    CountAdd,
    SharedWindow,
    apply_count,
    parse_count,
    window_for,
)
from circuitbreaker_app.core import (
    CircuitConfig,
    CircuitStatus,
    Outcome,
    Permit,
    Snapshot,
    State,
    behaviour_for,
    evaluate,
)
from circuitbreaker_app.core.states import Closed, check_transition, settle

logger = logging.getLogger("circuitbreaker_app")

KEY_PREFIX = "circuitbreaker/1"
#: States in which a call is admitted with no shared permit.
FREE_STATES = frozenset({State.CLOSED, State.FORCED_CLOSED, State.DISABLED})
TRIAL_SUCCESS_TTL = 86_400

#: Cache backends that hold the shared counters themselves when the Redis path is off:
#: only LocMem, one process's memory (its lock makes our read-modify-writes atomic).
#: Other caches (database, file, memcached) lack a compare-and-set in Django's cache API,
#: so their counters live in the ``CircuitCounter`` table.
LOCAL_CACHE_BACKENDS = frozenset({"django.core.cache.backends.locmem.LocMemCache"})


class UnknownCircuitError(LookupError):
    """Code used a circuit name that has no row, and ``AUTO_CREATE`` is off."""


def state_key(name: str) -> str:
    """Cache key of a circuit's shared state entry."""
    return f"{KEY_PREFIX}/{name}/state"


def generation_prefix(name: str, generation: int) -> str:
    """Prefix of the keys that belong to one period (generation) of a circuit."""
    return f"{KEY_PREFIX}/{name}/g{generation}"


def _timestamp(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _datetime(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value is not None else None


def entry_from_row(row: Any) -> dict[str, Any]:
    """The cache entry every process reads: durable state plus the definition."""
    return {
        "id": row.pk,
        "state": row.state,
        "generation": row.generation,
        "open_count": row.open_count,
        "opened_at": _timestamp(row.opened_at),
        "retry_at": _timestamp(row.retry_at),
        "changed_at": _timestamp(row.changed_at),
        "config": row.definition(),
    }


#: The circuit id of a runtime built from the settings because neither the cache nor the
#: database answered on first use (no row has it, so its transitions are never written).
PROVISIONAL_ID = -1


def provisional_entry(name: str) -> dict[str, Any]:
    """A CLOSED circuit defined by the settings alone (``CIRCUITS[name]`` over ``DEFAULTS``
    over the model's defaults), for a first use while the cache and the database are down.

    The process counts and decides on its own with it; the first refresh that reaches
    either takes the stored circuit instead, which then wins over anything decided here.
    """
    from django.core.exceptions import ValidationError

    from circuitbreaker_app.models import Circuit

    fields = {**(conf.get("DEFAULTS") or {}), **((conf.get("CIRCUITS") or {}).get(name) or {})}
    try:
        definition = Circuit(name=name, **fields).definition()
        CircuitConfig.from_mapping(definition)
    except (TypeError, ValueError, ValidationError):  # checks report bad settings elsewhere
        definition = Circuit(name=name).definition()
    return {
        "id": PROVISIONAL_ID,
        "state": State.CLOSED.value,
        "generation": 0,
        "open_count": 0,
        "opened_at": None,
        "retry_at": None,
        "changed_at": None,
        "config": definition,
    }


def status_from_entry(entry: dict[str, Any]) -> CircuitStatus:
    """The core status held in a cache entry."""
    return CircuitStatus(
        state=State(entry["state"]),
        generation=entry["generation"],
        open_count=entry["open_count"],
        opened_at=entry["opened_at"],
        retry_at=entry["retry_at"],
        changed_at=entry["changed_at"],
    )


# -- counters -------------------------------------------------------------------------


class Counters:
    """Atomic integers and claims shared by every process, with expiry."""

    #: True when the values live in the state cache, so refreshes read both at once.
    in_cache = False

    def incr(self, key: str, delta: int, ttl: float, known: bool = True) -> int:
        """Add ``delta`` (creating the key with ``ttl``) and return the new value.

        ``known=False`` says the caller has not seen the key yet, so creating it is
        tried first: either way a write costs one operation when nobody races us.
        """
        raise NotImplementedError("subclasses of Counters must provide incr()")

    def claim(self, key: str, ttl: float, value: int = 1) -> bool:
        """Take ``key`` (holding ``value``) for ``ttl`` seconds unless someone holds it."""
        raise NotImplementedError("subclasses of Counters must provide claim()")

    def release(self, key: str, value: int) -> None:
        """Free ``key`` if it still holds ``value`` (a late holder frees nothing)."""
        raise NotImplementedError("subclasses of Counters must provide release()")

    def add_count(self, change: CountAdd) -> list[int]:
        """Apply ``change`` to its count window in one atomic step; return the window."""
        raise NotImplementedError("subclasses of Counters must provide add_count()")

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """Values of ``keys`` that exist: integers, and count windows as lists."""
        raise NotImplementedError("subclasses of Counters must provide get_many()")

    def delete(self, key: str) -> None:
        raise NotImplementedError("subclasses of Counters must provide delete()")


def _whole_seconds(ttl: float) -> int:
    # Cache backends truncate timeouts to whole seconds (Redis: 0.3 -> 0, "expire now").
    return max(1, math.ceil(ttl))


_COUNT_LOCK = threading.Lock()


class CacheCounters(Counters):
    """Counters in this process's LocMem cache (its ``incr`` and ``add`` are atomic)."""

    in_cache = True

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def incr(self, key: str, delta: int, ttl: float, known: bool = True) -> int:
        ttl = _whole_seconds(ttl)
        if not known and self.cache.add(key, delta, timeout=ttl):
            return delta
        try:
            return int(self.cache.incr(key, delta))
        except ValueError:  # missing key: create it, unless another process just did
            if self.cache.add(key, delta, timeout=ttl):
                return delta
            return int(self.cache.incr(key, delta))

    def claim(self, key: str, ttl: float, value: int = 1) -> bool:
        return bool(self.cache.add(key, value, timeout=_whole_seconds(ttl)))

    def release(self, key: str, value: int) -> None:
        # get + delete: a lease that expires and is re-taken in between is freed early,
        # a window of one round trip (the Redis path will make this atomic).
        if self.cache.get(key) == value:
            self.cache.delete(key)

    def add_count(self, change: CountAdd) -> list[int]:
        # get + set under a lock: atomic, since no other process sees a LocMem cache.
        with _COUNT_LOCK:
            window = parse_count(self.cache.get(change.key))
            window = apply_count(window, change.successes, change.outcome, change.seen, change.size)
            self.cache.set(change.key, window, timeout=_whole_seconds(change.ttl))
        return window

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return self.cache.get_many(keys)

    def delete(self, key: str) -> None:
        self.cache.delete(key)


#: Compare-and-set rounds before a count-window write gives up (and the process counts
#: that outcome on its own, as in an outage); each lost round means another write landed.
COUNT_CAS_ATTEMPTS = 20


class CountContention(RuntimeError):
    """A count-window write lost every compare-and-set round to other writers."""


class DatabaseCounters(Counters):
    """Counters in the ``CircuitCounter`` table, for caches without atomic ``incr``.

    One ``INSERT … ON CONFLICT … RETURNING`` statement per operation (SQLite ≥ 3.35 and
    PostgreSQL), exact across processes (DESIGN §6).
    """

    def __init__(self, alias: str, wall: Callable[[], float]) -> None:
        from circuitbreaker_app.models import CircuitCounter

        self.alias = alias
        self.wall = wall
        connection = connections[alias]
        self.table = connection.ops.quote_name(CircuitCounter._meta.db_table)

    def _fetch(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with connections[self.alias].cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def incr(self, key: str, delta: int, ttl: float, known: bool = True) -> int:
        now = self.wall()
        t = self.table
        rows = self._fetch(
            f"INSERT INTO {t} (key, value, data, expires_at) VALUES (%s, %s, '', %s) "
            f"ON CONFLICT (key) DO UPDATE SET "
            f"value = CASE WHEN {t}.expires_at <= %s THEN excluded.value "
            f"ELSE {t}.value + excluded.value END, "
            f"expires_at = CASE WHEN {t}.expires_at <= %s THEN excluded.expires_at "
            f"ELSE {t}.expires_at END RETURNING value",
            [key, delta, now + ttl, now, now],
        )
        return int(rows[0][0])

    def claim(self, key: str, ttl: float, value: int = 1) -> bool:
        now = self.wall()
        t = self.table
        rows = self._fetch(
            f"INSERT INTO {t} (key, value, data, expires_at) VALUES (%s, %s, '', %s) "
            f"ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            f"expires_at = excluded.expires_at WHERE {t}.expires_at <= %s RETURNING key",
            [key, value, now + ttl, now],
        )
        return bool(rows)

    def release(self, key: str, value: int) -> None:
        self._fetch(
            f"DELETE FROM {self.table} WHERE key = %s AND value = %s RETURNING key", [key, value]
        )

    def add_count(self, change: CountAdd) -> list[int]:
        # Compare-and-set on the stored JSON (its ``seq`` grows with every write, so equal
        # text means nobody wrote in between). The first round trusts the window this
        # process last saw: one statement when nobody else wrote since, else read and retry.
        t = self.table
        now = self.wall()
        current: list[int] | None = change.known if len(change.known) > 1 else None
        known = _encode(current) if current else None
        fresh = True  # the window we know may have expired meanwhile: only if unexpired
        for _ in range(COUNT_CAS_ATTEMPTS):
            if current is None:
                now = self.wall()
                rows = self._fetch(f"SELECT data, expires_at FROM {t} WHERE key = %s", [change.key])
                known, fresh = (rows[0][0] if rows else None), False
                live = rows and rows[0][1] > now and rows[0][0]
                current = parse_count(_decode(rows[0][0])) if live else [0]
            window = apply_count(
                current, change.successes, change.outcome, change.seen, change.size
            )
            data = _encode(window)
            if known is None:
                written = self._fetch(
                    f"INSERT INTO {t} (key, value, data, expires_at) VALUES (%s, 0, %s, %s) "
                    f"ON CONFLICT (key) DO NOTHING RETURNING key",
                    [change.key, data, now + change.ttl],
                )
            else:
                written = self._fetch(
                    f"UPDATE {t} SET data = %s, expires_at = %s WHERE key = %s AND data = %s "
                    f"AND expires_at > %s RETURNING key",
                    [data, now + change.ttl, change.key, known, now if fresh else -1.0],
                )
            if written:
                return window
            current = None
        raise CountContention(f"{change.key}: {COUNT_CAS_ATTEMPTS} writers in a row won")

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        marks = ", ".join(["%s"] * len(keys))
        rows = self._fetch(
            f"SELECT key, value, data FROM {self.table} WHERE key IN ({marks}) AND expires_at > %s",
            [*keys, self.wall()],
        )
        return {key: _decode(data) if data else int(value) for key, value, data in rows}

    def delete(self, key: str) -> None:
        self._fetch(f"DELETE FROM {self.table} WHERE key = %s RETURNING key", [key])

    def purge_expired(self) -> None:
        """Drop expired counters (called on transitions, never on the hot path)."""
        self._fetch(
            f"DELETE FROM {self.table} WHERE expires_at < %s RETURNING key", [self.wall() - 60]
        )


# -- Redis, through redis-py directly ------------------------------------------------------

#: Backends whose server the Redis path can talk to directly (their LOCATION is a URL).
REDIS_CACHE_BACKENDS = frozenset(
    {"django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache"}
)
#: Seconds between two readings of Redis's ``TIME`` (piggybacked on a refresh).
CLOCK_SYNC_INTERVAL = 30.0

# Record an outcome: add to the bucket, give a new bucket its TTL, and hand back the
# circuit's state entry when its generation is not the one the caller knows.
# KEYS: bucket[, state entry]. ARGV: delta, TTL (ms), known generation, known circuit id.
_RECORD_LUA = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if KEYS[2] then
  local raw = redis.call('GET', KEYS[2])
  if raw then
    local ok, entry = pcall(cjson.decode, raw)
    if not ok or type(entry) ~= 'table' or entry['generation'] ~= tonumber(ARGV[3])
        or entry['id'] ~= tonumber(ARGV[4]) then
      return {value, raw}
    end
  end
end
return {value}
"""
# Apply a batch to a count window (buckets.apply_count, line by line) and hand back the
# window, plus the circuit's state entry when its generation is not the caller's.
# KEYS: window[, state entry]. ARGV: successes, outcome, seen, size, TTL (ms), max runs,
# known generation, known circuit id.
_COUNT_LUA = """
local seq, runs = 0, {}
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, flat = pcall(cjson.decode, raw)
  if ok and type(flat) == 'table' and type(flat[1]) == 'number' and #flat % 3 == 1 then
    seq = flat[1]
    for i = 2, #flat, 3 do runs[#runs + 1] = {flat[i], flat[i + 1], flat[i + 2]} end
  end
end
local function split(run, older)
  local n, f, s = run[1], run[2], run[3]
  local newer = n - older
  local fn = math.floor((2 * f * newer + n) / (2 * n))
  local sn = math.floor((2 * s * newer + n) / (2 * n))
  return {older, f - fn, s - sn}, {newer, fn, sn}
end
local function pure(run)
  return (run[2] == 0 or run[2] == run[1]) and (run[3] == 0 or run[3] == run[1])
end
local function same_kind(a, b)
  return pure(a) and pure(b) and (a[2] > 0) == (b[2] > 0) and (a[3] > 0) == (b[3] > 0)
end
local successes, outcome = tonumber(ARGV[1]), tonumber(ARGV[2])
local seen, size, max_runs = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
if successes > 0 then
  local back = math.max(0, seq - seen)
  local at = #runs + 1
  while back > 0 and at > 1 do
    local n = runs[at - 1][1]
    if n <= back then
      back = back - n
      at = at - 1
    else
      local older, newer = split(runs[at - 1], n - back)
      runs[at - 1] = older
      table.insert(runs, at, newer)
      back = 0
    end
  end
  table.insert(runs, at, {successes, 0, 0})
  seq = seq + successes
end
if outcome > 0 then
  runs[#runs + 1] = {1, outcome % 2, math.floor(outcome / 2) % 2}
  seq = seq + 1
end
local merged, total = {}, 0
for _, run in ipairs(runs) do
  local last = merged[#merged]
  if last and same_kind(last, run) then
    merged[#merged] = {last[1] + run[1], last[2] + run[2], last[3] + run[3]}
  else
    merged[#merged + 1] = run
  end
  total = total + run[1]
end
while total > size do
  local excess = total - size
  if merged[1][1] <= excess then
    total = total - table.remove(merged, 1)[1]
  else
    local _, newer = split(merged[1], excess)
    merged[1] = newer
    total = size
  end
end
while #merged > max_runs do
  local a, b = merged[1], merged[2]
  table.remove(merged, 1)
  merged[1] = {a[1] + b[1], a[2] + b[2], a[3] + b[3]}
end
local flat = {seq}
for _, run in ipairs(merged) do
  flat[#flat + 1] = run[1]
  flat[#flat + 1] = run[2]
  flat[#flat + 1] = run[3]
end
local encoded = cjson.encode(flat)
redis.call('SET', KEYS[1], encoded, 'PX', ARGV[5])
if KEYS[2] then
  local state = redis.call('GET', KEYS[2])
  if state then
    local ok, entry = pcall(cjson.decode, state)
    if not ok or type(entry) ~= 'table' or entry['generation'] ~= tonumber(ARGV[7])
        or entry['id'] ~= tonumber(ARGV[8]) then
      return {encoded, state}
    end
  end
end
return {encoded}
"""
# Free a permit only if it still holds the caller's token (a late holder frees nothing).
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Publish a state entry unless the one there is a later generation of the same circuit
# (two transitions published out of order never roll the shared state back).
_PUBLISH_LUA = """
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, current = pcall(cjson.decode, raw)
  if ok and type(current) == 'table' and current['id'] == tonumber(ARGV[2])
      and type(current['generation']) == 'number'
      and current['generation'] > tonumber(ARGV[3]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


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
    if isinstance(location, str):
        location = location.split(",")
    if not location:
        return None
    first = str(location[0]).strip()
    return first if first.startswith(("redis://", "rediss://", "unix://")) else None


def mask_redis_url(url: str) -> str:
    """``url`` without its password, for log lines."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}{sep}{rest}"


class RedisLink:
    """One redis-py client with short timeouts, shared by the state cache and the counters.

    A failed operation marks Redis down for ``retry_after`` seconds: until then every
    operation fails at once without touching the network, so an outage (even a server
    that hangs) costs each process at most one timeout per ``retry_after``, never one per
    call. Also reads Redis's ``TIME`` now and then, for the store's shared clock.
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
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = url
        self.label = f"Redis ({mask_redis_url(url)})"
        self.make_key = make_key
        self.timeout = timeout
        # No retries and no backoff: redis-py's defaults retry with growing sleeps, which
        # would turn an outage into seconds per call.
        self.client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self.errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.retry_after = 1.0
        self.round_trips = 0
        self._down_until = 0.0
        self._probe = threading.Lock()
        self._clock_sink = clock_sink
        self._wall = wall
        self._sync_at = 0.0  # time.monotonic() of the next TIME reading

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
        """``MGET`` of store keys; with Redis's ``TIME`` in the same round trip when due."""
        redis_keys = [self.make_key(key) for key in keys]
        if self._clock_sink is None or time.monotonic() < self._sync_at:
            return list(self.run(self.client.mget, redis_keys))
        pipe = self.client.pipeline(transaction=False)
        pipe.mget(redis_keys)
        pipe.time()
        before = self._wall()
        values, (seconds, micros) = self.run(pipe.execute)
        after = self._wall()
        self._sync_at = time.monotonic() + CLOCK_SYNC_INTERVAL
        offset = seconds + micros / 1e6 - (before + after) / 2
        if abs(offset) < 86_400:  # ignore nonsense, as for the database clock
            self._clock_sink(offset)
        return list(values)

    def reset_after_fork(self) -> None:
        """Forget the parent's connections in a forked child (never close them: the parent
        still uses the sockets)."""
        self.client.connection_pool.reset()
        self._probe = threading.Lock()
        self._down_until = 0.0
        self._sync_at = 0.0


def _decode(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:  # not ours (e.g. written by another program): treat as missing
        return None


def _encode(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class RedisStateCache:
    """The store's cache on the Redis path: the subset of Django's cache API it uses.

    State entries are JSON (not pickles), so the Lua scripts can read their generation;
    counters are plain integers, which are JSON too, so one ``MGET`` reads a state entry
    and its window buckets together. Keys go through the Django cache's ``make_key``
    (its ``KEY_PREFIX`` and ``VERSION``), so clearing that cache clears these too.
    """

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._publish = link.client.register_script(_PUBLISH_LUA)

    def get(self, key: str, default: Any = None) -> Any:
        return self.get_many([key]).get(key, default)

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        values = self.link.mget(keys)
        found = {}
        for key, raw in zip(keys, values, strict=True):
            value = _decode(raw)
            if value is not None:
                found[key] = value
        return found

    def _px(self, timeout: float | None) -> int | None:
        return None if timeout is None else max(1, int(timeout * 1000))

    def set(self, key: str, value: Any, timeout: float | None = None) -> None:
        self.link.run(
            self.link.client.set, self.link.make_key(key), _encode(value), px=self._px(timeout)
        )

    def add(self, key: str, value: Any, timeout: float | None = None) -> bool:
        return bool(
            self.link.run(
                self.link.client.set,
                self.link.make_key(key),
                _encode(value),
                px=self._px(timeout),
                nx=True,
            )
        )

    def delete(self, key: str) -> bool:
        return bool(self.link.run(self.link.client.delete, self.link.make_key(key)))

    def publish(self, key: str, entry: dict[str, Any]) -> bool:
        """Write a state entry unless a later generation of the circuit is already there."""
        return bool(
            self.link.run(
                self._publish,
                keys=[self.link.make_key(key)],
                args=[_encode(entry), entry["id"], entry["generation"]],
            )
        )


class RedisCounters(Counters):
    """Window buckets and trial permits in Redis, one round trip per operation.

    ``incr`` is a Lua script (``INCRBY`` + ``PEXPIRE`` of a new key); a permit is a
    ``SET NX PX`` holding a random token, freed by a compare-and-delete script. Values sit
    beside the state entries of :class:`RedisStateCache`, which reads both in one ``MGET``.
    """

    in_cache = True

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        #: Called with the name of the cache call each operation replaces ("incr", "add",
        #: "delete", "get_many"), before it is sent: lets tests count round trips.
        self.on_call: Callable[[str], None] | None = None
        self._record = link.client.register_script(_RECORD_LUA)
        self._count = link.client.register_script(_COUNT_LUA)
        self._release = link.client.register_script(_RELEASE_LUA)

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
    ) -> tuple[int, dict[str, Any] | None]:
        """Add ``delta`` to ``key``; also return the state entry under ``watch`` when its
        generation or circuit id is not ``generation`` / ``circuit_id``."""
        self._note("incr")
        link = self.link
        keys = [link.make_key(key)] + ([link.make_key(watch)] if watch else [])
        result = link.run(
            self._record, keys=keys, args=[delta, max(1, int(ttl * 1000)), generation, circuit_id]
        )
        entry = _decode(result[1]) if len(result) > 1 and watch else None
        return int(result[0]), entry if isinstance(entry, dict) else None

    def add_count(self, change: CountAdd) -> list[int]:
        return self.record_count(change, None, -1, -1)[0]

    def record_count(
        self, change: CountAdd, watch: str | None, generation: int, circuit_id: int
    ) -> tuple[list[int], dict[str, Any] | None]:
        """Apply ``change`` to its count window (one script call, like :meth:`record`)."""
        self._note("incr")
        link = self.link
        keys = [link.make_key(change.key)] + ([link.make_key(watch)] if watch else [])
        args = [
            change.successes,
            change.outcome,
            change.seen,
            change.size,
            max(1, int(change.ttl * 1000)),
            MAX_RUNS,
            generation,
            circuit_id,
        ]
        result = link.run(self._count, keys=keys, args=args)
        entry = _decode(result[1]) if len(result) > 1 and watch else None
        window = parse_count(_decode(result[0]))
        return window, entry if isinstance(entry, dict) else None

    def claim(self, key: str, ttl: float, value: int = 1) -> bool:
        self._note("add")
        link = self.link
        return bool(
            link.run(
                link.client.set, link.make_key(key), value, px=max(1, int(ttl * 1000)), nx=True
            )
        )

    def release(self, key: str, value: int) -> None:
        self._note("delete")
        self.link.run(self._release, keys=[self.link.make_key(key)], args=[value])

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        if not keys:
            return {}
        self._note("get_many")
        values = self.link.run(self.link.client.mget, [self.link.make_key(k) for k in keys])
        found = {key: _decode(raw) for key, raw in zip(keys, values, strict=True)}
        return {key: value for key, value in found.items() if value is not None}

    def delete(self, key: str) -> None:
        self._note("delete")
        self.link.run(self.link.client.delete, self.link.make_key(key))


# -- one circuit in this process --------------------------------------------------------


class CircuitRuntime:
    """One circuit as this process sees it; the store's :class:`CircuitContext`.

    The snapshot (``status``, ``config``) is refreshed from the cache when older than
    ``STATE_TTL``. Successes are counted in memory and flushed with the next failure or
    at most once per ``STATE_TTL``; failures and slow calls are added to the shared
    window at once (one ``incr``).
    """

    def __init__(self, store: CircuitStore, name: str, entry: dict[str, Any]) -> None:
        self.store = store
        self.name = name
        #: Successes (fast, not slow) not yet flushed; ``Breaker.call`` adds to it. Without
        #: a lock: under thread races a success may go uncounted, which only nudges the
        #: failure rate up.
        self.pending = 0
        self._written: set[str] = set()  # counter keys this process knows exist
        # Transitions made while the database was unreachable, oldest first: applied here
        # at once, written (in order, each a compare-and-set) when the database returns.
        self._unsaved: list[UnsavedTransition] = []
        #: The clock snapshots and the fast-path plan are timed with (the store's).
        self.clock = store.clock
        self._success_can_open = False
        self._fresh_until = 0.0
        self._apply(entry)
        self._stale_at = store.clock() + store.ttl
        self._flush_at = self._stale_at

    # -- the plan Breaker.call follows without calling us ---------------------------------
    @property
    def _stale_at(self) -> float:
        """When (on :attr:`clock`) this snapshot stops being trusted."""
        return self._fresh_until

    @_stale_at.setter
    def _stale_at(self, value: float) -> None:
        self._fresh_until = value
        self._plan_fast_paths()

    def _plan_fast_paths(self) -> None:
        """Precompute what a guarded call needs, as plain attributes (DESIGN §4's hot path:
        ``Breaker.call`` reads them with one clock reading and no method call).

        * ``admit_until``: until then a call may pass without a permit (a fresh snapshot in
          CLOSED, FORCED_CLOSED or DISABLED);
        * ``count_token``: the generation when such a call's plain success only needs
          ``pending += 1`` (no slow-call timing, successes cannot open the circuit, not
          DISABLED), else -1;
        * ``reject_until``: until then a call is rejected outright (a fresh snapshot in
          FORCED_OPEN, or OPEN before ``retry_at``), with ``reject_state``, and
          ``retry_clock``: when (on :attr:`clock`) calls may pass again, None if unknown.
        """
        fresh = self._fresh_until
        status = self._status
        self.admit_until = fresh if self._free else -math.inf
        counts = not self._disabled and not self._success_can_open and self._slow_after is None
        self.count_token = self._generation if self._free and counts else -1
        self.reject_state = status.state
        self.reject_until, self.retry_clock = -math.inf, None
        if status.state is State.FORCED_OPEN:
            self.reject_until = fresh
        elif status.state is State.OPEN and status.retry_at is not None:
            self.retry_clock = self.clock() + (status.retry_at - self.store.now())
            self.reject_until = min(fresh, self.retry_clock)

    def _apply(self, entry: dict[str, Any]) -> None:
        status = status_from_entry(entry)
        config = CircuitConfig.from_mapping(entry["config"])
        previous = getattr(self, "_status", None)
        self.circuit_id: int = entry["id"]
        if (
            previous is None
            or previous.generation != status.generation
            or (config != getattr(self, "config", None))
        ):
            self.window: SharedWindow = window_for(
                generation_prefix(self.name, status.generation), config
            )
            self.pending = 0
        self.config = config
        self._slow_after = config.slow_call_duration
        self._status = status
        # Plain attributes for the fast path (enum hashing and lookups cost more).
        self._generation = status.generation
        self._free = status.state in FREE_STATES
        self._disabled = status.state is State.DISABLED
        self._closed = status.state is State.CLOSED
        self._watch(self.window.estimate(self.store.now()))

    def _watch(self, estimate: Snapshot) -> None:
        """Note whether more successes could open the circuit (rates at the threshold)."""
        config = self.config
        calls = max(estimate.calls, 1)
        self._success_can_open = bool(
            estimate.failures and estimate.failures * 100 >= config.failure_rate_threshold * calls
        ) or bool(
            config.slow_call_duration is not None
            and estimate.slow
            and estimate.slow * 100 >= config.slow_call_rate_threshold * calls
        )
        self._plan_fast_paths()

    # -- CircuitContext ------------------------------------------------------------------
    @property
    def status(self) -> CircuitStatus:
        if self.clock() >= self._stale_at:
            self.refresh()
        return self._status

    def now(self) -> float:
        return self.store.now()

    def record(self, failed: bool, slow: bool) -> Snapshot:
        if failed or slow:
            return self._push(Snapshot(1, int(failed), int(slow)))
        self.pending += 1
        if self.clock() >= self._flush_at:
            return self._push(Snapshot())
        estimate = self.window.estimate(self.now()) + Snapshot(self.pending)
        if evaluate(estimate, self.config).opens:
            # Our own successes could tip the window (S F F F S): check the real totals.
            return self._push(Snapshot())
        return estimate

    def _push(self, outcome: Snapshot) -> Snapshot:
        """Add pending successes, then ``outcome``, to the shared window: one round trip."""
        pending, self.pending = self.pending, 0
        now = self.now()
        self._flush_at = self.clock() + self.store.ttl
        if not (pending or outcome.calls):
            return self.window.estimate(now)
        change = self.window.change(outcome, pending, now)
        generation = self._generation
        value = self.store.add_outcome(self, change, change.key in self._written)
        if self._generation != generation:
            # The same round trip told us another process moved the circuit on: these
            # counts belong to a period that is over, and must not trip the new one.
            return self.window.estimate(now)
        if value is not None:
            if len(self._written) > 64:
                self._written.clear()
            self._written.add(change.key)
            snapshot = self.window.added(change, value, now)
        else:  # shared store unreachable: decide on what this process knows
            snapshot = self.window.add_locally(change, now)
        self._watch(snapshot)
        return snapshot

    # -- the fast path (no allocation, no I/O) ------------------------------------------
    def fast_admit(self) -> int:
        """The generation when a call may pass without I/O or a permit, else -1.

        True for a fresh snapshot in CLOSED, FORCED_CLOSED or DISABLED; everything else
        (a stale snapshot, OPEN, HALF_OPEN, FORCED_OPEN) takes :meth:`acquire`.
        """
        if self._free and self.clock() < self._stale_at:
            return self._generation
        return -1

    def fast_success(self, generation: int, duration: float) -> bool:
        """Count a success admitted by :meth:`fast_admit`; False means "use on_result()".

        Declines when the circuit moved on, the call was slow, or more successes could
        open the circuit (so :meth:`record` must evaluate the window exactly).
        """
        if generation != self._generation or self._success_can_open:
            return False
        slow_after = self._slow_after
        if slow_after is not None and duration >= slow_after:
            return False
        if self._disabled:
            return True
        self.pending += 1
        if self.clock() >= self._flush_at:
            snapshot = self._push(Snapshot())
            if self._closed:
                Closed.check_window(self, snapshot)
        return True

    def acquire_trial(self) -> tuple[int, int] | None:
        prefix = generation_prefix(self.name, self._status.generation)
        token = random.getrandbits(62) or 1
        for slot in range(self.config.half_open_max_calls):
            key = f"{prefix}/trial{slot}"
            if self.store.counter_claim(key, self.config.trial_lease, token):
                return slot, token
        return None

    def complete_trial(self, slot: int, token: int, succeeded: bool) -> int:
        prefix = generation_prefix(self.name, self._status.generation)
        if not succeeded:
            self.store.counter_release(f"{prefix}/trial{slot}", token)
            return 0
        self.store.counter_claim(f"{prefix}/ok{slot}", TRIAL_SUCCESS_TTL)
        keys = [f"{prefix}/ok{i}" for i in range(self.config.half_open_max_calls)]
        return len(self.store.counter_get_many(keys))

    def transition(self, new: CircuitStatus, reason: str, snapshot: Snapshot | None) -> bool:
        return self.store.persist_transition(self, new, reason, snapshot)

    # -- used by Breaker ---------------------------------------------------------------
    @property
    def retry_after(self) -> float | None:
        return self.status.retry_after(self.now())

    def acquire(self) -> Permit:
        """Admit a call or raise CircuitOpenError."""
        return behaviour_for(self.status.state).acquire(self)

    def on_result(self, permit: Permit, outcome: Outcome, duration: float) -> None:
        """Report the outcome of a call admitted by :meth:`acquire`."""
        settle(self, permit, outcome, duration)

    def acquire_needs_io(self) -> bool:
        """True when :meth:`acquire` may touch the cache or database (async callers)."""
        if self.store.clock() >= self._stale_at:
            return True
        status = self._status
        if status.state is State.HALF_OPEN:
            return True
        return status.state is State.OPEN and (status.retry_after(self.now()) or 0) <= 0

    def result_needs_io(self, permit: Permit, outcome: Outcome, duration: float) -> bool:
        """True when :meth:`on_result` may touch the cache or database (async callers)."""
        if self.store.clock() >= self._stale_at:
            return True  # settle() reads ``status``, which refreshes a stale snapshot
        if outcome is Outcome.IGNORED and permit.trial_slot is None:
            return False
        if permit.state is State.DISABLED:
            return False
        if outcome is Outcome.FAILURE or permit.trial_slot is not None:
            return True
        if self.config.is_slow(duration) or self.store.clock() >= self._flush_at:
            return True
        return self._success_can_open

    def refresh(self) -> None:
        """Re-read the shared state (and window buckets) from the cache."""
        self.store.refresh(self)

    def snapshot(self) -> Snapshot:
        """The window's totals as this process last saw them (plus its pending successes)."""
        return self.window.estimate(self.now()) + Snapshot(self.pending)


# -- the process-wide store ---------------------------------------------------------------


class CircuitStore:
    """This process's view of every circuit, and all reads and writes behind it."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sync_db_clock: bool = True,
    ) -> None:
        self.sync_db_clock = sync_db_clock
        self.clock = clock  # for snapshot age and flush timing (never compared across hosts)
        self.wall = wall
        self.offset = 0.0  # database clock minus this host's wall clock
        self.ttl = float(conf.get("STATE_TTL"))
        self.cache_alias = conf.get("CACHE")
        self.db_alias = conf.get("DATABASE")
        self.cache: Any = caches[self.cache_alias]
        backend = f"{type(self.cache).__module__}.{type(self.cache).__qualname__}"
        self.counters: Counters
        #: The direct Redis client (None on the generic cache path).
        self.redis: RedisLink | None = None
        redis_url = redis_url_for(self.cache_alias)
        if redis_url:
            self.redis = RedisLink(
                redis_url,
                make_key=self.cache.make_key,
                timeout=float(conf.get("REDIS_TIMEOUT")),
                clock_sink=self._set_offset if sync_db_clock else None,
                wall=wall,
            )
            self.cache = RedisStateCache(self.redis)
            self.counters = RedisCounters(self.redis)
        elif backend in LOCAL_CACHE_BACKENDS:
            self.counters = CacheCounters(self.cache)
        else:
            self.counters = DatabaseCounters(self.db_alias, self.now)
        self._runtimes: dict[str, CircuitRuntime] = {}
        self._lock = threading.RLock()
        self._saving = threading.Lock()  # one thread at a time writes unsaved transitions
        self._down: set[str] = set()

    def _set_offset(self, offset: float) -> None:
        self.offset = offset

    def after_fork(self) -> None:
        """Drop connections inherited from the parent process (called in a forked child)."""
        if self.redis is not None:
            self.redis.reset_after_fork()

    def now(self) -> float:
        """Shared time: this host's clock corrected to Redis's (on the Redis path) or the
        database's."""
        return self.wall() + self.offset

    # -- outages ---------------------------------------------------------------------
    def _service(self, what: str) -> str:
        # On the Redis path the state cache and the counters are one server: one outage.
        if self.redis is not None and what in ("cache", "shared counters"):
            return self.redis.label
        return what

    def _failed(self, what: str, exc: BaseException) -> None:
        what = self._service(what)
        if what not in self._down:
            self._down.add(what)
            logger.warning(
                "circuitbreaker: %s unreachable (%s: %s); deciding on this process's own "
                "counts until it returns",
                what,
                type(exc).__name__,
                exc,
            )

    def _recovered(self, what: str) -> None:
        what = self._service(what)
        if what in self._down:
            self._down.discard(what)
            logger.warning("circuitbreaker: %s reachable again", what)

    def _counters_call(self, default: Any, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            result = fn(*args)
        except Exception as exc:  # any backend error: the breaker must not fail the call
            self._failed("shared counters", exc)
            return default
        if self._down:
            self._recovered("shared counters")
        return result

    def counter_incr(self, key: str, delta: int, ttl: float, known: bool = True) -> int | None:
        return self._counters_call(None, self.counters.incr, key, delta, ttl, known)

    def add_outcome(
        self, runtime: CircuitRuntime, change: BucketAdd | CountAdd, known: bool
    ) -> Any:
        """Apply ``change`` to ``runtime``'s shared window: one round trip. Returns the
        bucket's new value or the count window, or None when the counters are unreachable.

        On the Redis path the same round trip returns the circuit's state entry when another
        process has moved it on; ``runtime`` takes it at once.
        """
        counters = self.counters
        if not isinstance(counters, RedisCounters):
            if isinstance(change, CountAdd):
                return self._counters_call(None, counters.add_count, change)
            return self.counter_incr(change.key, change.delta, change.ttl, known)
        watch = (state_key(runtime.name), runtime._generation, runtime.circuit_id)
        if isinstance(change, CountAdd):
            result = self._counters_call(None, counters.record_count, change, *watch)
        else:
            result = self._counters_call(
                None, counters.record, change.key, change.delta, change.ttl, *watch
            )
        if result is None:
            return None
        value, entry = result
        if entry is not None:
            self._adopt(runtime, entry)
        return value

    def _adopt(self, runtime: CircuitRuntime, entry: dict[str, Any]) -> None:
        """Take a shared state entry if it is later than what ``runtime`` holds."""
        try:
            newer = entry["id"] != runtime.circuit_id or entry["generation"] > runtime._generation
        except (KeyError, TypeError):
            return
        if not newer:
            return
        try:
            runtime._apply(entry)
        except (KeyError, TypeError, ValueError):  # not an entry of ours: ignore it
            return
        runtime._unsaved.clear()  # the fleet moved on: our offline moves would lose
        runtime._stale_at = self.clock() + self.ttl

    def counter_claim(self, key: str, ttl: float, value: int = 1) -> bool:
        # Unreachable store: admit the trial (per-process), rather than stick in HALF_OPEN.
        return bool(self._counters_call(True, self.counters.claim, key, ttl, value))

    def counter_release(self, key: str, value: int) -> None:
        self._counters_call(None, self.counters.release, key, value)

    def counter_get_many(self, keys: list[str]) -> dict[str, int]:
        return self._counters_call({}, self.counters.get_many, keys)

    def counter_delete(self, key: str) -> None:
        self._counters_call(None, self.counters.delete, key)

    # -- runtimes ---------------------------------------------------------------------
    def runtime(self, name: str) -> CircuitRuntime:
        """The runtime of ``name`` in this process (loaded, or created, on first use)."""
        runtime = self._runtimes.get(name)
        if runtime is None:
            with self._lock:
                runtime = self._runtimes.get(name)
                if runtime is None:
                    runtime = self._load_runtime(name)
                    self._runtimes[name] = runtime
        return runtime

    def _load_runtime(self, name: str) -> CircuitRuntime:
        try:
            entry = self.cache.get(state_key(name))
        except Exception as exc:
            self._failed("cache", exc)
            entry = None
        if entry is None:
            try:
                entry = self.load_entry(name)
            except DjangoDatabaseError as exc:
                # Neither the cache nor the database can say what this circuit is: guard
                # calls with its settings in this process until one of them answers.
                self._failed("database", exc)
                self._drop_broken_connection()
                return CircuitRuntime(self, name, provisional_entry(name))
            if entry.get("name_override"):
                return self.runtime(entry["name_override"])
        return CircuitRuntime(self, name, entry)

    def load_entry(self, name: str, create: bool = True) -> dict[str, Any]:
        """Read a circuit from the database (creating it when allowed) and fill the cache."""
        from circuitbreaker_app.models import Circuit

        queryset = Circuit.objects.using(self.db_alias).annotate(db_now=Now())
        started = self.wall()
        row = queryset.filter(name=name).first()
        self._observe_db_time(getattr(row, "db_now", None), started)
        if row is None:
            if not create:
                raise UnknownCircuitError(f"no circuit named {name!r}")
            row = self._create(name)
            if row.name != name:
                return {"name_override": row.name}
        entry = entry_from_row(row)
        try:
            self.cache.add(state_key(name), entry, timeout=None)
        except Exception as exc:
            self._failed("cache", exc)
        return entry

    def _observe_db_time(self, db_now: datetime | None, started: float) -> None:
        if self.redis is not None:
            return  # Redis's TIME is the one clock (RedisLink.mget)
        if not self.sync_db_clock or db_now is None or db_now.tzinfo is None:
            return
        offset = db_now.timestamp() - (started + self.wall()) / 2
        if abs(offset) < 86_400:  # ignore nonsense (a misconfigured time zone)
            self.offset = offset

    def _create(self, name: str) -> Any:
        from circuitbreaker_app.models import Circuit, validate_circuit_name

        if not conf.get("AUTO_CREATE"):
            raise UnknownCircuitError(
                f"no circuit named {name!r}: define it in CIRCUITBREAKER['CIRCUITS'] or the "
                "admin, or set CIRCUITBREAKER['AUTO_CREATE'] = True"
            )
        validate_circuit_name(name)
        manager = Circuit.objects.using(self.db_alias)
        if name != conf.OVERFLOW_CIRCUIT and manager.count() >= int(conf.get("MAX_CIRCUITS")):
            if "max circuits" not in self._down:
                self._down.add("max circuits")
                logger.warning(
                    "circuitbreaker: MAX_CIRCUITS (%s) reached; %r and later new names share "
                    "the circuit %r",
                    conf.get("MAX_CIRCUITS"),
                    name,
                    conf.OVERFLOW_CIRCUIT,
                )
            return self._get_or_create(conf.OVERFLOW_CIRCUIT)
        return self._get_or_create(name)

    def _get_or_create(self, name: str) -> Any:
        from circuitbreaker_app.models import Circuit

        manager = Circuit.objects.using(self.db_alias)
        circuit = Circuit(name=name, **(conf.get("DEFAULTS") or {}))
        circuit.full_clean(validate_unique=False)
        try:
            with transaction.atomic(using=self.db_alias):
                circuit.save(using=self.db_alias, force_insert=True)
        except IntegrityError:
            circuit = manager.get(name=name)
        return circuit

    def refresh(self, runtime: CircuitRuntime) -> None:
        """Flush this process's pending successes (one write), then re-read the circuit's
        state entry and window (one ``get_many``).

        Transitions this process made while the database was down are written first; until
        they are, the circuit keeps its own (later) state rather than the shared one.
        """
        if runtime._unsaved:
            self.save_unsaved(runtime)
        if runtime.pending:
            # Breaker.call counts successes without looking at the clock: they are flushed
            # here, once per STATE_TTL, when the stale snapshot sends a call this way.
            runtime._push(Snapshot())
        now = self.now()
        key = state_key(runtime.name)
        window_keys = runtime.window.read_keys(now) if self.counters.in_cache else []
        runtime._stale_at = self.clock() + self.ttl
        try:
            values = self.cache.get_many([key, *window_keys])
        except Exception as exc:
            self._failed("cache", exc)
            if runtime.circuit_id != PROVISIONAL_ID:
                return  # keep the last known state
            values, window_keys = {}, []  # a circuit built from settings: ask the database
        else:
            self._recovered("cache")
        entry = values.get(key)
        if entry is None:
            try:
                entry = self.load_entry(runtime.name)
            except DjangoDatabaseError as exc:
                self._failed("database", exc)
                self._drop_broken_connection()
                return
            if entry.get("name_override"):
                return
        if runtime._unsaved:
            self._adopt(runtime, entry)  # only a later state than our own offline moves
        else:
            runtime._apply(entry)
        if window_keys:
            runtime.window.absorb(values, now)
            runtime._watch(runtime.window.estimate(now))

    def loaded(self, name: str) -> CircuitRuntime | None:
        """The runtime of ``name`` if this process already has it (never any I/O)."""
        return self._runtimes.get(name)

    def refresh_rows(self, rows: Iterable[Any]) -> dict[str, CircuitRuntime]:
        """Runtimes of these ``Circuit`` rows with fresh windows, for admin pages and the
        status endpoint (never the hot path).

        A runtime this process lacks is built from its row (no read of its own); the state
        entries and window buckets of all circuits come back in one ``get_many`` (plus one
        counters query when the counters live in the database). Whichever of row and cache
        entry has the higher generation wins.
        """
        now = self.now()
        runtimes: dict[str, CircuitRuntime] = {}
        for row in rows:
            entry = entry_from_row(row)
            runtime = self._runtimes.get(row.name)
            if runtime is None or runtime.name != row.name:  # new here, or was overflowed
                with self._lock:
                    runtime = self._runtimes.get(row.name)
                    if runtime is None or runtime.name != row.name:
                        runtime = CircuitRuntime(self, row.name, entry)
                        self._runtimes[row.name] = runtime
            # A runtime holding transitions not yet saved (database was down) keeps its own.
            if not getattr(runtime, "_unsaved", None) and (
                runtime._status.generation <= row.generation
            ):
                runtime._apply(entry)
            runtimes[row.name] = runtime
        window_keys = {name: rt.window.read_keys(now) for name, rt in runtimes.items()}
        generations = {name: rt._status.generation for name, rt in runtimes.items()}
        keys = [state_key(name) for name in runtimes]
        if self.counters.in_cache:
            keys += [key for names in window_keys.values() for key in names]
        try:
            values = dict(self.cache.get_many(keys)) if keys else {}
        except Exception as exc:
            self._failed("cache", exc)
            return runtimes
        if not self.counters.in_cache:
            all_window_keys = [key for names in window_keys.values() for key in names]
            values.update(self.counter_get_many(all_window_keys))
        stale_at = self.clock() + self.ttl
        for name, runtime in runtimes.items():
            entry = values.get(state_key(name))
            if (
                entry is not None
                and not getattr(runtime, "_unsaved", None)
                and entry.get("generation", -1) > runtime._status.generation
            ):
                runtime._apply(entry)
            if runtime._status.generation == generations[name]:
                runtime.window.absorb(values, now)
            runtime._stale_at = stale_at
        return runtimes

    def reload(self, runtime: CircuitRuntime) -> None:
        """Re-read a circuit from the database (after losing a compare-and-set)."""
        if runtime._unsaved:
            self.save_unsaved(runtime)  # reloads by itself when the fleet moved on
            return
        try:
            entry = self.load_entry(runtime.name, create=False)
        except UnknownCircuitError:
            # Deleted meanwhile: the next call re-reads it (and re-creates it if allowed).
            self.definition_deleted(runtime.name)
            runtime._stale_at = 0.0
            return
        except DjangoDatabaseError as exc:
            self._failed("database", exc)
            self._drop_broken_connection()
            return
        current = self._cache_get(state_key(runtime.name))
        if current is None or current.get("generation", -1) < entry["generation"]:
            self._cache_set(state_key(runtime.name), entry)
        runtime._apply(entry)
        runtime._stale_at = self.clock() + self.ttl

    def _cache_get(self, key: str) -> Any:
        try:
            return self.cache.get(key)
        except Exception as exc:
            self._failed("cache", exc)
            return None

    def _publish_entry(self, key: str, entry: dict[str, Any]) -> None:
        """Write a state entry; on Redis never over a later generation of the circuit."""
        publish = getattr(self.cache, "publish", None)
        if publish is None:
            self._cache_set(key, entry)
            return
        try:
            publish(key, entry)
        except Exception as exc:
            self._failed("cache", exc)

    def _cache_set(self, key: str, value: Any) -> None:
        try:
            self.cache.set(key, value, timeout=None)
        except Exception as exc:
            self._failed("cache", exc)

    # -- transitions --------------------------------------------------------------------
    def persist_transition(
        self,
        runtime: CircuitRuntime,
        new: CircuitStatus,
        reason: str,
        snapshot: Snapshot | None,
        actor: Any = None,
    ) -> bool:
        """Compare-and-set ``runtime``'s circuit to ``new``; record the event; publish.

        Returns False, and re-reads the circuit, when another process moved it first (or
        another thread of this one did: ``new`` must follow the generation we hold).
        With the database down the move is applied here at once and written when the
        database returns (:meth:`save_unsaved`).
        """
        old = runtime._status
        if new.generation != old.generation + 1:
            return False
        move = UnsavedTransition(old, new, reason, snapshot, actor)
        if runtime._unsaved:  # earlier moves still wait for the database: keep the order
            runtime._unsaved.append(move)
            runtime._apply(_entry_with(runtime, new))
            return True
        try:
            won = self._write_transition(runtime, move)
        except DjangoDatabaseError as exc:
            # The database is down: this process moves on its own and says so once.
            self._failed("database", exc)
            self._drop_broken_connection()
            runtime._unsaved.append(move)
            runtime._apply(_entry_with(runtime, new))
            return True
        self._recovered("database")
        if not won:
            self.reload(runtime)
            return False
        runtime._apply(_entry_with(runtime, new))
        if isinstance(self.counters, DatabaseCounters) and new.state is not State.HALF_OPEN:
            self._counters_call(None, self.counters.purge_expired)
        return True

    def _write_transition(self, runtime: CircuitRuntime, move: UnsavedTransition) -> bool:
        """One ``UPDATE … WHERE generation = g`` and one event row; publish on commit.

        True when this write won; False when the row was at another generation.
        """
        from circuitbreaker_app.models import Circuit, CircuitEvent

        old, new, snapshot = move.old, move.new, move.snapshot
        with transaction.atomic(using=self.db_alias):
            updated = (
                Circuit.objects.using(self.db_alias)
                .filter(pk=runtime.circuit_id, generation=old.generation)
                .update(
                    state=new.state.value,
                    generation=new.generation,
                    open_count=new.open_count,
                    opened_at=_datetime(new.opened_at),
                    retry_at=_datetime(new.retry_at),
                    changed_at=_datetime(new.changed_at),
                )
            )
            if not updated:
                return False
            CircuitEvent.objects.using(self.db_alias).create(
                circuit_id=runtime.circuit_id,
                circuit_name=runtime.name,
                created_at=_datetime(new.changed_at),
                from_state=old.state.value,
                to_state=new.state.value,
                reason=move.reason[:200],
                generation=new.generation,
                failure_rate=snapshot.failure_rate if snapshot else None,
                slow_call_rate=snapshot.slow_call_rate if snapshot else None,
                calls=snapshot.calls if snapshot else None,
                actor=move.actor,
            )
            entry = _entry_with(runtime, new)
            transaction.on_commit(
                partial(self._published, runtime.name, entry, old, new, move.reason),
                using=self.db_alias,
            )
        return True

    def save_unsaved(self, runtime: CircuitRuntime) -> None:
        """Write the transitions made while the database was down, oldest first.

        Each is a compare-and-set from the generation before it, so when another process
        wrote its own transition meanwhile ours lose: they are dropped and the circuit is
        re-read (one event row per real transition, fleet-wide). Stops at the first
        database error and keeps the rest for the next refresh.
        """
        if not self._saving.acquire(blocking=False):
            return  # another thread of this process is writing them
        lost = False
        try:
            while runtime._unsaved:
                move = runtime._unsaved[0]
                try:
                    won = self._write_transition(runtime, move)
                except DjangoDatabaseError as exc:
                    self._failed("database", exc)
                    self._drop_broken_connection()
                    return
                self._recovered("database")
                if not won:
                    runtime._unsaved.clear()
                    lost = True
                    break
                runtime._unsaved.pop(0)
                logger.info(
                    "circuit %r: transition %s -> %s made while the database was down is saved",
                    runtime.name,
                    move.old.state.value,
                    move.new.state.value,
                )
        finally:
            self._saving.release()
        if lost:
            self.reload(runtime)  # another process's transition won: take what it decided

    def _drop_broken_connection(self) -> None:
        """After a database error, let the next query reconnect (outside transactions)."""
        connection = connections[self.db_alias]
        if connection.in_atomic_block:
            return
        try:
            connection.close_if_unusable_or_obsolete()
        except Exception:  # a dead connection may fail to close: drop it all the same
            connection.connection = None

    def _published(
        self,
        name: str,
        entry: dict[str, Any],
        old: CircuitStatus,
        new: CircuitStatus,
        reason: str,
    ) -> None:
        from circuitbreaker_app.models import Circuit
        from circuitbreaker_app.signals import state_changed

        self._publish_entry(state_key(name), entry)
        logger.info("circuit %r: %s -> %s (%s)", name, old.state.value, new.state.value, reason)
        state_changed.send(
            sender=Circuit, name=name, old_state=old.state, new_state=new.state, reason=reason
        )

    def move_to(self, name: str, state: State, reason: str, actor: Any = None) -> bool:
        """An operator's transition (force, disable, reset); False when already there."""
        runtime = self.runtime(name)
        for _attempt in range(5):
            self.reload(runtime)
            old = runtime._status
            check_transition(old.state, state, operator=True)
            if old.state is state and state is not State.CLOSED:
                return False
            new = old.moved_to(state, self.now(), runtime.config)
            if self.persist_transition(runtime, new, reason, runtime.snapshot(), actor=actor):
                return True
        return False

    def advance(self, name: str, expected: State, new: State, reason: str) -> bool:
        """A transition the breaker makes by itself, done by a task (e.g. a probe).

        Re-reads the circuit from the database first: when it is no longer in
        ``expected`` (or, for OPEN → HALF_OPEN, its ``retry_at`` has not passed), this is
        a no-op returning False, so early, late or duplicate deliveries change nothing.
        """
        check_transition(expected, new)
        runtime = self.runtime(name)
        self.reload(runtime)
        old = runtime._status
        if old.state is not expected:
            return False
        if expected is State.OPEN and (old.retry_after(self.now()) or 0.0) > 0:
            return False
        return self.persist_transition(
            runtime, old.moved_to(new, self.now(), runtime.config), reason, None
        )

    def definition_deleted(self, name: str) -> None:
        """Drop a deleted circuit's shared entry; processes re-read it on their next refresh."""
        try:
            self.cache.delete(state_key(name))
        except Exception as exc:
            self._failed("cache", exc)

    def definition_saved(self, circuit: Any) -> None:
        """Publish an edited definition to every process (on commit)."""
        key = state_key(circuit.name)

        def publish() -> None:
            try:
                entry = self.load_entry(circuit.name, create=False)
            except (DjangoDatabaseError, UnknownCircuitError):
                return
            self._publish_entry(key, entry)
            runtime = self._runtimes.get(circuit.name)
            if runtime is not None:
                runtime._apply(entry)

        transaction.on_commit(publish, using=circuit._state.db or self.db_alias)

    def forget(self, names: Iterable[str] | None = None) -> None:
        """Drop this process's snapshots (all, or of ``names``)."""
        with self._lock:
            if names is None:
                self._runtimes.clear()
            else:
                for name in names:
                    self._runtimes.pop(name, None)

    def flush(self) -> None:
        """Push every pending success count to the shared window now."""
        for runtime in list(self._runtimes.values()):
            if runtime.pending:
                runtime._push(Snapshot())


@dataclass(frozen=True, slots=True)
class UnsavedTransition:
    """A transition waiting to be written: ``old`` → ``new`` and what the event records."""

    old: CircuitStatus
    new: CircuitStatus
    reason: str
    snapshot: Snapshot | None
    actor: Any = None


def _definition(config: CircuitConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(config)


def _entry_with(runtime: CircuitRuntime, status: CircuitStatus) -> dict[str, Any]:
    return {
        "id": runtime.circuit_id,
        "state": status.state.value,
        "generation": status.generation,
        "open_count": status.open_count,
        "opened_at": status.opened_at,
        "retry_at": status.retry_at,
        "changed_at": status.changed_at,
        "config": _definition(runtime.config),
    }


# -- the process's store ------------------------------------------------------------------

_store: CircuitStore | None = None
_store_lock = threading.Lock()


def get_store() -> CircuitStore:
    """This process's store, created on first use from the current settings."""
    global _store
    store = _store
    if store is None:
        with _store_lock:
            if _store is None:
                _store = CircuitStore()
            store = _store
    return store


def reset_store(store: CircuitStore | None = None) -> None:
    """Forget this process's store (settings changed, fork, or a test installs its own)."""
    global _store
    _store = store


def definition_saved(circuit: Any) -> None:
    """Called by ``Circuit.save()``."""
    get_store().definition_saved(circuit)


def circuit_deleted(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    """``post_delete`` receiver: forget the circuit's shared entry once the delete commits."""
    transaction.on_commit(partial(get_store().definition_deleted, instance.name), using=using)


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in {"CIRCUITBREAKER", "CACHES", "DATABASES"}:
        reset_store()


setting_changed.connect(_on_setting_changed)


def _after_fork_in_child() -> None:
    """A forked worker (gunicorn, Celery prefork) starts with no snapshots, batches or
    connections of its parent: the parent's Redis connections are abandoned, not closed
    (the parent still uses them), and the next guarded call builds a fresh store."""
    global _store
    old, _store = _store, None
    if old is not None:
        old.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
