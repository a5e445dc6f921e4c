"""Exceptions raised by breakers; re-exported by ``circuitbreaker_app``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from circuitbreaker_app.core.states import State


class CircuitOpenError(Exception):
    """A call was rejected because its circuit does not admit calls right now.

    ``CircuitOpenError(circuit, state, retry_after)``: ``retry_after`` is the number of
    seconds until calls may pass again, or ``None`` when unknown (forced open, or
    half-open with every trial permit taken).
    """

    # Rejections are a hot path: no Python ``__init__`` (it tripled the cost of creating
    # one). The three values live in ``args``, where ``BaseException`` puts them, which
    # also keeps the exception picklable (Celery sends task exceptions between
    # processes); the message is only built when someone reads it.
    if TYPE_CHECKING:

        def __init__(self, circuit: str, state: State, retry_after: float | None) -> None: ...

    @property
    def circuit(self) -> str:
        """The name of the circuit that rejected the call."""
        return self.args[0]

    @property
    def state(self) -> State:
        """The circuit's state when it rejected the call."""
        return self.args[1]

    @property
    def retry_after(self) -> float | None:
        """Seconds until calls may pass again, or None when unknown."""
        return self.args[2]

    def __str__(self) -> str:
        if len(self.args) != 3:  # built some other way (a copy by a library): its own words
            return super().__str__()
        detail = ""
        if self.retry_after is not None:
            detail = f"; retry in {max(0, math.ceil(self.retry_after))} s"
        state = getattr(self.state, "value", self.state)
        return f"circuit {self.circuit!r} is {state}{detail}"


class IllegalTransitionError(RuntimeError):
    """A state change that DESIGN §3 does not allow was requested."""
