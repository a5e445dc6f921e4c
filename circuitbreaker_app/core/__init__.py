"""Pure-Python circuit breaker core: no Django, no I/O, an injected clock.

The Django side (``circuitbreaker_app.store``) plugs shared storage into the same
state classes through the :class:`~circuitbreaker_app.core.states.CircuitContext`
protocol, so the semantics of DESIGN §3 are written, and tested, exactly once.
"""

from circuitbreaker_app.core.clock import Clock, FakeClock, SystemClock
from circuitbreaker_app.core.config import CircuitConfig, ConfigError, validate_fields
from circuitbreaker_app.core.errors import CircuitOpenError, IllegalTransitionError
from circuitbreaker_app.core.states import (
    CircuitStatus,
    Outcome,
    Permit,
    State,
    behaviour_for,
)
from circuitbreaker_app.core.windows import (
    Snapshot,
    WindowResult,
    evaluate,
)

__all__ = [
    "CircuitConfig",
    "CircuitOpenError",
    "CircuitStatus",
    "Clock",
    "ConfigError",
    "FakeClock",
    "IllegalTransitionError",
    "Outcome",
    "Permit",
    "Snapshot",
    "State",
    "SystemClock",
    "WindowResult",
    "behaviour_for",
    "evaluate",
    "validate_fields",
]
