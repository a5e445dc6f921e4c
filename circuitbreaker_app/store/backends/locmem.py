"""Counters in this process's LocMem cache: exact for one process (tests, a one-process
dev server); other processes never see them (a system check warns with Celery)."""

from __future__ import annotations

import threading
from typing import Any

from circuitbreaker_app.store.backends.base import Counters, whole_seconds
from circuitbreaker_app.store.windows import CountAdd, apply_count, parse_count

_COUNT_LOCK = threading.Lock()


class LocMemCounters(Counters):
    """Counters in this process's LocMem cache (its ``incr`` and ``add`` are atomic)."""

    in_cache = True

    def __init__(self, cache: Any) -> None:
        self.cache = cache

    def incr(self, key: str, delta: int, ttl: float, known: bool = True) -> int:
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
        # get + set under a lock: atomic, since no other process sees a LocMem cache.
        with _COUNT_LOCK:
            window = parse_count(self.cache.get(change.key))
            window = apply_count(window, change.successes, change.outcome, change.seen, change.size)
            self.cache.set(change.key, window, timeout=whole_seconds(change.ttl))
        return window

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return self.cache.get_many(keys)

    def delete(self, key: str) -> None:
        self.cache.delete(key)

    def through(self, cache: Any) -> LocMemCounters:
        return LocMemCounters(cache)


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
    return Backend("locmem", cache, LocMemCounters(cache))
