"""Sliding windows of call outcomes and the rule that decides when a circuit opens.

Both windows keep running totals so that recording and reading are O(1), as
Resilience4j's FixedSizeSlidingWindowMetrics and SlidingTimeWindowMetrics do.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from circuitbreaker_app.core.config import CircuitConfig


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Totals of a window at one moment."""

    calls: int = 0
    failures: int = 0
    slow: int = 0

    @property
    def failure_rate(self) -> float:
        """Failures as a percentage of calls (0.0 for an empty window)."""
        return 100.0 * self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Slow calls as a percentage of calls (0.0 for an empty window)."""
        return 100.0 * self.slow / self.calls if self.calls else 0.0

    def __add__(self, other: Snapshot) -> Snapshot:
        return Snapshot(
            self.calls + other.calls, self.failures + other.failures, self.slow + other.slow
        )


class WindowResult(enum.Enum):
    """Why a window does, or does not, open the circuit."""

    BELOW_MINIMUM_CALLS = "below_minimum_calls"
    BELOW_THRESHOLDS = "below_thresholds"
    FAILURE_RATE_ABOVE_THRESHOLD = "failure_rate_above_threshold"
    SLOW_CALL_RATE_ABOVE_THRESHOLD = "slow_call_rate_above_threshold"

    @property
    def opens(self) -> bool:
        return self in (
            WindowResult.FAILURE_RATE_ABOVE_THRESHOLD,
            WindowResult.SLOW_CALL_RATE_ABOVE_THRESHOLD,
        )


def evaluate(snapshot: Snapshot, config: CircuitConfig) -> WindowResult:
    """Apply DESIGN §3's rule: enough calls, and a rate at or above its threshold.

    Rates are compared as ``count × 100 ≥ threshold × calls`` so that a rate exactly
    at the threshold opens the circuit without floating-point surprises.
    """
    if snapshot.calls < config.minimum_calls or snapshot.calls == 0:
        return WindowResult.BELOW_MINIMUM_CALLS
    if snapshot.failures * 100 >= config.failure_rate_threshold * snapshot.calls:
        return WindowResult.FAILURE_RATE_ABOVE_THRESHOLD
    if (
        config.slow_call_duration is not None
        and snapshot.slow * 100 >= config.slow_call_rate_threshold * snapshot.calls
    ):
        return WindowResult.SLOW_CALL_RATE_ABOVE_THRESHOLD
    return WindowResult.BELOW_THRESHOLDS


class Window(Protocol):
    """What the state machine needs from a window."""

    def record(self, failed: bool, slow: bool, now: float) -> Snapshot: ...

    def snapshot(self, now: float) -> Snapshot: ...


class CountWindow:
    """The last ``size`` recorded calls, as a ring with running totals."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window_size must be at least 1, but was {size!r}")
        self._ring: list[tuple[bool, bool] | None] = [None] * size
        self._head = 0
        self._calls = self._failures = self._slow = 0

    def record(self, failed: bool, slow: bool, now: float = 0.0) -> Snapshot:
        evicted = self._ring[self._head]
        if evicted is not None:
            self._calls -= 1
            self._failures -= evicted[0]
            self._slow -= evicted[1]
        self._ring[self._head] = (failed, slow)
        self._head = (self._head + 1) % len(self._ring)
        self._calls += 1
        self._failures += failed
        self._slow += slow
        return self.snapshot(now)

    def snapshot(self, now: float = 0.0) -> Snapshot:
        return Snapshot(self._calls, self._failures, self._slow)


class TimeWindow:
    """The calls of the last ``size`` seconds, in one bucket per whole second.

    A call at time ``t`` lands in bucket ``floor(t)``; the window at ``now`` holds the
    buckets ``floor(now) - size + 1 … floor(now)``, so a bucket leaves the window
    exactly ``size`` seconds after its second began.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window_size must be at least 1, but was {size!r}")
        self._size = size
        self._buckets: deque[list[int]] = deque()  # [second, calls, failures, slow]
        self._calls = self._failures = self._slow = 0

    def _roll(self, now: float) -> int:
        second = math.floor(now)
        oldest = second - self._size + 1
        while self._buckets and self._buckets[0][0] < oldest:
            _, calls, failures, slow = self._buckets.popleft()
            self._calls -= calls
            self._failures -= failures
            self._slow -= slow
        return second

    def record(self, failed: bool, slow: bool, now: float = 0.0) -> Snapshot:
        second = self._roll(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        bucket[3] += slow
        self._calls += 1
        self._failures += failed
        self._slow += slow
        return Snapshot(self._calls, self._failures, self._slow)

    def snapshot(self, now: float = 0.0) -> Snapshot:
        self._roll(now)
        return Snapshot(self._calls, self._failures, self._slow)


def window_for(config: CircuitConfig) -> CountWindow | TimeWindow:
    """A fresh, empty window of the kind ``config`` asks for."""
    if config.window_type == "time":
        return TimeWindow(config.window_size)
    return CountWindow(config.window_size)
