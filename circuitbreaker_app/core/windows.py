"""A window's totals (:class:`Snapshot`) and the rule that decides when a circuit opens.

The sliding windows themselves are shared by every process, so they live beside their
storage in ``circuitbreaker_app.store.windows`` (pure arithmetic, exact for one process).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from circuitbreaker_app.core.config import CircuitConfig


# A value, never changed once made, but not ``frozen``: a frozen dataclass's ``__init__``
# sets each field through ``object.__setattr__``, which made building one cost three times
# as much, and a failure builds several (Snapshot, Permit, the window's write). Hashable.
@dataclass(slots=True, unsafe_hash=True)
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
