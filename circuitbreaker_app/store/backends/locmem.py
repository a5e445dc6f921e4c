"""Counters in this process's LocMem cache: exact for one process (tests, a one-process
dev server); other processes never see them (a system check warns with Celery).

The values live in the LocMem cache itself (``cache.get``/``clear()`` see them, and
the cache's cull and expiry apply), but a failure's write does not go through Django's
cache API: that validates the key character by character and unpickles and re-pickles
the window, which made a failure cost ~100 µs. The counters take the cache's own lock
and dict (the same the API uses, so both stay atomic together) and skip reading back a
window this process wrote last (its pickle is still the very object in the cache).
Counters made without ``storage`` (a test double of a cache) use the cache's API.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from circuitbreaker_app.store.backends.base import Counters, Tally, Watch, whole_seconds
from circuitbreaker_app.store.runs import apply_count, grown_by, parse_count
from circuitbreaker_app.store.windows import BucketAdd, CountAdd

if TYPE_CHECKING:
    from circuitbreaker_app.store.entry import CircuitEntry

_COUNT_LOCK = threading.Lock()
#: Count windows whose pickle this process wrote last, kept to skip unpickling them.
_KNOWN_WINDOWS = 64


class LocMemCounters(Counters):
    """Counters in this process's LocMem cache (its ``incr`` and ``add`` are atomic)."""

    in_cache = True

    def __init__(
        self, cache: Any, note: Callable[[str], None] | None = None, storage: Any = None
    ) -> None:
        #: The cache the other operations go through (maybe a counting wrapper).
        self.cache = cache
        #: Called with the name of the cache call each direct operation stands for
        #: ("get", "set", "incr"): a counting wrapper's ``note`` (tests and benchmarks).
        self.note = note
        #: Django's LocMem cache whose storage the direct operations use (``connect()``
        #: passes it), or None: every operation goes through ``cache``'s API.
        self.storage = storage
        self._data: Any = None
        if storage is not None:
            self._data, self._expiry = storage._cache, storage._expire_info
            self._lock = storage._lock
            self._make_key = storage.make_key
        #: cache key → (pickle, window, its calls) of the windows these counters wrote last.
        self._known: dict[str, tuple[bytes, list[int], int]] = {}
        #: key → cache key (Django's key function, made once per key).
        self._keys: dict[str, str] = {}

    def incr(self, key: str, delta: int, ttl: float, known: bool = True) -> int:
        if self._data is not None:
            return self._incr_direct(key, delta, ttl)
        ttl = whole_seconds(ttl)
        if not known and self.cache.add(key, delta, timeout=ttl):
            return delta
        try:
            value = self.cache.incr(key, delta)
        except ValueError:  # missing key: create it, unless another thread just did
            if self.cache.add(key, delta, timeout=ttl):
                return delta
            value = self.cache.incr(key, delta)
        except TypeError:  # not a number: a malformed value is a miss, overwritten
            value = None
        if type(value) is not int or value < delta:  # anything but a count is overwritten
            self.cache.set(key, delta, timeout=ttl)
            return delta
        return value

    def claim(self, key: str, ttl: float, value: int = 1) -> bool:
        if self.cache.add(key, value, timeout=whole_seconds(ttl)):
            return True
        if type(self.cache.get(key)) is int:
            return False  # a holder has it
        # Not a permit (a malformed value): a miss, taken over.
        self.cache.set(key, value, timeout=whole_seconds(ttl))
        return True

    def release(self, key: str, value: int) -> None:
        # get + delete: a lease that expires and is re-taken in between is freed early,
        # a window of one round trip (the Redis path will make this atomic).
        if self.cache.get(key) == value:
            self.cache.delete(key)

    def add_count(self, change: CountAdd) -> list[int]:
        if self._data is not None:
            return self.add(change, True, None)[0]
        # get + set under a lock: atomic, since no other process sees a LocMem cache.
        with _COUNT_LOCK:
            window = parse_count(self.cache.get(change.key))
            window = apply_count(window, change.successes, change.outcome, change.seen, change.size)
            self.cache.set(change.key, window, timeout=whole_seconds(change.ttl))
        return window

    def add(
        self,
        change: BucketAdd | CountAdd,
        known: bool,
        watch: Watch | None,
        tally: tuple[str, Tally] | None = None,
    ) -> tuple[Any, CircuitEntry | None]:
        """The contract's ``add``. A count window (a failure's write) goes straight into
        the storage: the cache's ``get`` and ``set`` under its lock, without key
        validation; a window these counters wrote last (its pickle is still the very
        object in the cache) is not unpickled, and a failure that joins its newest run is
        a copy with three numbers changed (:func:`grown_by`)."""
        if self._data is None or tally is not None or type(change) is not CountAdd:
            return super().add(change, known, watch, tally)
        key = self._keys.get(change.key)
        if key is None:
            key = self._cache_key(change.key)
        if self.note is not None:
            self.note("get")
            self.note("set")
        ttl = change.ttl
        data, expiry = self._data, self._expiry
        with self._lock:
            now = time.time()
            # The cache's get: a missing or expired key is None (and an expired one goes).
            expires = expiry.get(key, -1)
            if expires is not None and expires <= now:
                if expires != -1:
                    del data[key], expiry[key]
                raw = None
            else:
                raw = data[key]
            last = self._known.get(key)
            successes, outcome = change.successes, change.outcome
            window = None
            if last is not None and raw is last[0]:
                # What these counters wrote last (nobody wrote since): apply_count's output,
                # holding last[2] calls; the writer's prediction if it knew that window.
                if change.expected is not None and change.known is last[1]:
                    window = change.expected
                    calls = last[2] + 1
                elif outcome and not successes:
                    window = grown_by(last[1], last[2], outcome, change.size)
                    calls = last[2] + 1
                if window is None:
                    window = apply_count(last[1], successes, outcome, change.seen, change.size)
                    calls = sum(window[1::3])
            else:
                stored = parse_count(None if raw is None else _unpickle(raw))
                window = apply_count(stored, successes, outcome, change.seen, change.size)
                calls = sum(window[1::3])
            # The cache's set, first in its LRU order.
            new = pickle.dumps(window, pickle.HIGHEST_PROTOCOL)
            if raw is None and len(data) >= self.storage._max_entries:
                self.storage._cull()
            data[key] = new
            data.move_to_end(key, last=False)
            expiry[key] = now + (ttl if type(ttl) is int and ttl > 0 else whole_seconds(ttl))
        known_windows = self._known
        if key not in known_windows and len(known_windows) >= _KNOWN_WINDOWS:
            known_windows.clear()
        known_windows[key] = (new, window, calls)
        return window, None

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return self.cache.get_many(keys)

    def delete(self, key: str) -> None:
        self.cache.delete(key)

    def through(self, cache: Any) -> LocMemCounters:
        # Direct operations tell the wrapper what they stand for.
        return LocMemCounters(cache, cache.note if self._data is not None else None, self.storage)

    # -- straight into the LocMem cache's storage, under its lock ---------------------------
    def _read(self, key: str) -> Any:
        """The pickle at the cache key ``key``, or None (missing or expired): the cache's
        ``get`` without key validation or unpickling. Call with the lock held."""
        expires = self._expiry.get(key, -1)
        if expires is not None and expires <= time.time():
            if expires != -1:
                del self._data[key], self._expiry[key]
            return None
        self._data.move_to_end(key, last=False)
        return self._data[key]

    def _write(self, key: str, raw: bytes, ttl: float) -> None:
        """The cache's ``set`` of a pickle, without key validation. Lock held."""
        if len(self._data) >= self.storage._max_entries and key not in self._data:
            self.storage._cull()
        self._data[key] = raw
        self._data.move_to_end(key, last=False)
        self._expiry[key] = time.time() + whole_seconds(ttl)

    def _cache_key(self, key: str) -> str:
        made = self._make_key(key)
        if len(self._keys) >= _KNOWN_WINDOWS:
            self._keys.clear()
        self._keys[key] = made
        return made

    def _incr_direct(self, key: str, delta: int, ttl: float) -> int:
        key = self._make_key(key)
        if self.note is not None:
            self.note("incr")
        with self._lock:
            raw = self._read(key)
            value = None if raw is None else _unpickle(raw)
            # Anything but a count (missing, malformed) is overwritten.
            value = value + delta if type(value) is int and value >= 0 else delta
            if raw is None or value == delta:
                self._write(key, pickle.dumps(value, pickle.HIGHEST_PROTOCOL), ttl)
            else:  # Django's incr keeps the key's expiry
                self._data[key] = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        return value


def _unpickle(raw: Any) -> Any:
    """A value read from the cache's storage, or None when it is not one (treat as missing)."""
    try:
        return pickle.loads(raw)
    except Exception:  # not a pickle of ours: a miss, overwritten by the caller
        return None


#: The name this class had before the backends were split into modules.
CacheCounters = LocMemCounters


#: The cache backend whose values this module keeps the counters beside.
LOCMEM_CACHE_BACKEND = "django.core.cache.backends.locmem.LocMemCache"


def handles(cache_alias: str) -> bool:
    """True for a LocMem cache (its lock makes our read-modify-writes atomic)."""
    from django.conf import settings

    return bool(settings.CACHES.get(cache_alias, {}).get("BACKEND") == LOCMEM_CACHE_BACKEND)


def connect(cache_alias: str, db_alias: str, **clocks: Any) -> Any:
    """State entries and counters both in the LocMem cache ``cache_alias``."""
    from django.core.cache import caches

    from circuitbreaker_app.store.backends import Backend

    cache = caches[cache_alias]
    return Backend("locmem", cache, LocMemCounters(cache, storage=cache))
