"""Test utilities for projects using circuitbreaker_app (and for its own tests).

:class:`CountingCache` wraps a Django cache and counts the operations that reach it, so
a test can assert what a guarded call costs (``assert cache.total == 0``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

CACHE_OPERATIONS = frozenset(
    {
        "get",
        "get_many",
        "set",
        "set_many",
        "add",
        "incr",
        "decr",
        "delete",
        "delete_many",
        "touch",
        "has_key",
        "get_or_set",
    }
)


class CountingCache:
    """Wraps a Django cache and counts every operation that reaches it."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._cache, name)
        if name not in CACHE_OPERATIONS:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted

    def note(self, name: str) -> None:
        """Count an operation that reached the shared store without passing through this
        wrapper (a Redis script standing for the cache call ``name``)."""
        self.calls[name] += 1

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def reset(self) -> None:
        self.calls.clear()
