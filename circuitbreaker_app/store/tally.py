"""Calls by outcome not yet in the fleet's totals (DESIGN §4: observability is free): the
tally side of :class:`~circuitbreaker_app.store.runtime.CircuitRuntime`.

The counts are plain integer attributes of the runtime, added to where a call already
touches it; the store sends them with its next write and hands them back when the shared
counters are unreachable (they are sent again later).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from circuitbreaker_app.store.backends.base import Tally


class CallTally:
    """``successes``, ``failures``, ``ignored``, ``rejected`` and ``slow`` not yet shared.

    A closed success on the fast path is only the runtime's ``pending``, which joins
    ``successes`` when it is flushed; ``successes`` counts the others (trials, slow
    calls, DISABLED).
    """

    # No instance dict of its own: the attributes are CircuitRuntime's slots (hidden from
    # mypy, which would check this class's assignments against an empty tuple).
    if not TYPE_CHECKING:
        __slots__ = ()

    successes: int
    failures: int
    ignored: int
    # A float: a rejection adds 1.0, which reuses a freed float (CPython keeps a free list
    # of them) where an int above 256 is a new allocation; exact up to 2**53 calls.
    rejected: float
    slow: int

    def has_tally(self) -> bool:
        """True when some calls are not yet in the fleet's totals."""
        return bool(self.successes or self.failures or self.ignored or self.rejected or self.slow)

    def take_tally(self) -> Tally | None:
        """The calls by outcome not yet shared (nonzero ones), now counted as shared."""
        tally: Tally = {}
        if self.successes:
            tally["success"] = self.successes
            self.successes = 0
        if self.failures:
            tally["failure"] = self.failures
            self.failures = 0
        if self.ignored:
            tally["ignored"] = self.ignored
            self.ignored = 0
        if self.rejected:
            tally["rejected"] = int(self.rejected)
            self.rejected = 0.0
        if self.slow:
            tally["slow"] = self.slow
            self.slow = 0
        return tally or None

    def keep_tally(self, tally: Tally) -> None:
        """Take back a tally the shared store did not accept (it is sent again later)."""
        self.successes += tally.get("success", 0)
        self.failures += tally.get("failure", 0)
        self.ignored += tally.get("ignored", 0)
        self.rejected += tally.get("rejected", 0)
        self.slow += tally.get("slow", 0)
