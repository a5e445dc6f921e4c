"""Shared sliding windows, kept in the cache or counters store, and their bookkeeping.

Pure: the store does the I/O and hands values in and out. Each shape is exact for one
process and bounded for many:

* time windows: at most :data:`MAX_TIME_BUCKETS` buckets of whole seconds, each one
  integer holding calls, failures and slow calls (21 bits each), so recording any mix of
  outcomes is a single atomic ``incr``;
* count windows: one value per circuit generation holding the last ``window_size``
  outcomes, run-length encoded (``runs.py``), updated by ``apply_count`` in one atomic
  step (a Lua script on Redis, a compare-and-set elsewhere). Every process adds to the
  same sequence.

Successes are batched per process (DESIGN §4). In a count window a batch is placed where
the process's previous write, or its last read made with nothing batched, left off, before
outcomes other processes recorded since: those may have happened before or after the
batch, and the earlier place is the one that never lets a late batch push other processes'
fresh failures out of the window (a dead dependency trips after ``window_size`` failures
whatever the processes had batched).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from circuitbreaker_app.core import CircuitConfig, Snapshot
from circuitbreaker_app.store.runs import (
    FAILED,
    MAX_RUNS,
    SLOWED,
    append_to_count,
    apply_count,
    count_totals,
    grown_by,
    parse_count,
)

__all__ = [  # the count windows' functions are runs.py's, imported from here too
    "CALL",
    "COUNT_WINDOW_TTL",
    "FAILED",
    "FAILURE",
    "MAX_RUNS",
    "SLOW",
    "SLOWED",
    "BucketAdd",
    "CountAdd",
    "CountRuns",
    "SharedWindow",
    "TimeBuckets",
    "append_to_count",
    "apply_count",
    "count_totals",
    "grown_by",
    "pack",
    "parse_count",
    "unpack",
    "window_for",
]

FIELD_BITS = 21
FIELD_MASK = (1 << FIELD_BITS) - 1
CALL = 1
FAILURE = 1 << FIELD_BITS
SLOW = 1 << (2 * FIELD_BITS)
MAX_TIME_BUCKETS = 60
#: Seconds a count window outlives its last write.
COUNT_WINDOW_TTL = 86_400


def pack(snapshot: Snapshot) -> int:
    """One integer for (calls, failures, slow)."""
    return snapshot.calls * CALL + snapshot.failures * FAILURE + snapshot.slow * SLOW


def unpack(value: int | None) -> Snapshot:
    """The (calls, failures, slow) held in a packed counter (empty for None)."""
    if not value or type(value) is not int or not 0 < value < 1 << 63:
        return Snapshot()  # empty, or not a packed counter of ours
    return Snapshot(
        value & FIELD_MASK, (value >> FIELD_BITS) & FIELD_MASK, (value >> 2 * FIELD_BITS)
    )


# -- what the store writes -----------------------------------------------------------------


@dataclass(slots=True, unsafe_hash=True)  # a value, not frozen: see core.windows.Snapshot
class BucketAdd:
    """Add a packed ``delta`` to the counter ``key`` (created with ``ttl`` seconds)."""

    key: str
    ttl: float
    delta: int
    #: The bucket the key belongs to (seconds since the epoch // bucket width).
    bucket: int = 0


@dataclass(slots=True, unsafe_hash=True)  # a value, not frozen: see core.windows.Snapshot
class CountAdd:
    """Apply :func:`apply_count` with these arguments to the window under ``key``."""

    key: str
    ttl: float
    successes: int
    outcome: int
    seen: int
    size: int
    #: The window as this process last saw it (a first guess for compare-and-set writes).
    known: list[int]
    #: The window this write makes if the stored one is still ``known`` (a failure that
    #: joins the newest run: :func:`grown_by`), else None. A backend that can tell the
    #: stored window is ``known`` may store and return it as it is.
    expected: list[int] | None = None


class SharedWindow:
    """What the store needs from a shared window."""

    def change(self, outcome: Snapshot, successes: int, now: float) -> BucketAdd | CountAdd:
        """The write that records ``successes`` batched successes, then ``outcome`` (one
        failed or slow call, or nothing)."""
        raise NotImplementedError("subclasses of SharedWindow must provide change()")

    def failure(self, slow: int, now: float) -> BucketAdd | CountAdd:
        """:meth:`change` for one failed call (``slow``: 1 if it was also slow) and no
        batched successes: a failure's write."""
        return self.change(Snapshot(1, 1, slow), 0, now)

    def added(self, change: Any, value: Any, now: float) -> Snapshot:
        """Take what the store returned for ``change``; return the window's totals."""
        raise NotImplementedError("subclasses of SharedWindow must provide added()")

    def add_locally(self, change: Any, now: float) -> Snapshot:
        """Apply ``change`` in this process only (the shared counters are unreachable)."""
        raise NotImplementedError("subclasses of SharedWindow must provide add_locally()")

    def read_keys(self, now: float) -> list[str]:
        """Keys whose latest values the window wants (read with the state snapshot)."""
        raise NotImplementedError("subclasses of SharedWindow must provide read_keys()")

    def absorb(self, values: dict[str, Any], now: float, settled: bool = True) -> None:
        """Take values read for :meth:`read_keys` (missing keys are empty). ``settled``:
        the process has no batched successes, so any it batches from now on happened
        after everything read here."""
        raise NotImplementedError("subclasses of SharedWindow must provide absorb()")

    def estimate(self, now: float) -> Snapshot:
        """The window's totals as last known, without I/O."""
        raise NotImplementedError("subclasses of SharedWindow must provide estimate()")

    def slot_left(self, at: float, now: float) -> float:
        """Seconds from ``now`` until the slot holding time ``at`` closes: batched successes
        made at ``at`` must be written to that slot, so a process batches only until then.
        Infinite for windows that hold calls, not time."""
        return math.inf

    def holds(self, at: float, now: float) -> bool:
        """True while an outcome of time ``at`` is still in the window at ``now``."""
        return True

    def estimate_with(self, successes: int, at: float, now: float) -> Snapshot:
        """The totals once ``successes`` batched at time ``at`` are written: the window the
        decision uses and operators read (DESIGN §3, "Batching never changes a decision")."""
        raise NotImplementedError("subclasses of SharedWindow must provide estimate_with()")


class TimeBuckets(SharedWindow):
    """The last ``window_size`` seconds in at most 60 buckets of whole seconds."""

    def __init__(self, prefix: str, size: int) -> None:
        self.prefix = prefix
        self.width = max(1, math.ceil(size / MAX_TIME_BUCKETS))
        # As many buckets as fit in the size: a call leaves the window at most ``size``
        # seconds after it happened (DESIGN §3), never a bucket later (61 s: 30 × 2 s).
        self.count = size // self.width
        self.known: dict[int, Snapshot] = {}

    def _bucket(self, now: float) -> int:
        return math.floor(now / self.width)

    def _key(self, bucket: int) -> str:
        return f"{self.prefix}/t{bucket}"

    def _total(self, current: int) -> Snapshot:
        oldest = current - self.count + 1
        for bucket in [b for b in self.known if b < oldest]:
            del self.known[bucket]
        total = Snapshot()
        for snapshot in self.known.values():
            total = total + snapshot
        return total

    def change(self, outcome: Snapshot, successes: int, now: float) -> BucketAdd:
        bucket = self._bucket(now)
        ttl = self.width * (self.count + 1) + 60
        return BucketAdd(self._key(bucket), ttl, pack(outcome) + successes, bucket)

    def added(self, change: BucketAdd, value: int, now: float) -> Snapshot:
        current = self._bucket(now)
        if change.bucket > current - self.count:
            self.known[change.bucket] = unpack(value)
        return self._total(current)

    def add_locally(self, change: BucketAdd, now: float) -> Snapshot:
        mine = self.known.get(change.bucket, Snapshot())
        return self.added(change, pack(mine) + change.delta, now)

    def read_keys(self, now: float) -> list[str]:
        current = self._bucket(now)
        return [self._key(b) for b in range(current - self.count + 1, current + 1)]

    def absorb(self, values: dict[str, Any], now: float, settled: bool = True) -> None:
        current = self._bucket(now)
        for bucket in range(current - self.count + 1, current + 1):
            value = values.get(self._key(bucket))
            self.known[bucket] = unpack(value if type(value) is int else None)

    def estimate(self, now: float) -> Snapshot:
        return self._total(self._bucket(now))

    def slot_left(self, at: float, now: float) -> float:
        return (self._bucket(at) + 1) * self.width - now

    def holds(self, at: float, now: float) -> bool:
        return self._bucket(at) > self._bucket(now) - self.count

    def estimate_with(self, successes: int, at: float, now: float) -> Snapshot:
        total = self.estimate(now)
        if successes and self.holds(at, now):
            total = total + Snapshot(successes)
        return total


class CountRuns(SharedWindow):
    """The last ``window_size`` calls, one shared sequence for every process."""

    def __init__(self, prefix: str, size: int) -> None:
        self.key = f"{prefix}/count"
        self.size = size
        self.window: list[int] = [0]
        #: The totals of :attr:`window` (summed once per window taken, never per read).
        self.totals = Snapshot()
        #: Where this process's previous write left the sequence (0: none yet, so its
        #: first batch goes before everything recorded in this generation).
        self.seen = 0

    def change(self, outcome: Snapshot, successes: int, now: float) -> CountAdd:
        code = (FAILED if outcome.failures else 0) | (SLOWED if outcome.slow else 0)
        if outcome.calls and not code:
            successes += outcome.calls
        if code and not successes:
            return self._one(code)
        return CountAdd(
            self.key, COUNT_WINDOW_TTL, successes, code, self.seen, self.size, self.window
        )

    def failure(self, slow: int, now: float) -> CountAdd:
        return self._one(FAILED | SLOWED if slow else FAILED)

    def _one(self, code: int) -> CountAdd:
        """The write of one outcome ``code`` and no batch, with the window it makes if
        nobody else wrote since (:attr:`CountAdd.expected`)."""
        window = self.window
        return CountAdd(
            self.key,
            COUNT_WINDOW_TTL,
            0,
            code,
            self.seen,
            self.size,
            window,
            grown_by(window, self.totals.calls, code, self.size),
        )

    def _take(self, window: list[int]) -> Snapshot:
        self.window = window
        self.seen = window[0]
        self.totals = totals = count_totals(window)
        return totals

    def added(self, change: CountAdd, value: Any, now: float) -> Snapshot:
        expected = change.expected
        if (
            expected is not None
            and change.known is self.window
            and (value is expected or value == expected)
        ):
            # A failure's common write (nobody else wrote since this process's last look,
            # the failure joined the newest run): a window equal to the one predicted is
            # well formed and one call more, taken without parsing or summing it.
            outcome, totals = change.outcome, self.totals
            self.window = expected
            self.seen = expected[0]
            self.totals = totals = Snapshot(
                totals.calls + 1,
                totals.failures + (outcome & FAILED),
                totals.slow + ((outcome & SLOWED) >> 1),
            )
            return totals
        return self._take(parse_count(value))

    def add_locally(self, change: CountAdd, now: float) -> Snapshot:
        window = apply_count(
            self.window, change.successes, change.outcome, change.seen, change.size
        )
        return self._take(window)

    def read_keys(self, now: float) -> list[str]:
        return [self.key]

    def absorb(self, values: dict[str, Any], now: float, settled: bool = True) -> None:
        self.window = parse_count(values.get(self.key))
        self.totals = count_totals(self.window)
        if settled:  # a batch from now on goes after what was read (not before it)
            self.seen = self.window[0]

    def estimate(self, now: float) -> Snapshot:
        return self.totals

    def estimate_with(self, successes: int, at: float, now: float) -> Snapshot:
        totals = self.totals
        if totals.calls + successes <= self.size:  # nothing leaves the window
            return totals + Snapshot(successes)
        return count_totals(apply_count(self.window, successes, 0, self.seen, self.size))


def window_for(prefix: str, config: CircuitConfig) -> SharedWindow:
    """A fresh shared window of the kind ``config`` asks for, keyed under ``prefix``."""
    if config.window_type == "time":
        return TimeBuckets(prefix, config.window_size)
    return CountRuns(prefix, config.window_size)
