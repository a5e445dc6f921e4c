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
    # one). The values live in ``args``, where ``BaseException`` puts them, which also
    # keeps the exception picklable (Celery sends task exceptions between processes); the
    # message is only built when someone reads it. A breaker's own rejection passes the
    # two clock readings ``retry_after`` is the difference of, ``(circuit, state,
    # retry_clock, now)``, and the difference is taken when someone reads it: one float
    # fewer per rejection (about 4 % of its cost). Both readings travel together, so the
    # value is the same wherever it is read, in a pickled copy too.
    # No ``__weakref__`` slot (nor a second ``__dict__``: BaseException has one): freeing
    # a rejection's error then skips clearing weak references, which no one takes.
    __slots__ = ()

    if TYPE_CHECKING:

        def __init__(
            self, circuit: str, state: State, retry_after: float | None, *clock: float | None
        ) -> None: ...

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
        """Seconds until calls may pass again (as of the rejection), or None when unknown."""
        args = self.args
        if len(args) == 4:  # (circuit, state, retry_clock, now): a breaker's own
            return None if args[2] is None else args[2] - args[3]
        return args[2]

    def _ours(self) -> bool:
        return len(self.args) in (3, 4)

    def __str__(self) -> str:
        if not self._ours():  # built some other way (a copy by a library): its own words
            return super().__str__()
        detail = ""
        retry_after = self.retry_after
        if retry_after is not None:
            detail = f"; retry in {max(0, math.ceil(retry_after))} s"
        state = getattr(self.state, "value", self.state)
        return f"circuit {self.circuit!r} is {state}{detail}"

    def __repr__(self) -> str:
        """As it would be built by hand: ``CircuitOpenError(circuit, state, retry_after)``."""
        if not self._ours():
            return super().__repr__()
        return f"{type(self).__name__}({self.circuit!r}, {self.state!r}, {self.retry_after!r})"


class IllegalTransitionError(RuntimeError):
    """A state change that DESIGN §3 does not allow was requested."""
