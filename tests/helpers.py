"""Shared test helpers: a fake-clocked store and a cache that counts its operations."""

from __future__ import annotations

from typing import Any

from circuitbreaker_app.core import FakeClock
from circuitbreaker_app.store import CacheCounters, CircuitStore, RedisCounters, reset_store
from circuitbreaker_app.testing import CACHE_OPERATIONS, CountingCache

__all__ = ["CACHE_OPERATIONS", "CountingCache", "FakeStore"]


class FakeStore:
    """A CircuitStore on a fake clock whose cache operations are counted."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock(1_000_000.0)
        self.store = CircuitStore(clock=self.clock, wall=self.clock, sync_db_clock=False)
        self.cache = CountingCache(self.store.cache)
        self.store.cache = self.cache
        if isinstance(self.store.counters, CacheCounters):
            self.store.counters = CacheCounters(self.cache)
        elif isinstance(self.store.counters, RedisCounters):
            # Its round trips are counted with the cache's, under the cache call they replace.
            self.store.counters.on_call = lambda name: self.cache.calls.update([name])

    def install(self) -> FakeStore:
        reset_store(self.store)
        return self

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def runtime(self, name: str) -> Any:
        return self.store.runtime(name)
