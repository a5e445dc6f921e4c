"""Exceptions raised by breakers; re-exported by ``circuitbreaker_app``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from circuitbreaker_app.core.states import State


class CircuitOpenError(Exception):
    """A call was rejected because its circuit does not admit calls right now.

    ``retry_after`` is the number of seconds until calls may pass again, or ``None``
    when unknown (forced open, or half-open with every trial permit taken).
    """

    def __init__(self, circuit: str, state: State, retry_after: float | None) -> None:
        # Rejections are a hot path: the message is only built when someone reads it.
        super().__init__(circuit)
        self.circuit = circuit
        self.state = state
        self.retry_after = retry_after

    def __str__(self) -> str:
        detail = ""
        if self.retry_after is not None:
            detail = f"; retry in {max(0, math.ceil(self.retry_after))} s"
        state = getattr(self.state, "value", self.state)
        return f"circuit {self.circuit!r} is {state}{detail}"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keep the exception picklable (Celery sends task exceptions between processes).
        return (type(self), (self.circuit, self.state, self.retry_after))


class IllegalTransitionError(RuntimeError):
    """A state change that DESIGN §3 does not allow was requested."""
