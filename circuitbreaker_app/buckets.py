"""Shared sliding windows, as buckets of packed counters in the cache.

Pure bookkeeping: the store does the I/O and hands values in and out. A bucket is one
integer holding calls, failures and slow calls (21 bits each), so recording any mix
of outcomes is a single atomic ``incr``. Both shapes approximate the exact in-process
windows of ``core.windows`` in a way that is exact for one process and bounded for many:

* time windows: at most :data:`MAX_TIME_BUCKETS` buckets of whole seconds;
* count windows: blocks of ``window_size`` calls, the previous block weighted by the
  part of it still inside the window (the "sliding window counter" estimate).
"""

from __future__ import annotations

import math

from circuitbreaker_app.core import CircuitConfig, Snapshot

FIELD_BITS = 21
FIELD_MASK = (1 << FIELD_BITS) - 1
CALL = 1
FAILURE = 1 << FIELD_BITS
SLOW = 1 << (2 * FIELD_BITS)
MAX_TIME_BUCKETS = 60
COUNT_BLOCK_TTL = 86_400


def pack(snapshot: Snapshot) -> int:
    """One integer for (calls, failures, slow)."""
    return snapshot.calls * CALL + snapshot.failures * FAILURE + snapshot.slow * SLOW


def unpack(value: int | None) -> Snapshot:
    """The (calls, failures, slow) held in a packed counter (empty for None)."""
    if not value:
        return Snapshot()
    value = int(value)
    return Snapshot(
        value & FIELD_MASK, (value >> FIELD_BITS) & FIELD_MASK, (value >> 2 * FIELD_BITS)
    )


class SharedWindow:
    """What the store needs from a shared window."""

    def add_key(self, now: float) -> tuple[str, int]:
        """The bucket to ``incr`` for an outcome recorded at ``now``, and its TTL."""
        raise NotImplementedError("subclasses of SharedWindow must provide add_key()")

    def added(self, key: str, value: int, now: float) -> Snapshot:
        """Take the bucket's value after the ``incr``; return the window's totals."""
        raise NotImplementedError("subclasses of SharedWindow must provide added()")

    def add_locally(self, delta: Snapshot, now: float) -> Snapshot:
        """Count ``delta`` in this process only (the shared counters are unreachable)."""
        key, _ = self.add_key(now)
        return self.added(key, pack(self._latest(now) + delta), now)

    def _latest(self, now: float) -> Snapshot:
        raise NotImplementedError("subclasses of SharedWindow must provide _latest()")

    def read_keys(self, now: float) -> list[str]:
        """Buckets whose latest values the window wants (read with the state snapshot)."""
        raise NotImplementedError("subclasses of SharedWindow must provide read_keys()")

    def absorb(self, values: dict[str, int], now: float) -> None:
        """Take values read for :meth:`read_keys` (missing keys are empty buckets)."""
        raise NotImplementedError("subclasses of SharedWindow must provide absorb()")

    def estimate(self, now: float) -> Snapshot:
        """The window's totals as last known, without I/O."""
        raise NotImplementedError("subclasses of SharedWindow must provide estimate()")


class TimeBuckets(SharedWindow):
    """The last ``window_size`` seconds in at most 60 buckets of whole seconds."""

    def __init__(self, prefix: str, size: int) -> None:
        self.prefix = prefix
        self.width = max(1, math.ceil(size / MAX_TIME_BUCKETS))
        self.count = math.ceil(size / self.width)
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

    def add_key(self, now: float) -> tuple[str, int]:
        return self._key(self._bucket(now)), self.width * (self.count + 1) + 60

    def _latest(self, now: float) -> Snapshot:
        return self.known.get(self._bucket(now), Snapshot())

    def added(self, key: str, value: int, now: float) -> Snapshot:
        current = self._bucket(now)
        self.known[current] = unpack(value)
        return self._total(current)

    def read_keys(self, now: float) -> list[str]:
        current = self._bucket(now)
        return [self._key(b) for b in range(current - self.count + 1, current + 1)]

    def absorb(self, values: dict[str, int], now: float) -> None:
        current = self._bucket(now)
        for bucket in range(current - self.count + 1, current + 1):
            self.known[bucket] = unpack(values.get(self._key(bucket)))

    def estimate(self, now: float) -> Snapshot:
        return self._total(self._bucket(now))


class CountBlocks(SharedWindow):
    """The last ``window_size`` calls as the current block plus a weighted previous one."""

    def __init__(self, prefix: str, size: int) -> None:
        self.prefix = prefix
        self.size = size
        self.block = 0
        self.current = Snapshot()
        self.previous = Snapshot()

    def _key(self, block: int) -> str:
        return f"{self.prefix}/c{block}"

    def _advance(self) -> None:
        self.block += 1
        self.previous, self.current = self.current, Snapshot()

    def add_key(self, now: float) -> tuple[str, int]:
        return self._key(self.block), COUNT_BLOCK_TTL

    def _latest(self, now: float) -> Snapshot:
        return self.current

    def added(self, key: str, value: int, now: float) -> Snapshot:
        if key != self._key(self.block):
            return self.estimate(now)
        self.current = unpack(value)
        total = self.estimate(now)
        if self.current.calls >= self.size:
            self._advance()
        return total

    def read_keys(self, now: float) -> list[str]:
        return [self._key(self.block - 1), self._key(self.block), self._key(self.block + 1)]

    def absorb(self, values: dict[str, int], now: float) -> None:
        previous = unpack(values.get(self._key(self.block - 1)))
        current = unpack(values.get(self._key(self.block)))
        following = unpack(values.get(self._key(self.block + 1)))
        if self.block > 0:
            self.previous = previous
        self.current = current
        if following.calls or current.calls >= self.size:
            # Another process filled this block: move on (a far-behind process catches
            # up one block per refresh, which is enough for an estimate).
            self._advance()
            self.current = following

    def estimate(self, now: float) -> Snapshot:
        current = self.current
        if current.calls >= self.size or not self.previous.calls:
            return current
        weight = 1.0 - current.calls / self.size
        return Snapshot(
            current.calls + round(self.previous.calls * weight),
            current.failures + round(self.previous.failures * weight),
            current.slow + round(self.previous.slow * weight),
        )


def window_for(prefix: str, config: CircuitConfig) -> SharedWindow:
    """A fresh shared window of the kind ``config`` asks for, keyed under ``prefix``."""
    if config.window_type == "time":
        return TimeBuckets(prefix, config.window_size)
    return CountBlocks(prefix, config.window_size)
