"""Moves made on request, not by a guarded call: an operator's (force open, force closed,
disable, reset; admin, command and ``circuitbreaker_app.operator``) and a task's
(``advance``: the beat task's probe and the end of a forced state). Each re-reads the
circuit from the database and is one compare-and-set through :class:`CircuitPersistence`,
so a late or duplicate request changes nothing.
"""

from __future__ import annotations

from typing import Any

from circuitbreaker_app.core import State
from circuitbreaker_app.core.states import check_transition
from circuitbreaker_app.store.persistence import CircuitPersistence


class RequestedMoves(CircuitPersistence):
    """``move_to``/``advance`` of :class:`~circuitbreaker_app.store.registry.CircuitStore`."""

    def move_to(
        self,
        name: str,
        state: State,
        reason: str,
        actor: Any = None,
        until: float | None = None,
    ) -> bool:
        """An operator's transition (force, disable, reset); False when already there.

        ``until`` (shared time, :meth:`now`) ends an operator state by itself. Moving a
        circuit to the state it is in with another ``until``, or resetting a CLOSED one
        (which empties its window), is a change: a new generation and an event, but no
        ``state_changed`` signal (the state did not change).
        """
        runtime = self.runtime(name)
        for _attempt in range(5):
            self.reload(runtime)
            old = runtime.entry.status
            check_transition(old.state, state, operator=True)
            if old.state is state and state is not State.CLOSED and old.forced_until == until:
                return False
            new = old.moved_to(state, self.now(), runtime.config, until)
            if self.persist_transition(runtime, new, reason, runtime.snapshot(), actor=actor):
                return True
        return False

    def advance(self, name: str, expected: State, new: State, reason: str) -> bool:
        """A transition the breaker makes by itself, done by a task (e.g. a probe).

        Re-reads the circuit from the database first: when it is no longer in
        ``expected`` (or, for OPEN → HALF_OPEN, its ``retry_at`` has not passed), this is
        a no-op returning False, so early, late or duplicate deliveries change nothing.
        """
        check_transition(expected, new)
        runtime = self.runtime(name)
        self.reload(runtime)
        old = runtime.entry.status
        if old.state is not expected:
            return False
        if expected is State.OPEN and (old.retry_after(self.now()) or 0.0) > 0:
            return False
        if expected.is_operator_state and not old.forced_expired(self.now()):
            return False  # only the end of a forced state moves it without an operator
        return self.persist_transition(
            runtime, old.moved_to(new, self.now(), runtime.config), reason, None
        )
