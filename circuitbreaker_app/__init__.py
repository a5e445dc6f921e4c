"""Circuit breakers for Django: models, a shared fast path, admin and Celery probes.

Public API (DESIGN §1)::

    from circuitbreaker_app import breaker, CircuitOpenError, State

    @breaker("payments", fallback=lambda exc: {"status": "queued"})
    def charge(order): ...
"""

from circuitbreaker_app.breaker import Breaker, breaker
from circuitbreaker_app.core import CircuitOpenError, State
from circuitbreaker_app.store import UnknownCircuitError

__version__ = "0.1.0"
__all__ = ["Breaker", "CircuitOpenError", "State", "UnknownCircuitError", "breaker"]
