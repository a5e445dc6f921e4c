"""A complete circuit breaker for one process, built from the state classes.

It is the reference implementation of DESIGN §3 (the fake-clock tests drive it) and
the fallback the store uses for per-process counting while the cache is down.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from circuitbreaker_app.core.clock import Clock, SystemClock
from circuitbreaker_app.core.config import CircuitConfig
from circuitbreaker_app.core.states import (
    CircuitStatus,
    Outcome,
    Permit,
    State,
    behaviour_for,
    check_transition,
    settle,
)
from circuitbreaker_app.core.windows import CountWindow, Snapshot, TimeWindow, window_for


@dataclass(frozen=True, slots=True)
class Transition:
    """One real state change, as reported to listeners."""

    name: str
    old: CircuitStatus
    new: CircuitStatus
    reason: str
    snapshot: Snapshot | None


Listener = Callable[[Transition], None]


class CircuitStateMachine:
    """One circuit's state, window and trial permits, held in this process's memory."""

    def __init__(
        self,
        name: str,
        config: CircuitConfig | None = None,
        clock: Clock | None = None,
        status: CircuitStatus | None = None,
    ) -> None:
        self.name = name
        self.config = config or CircuitConfig()
        self._clock = clock or SystemClock()
        self._status = status or CircuitStatus()
        self._window: CountWindow | TimeWindow = window_for(self.config)
        self._trials: dict[int, tuple[float, int]] = {}  # slot -> (lease expiry, token)
        self._tokens = itertools.count(1)
        self._trial_successes: set[int] = set()
        self.listeners: list[Listener] = []

    # -- CircuitContext --------------------------------------------------------------
    @property
    def status(self) -> CircuitStatus:
        return self._status

    def now(self) -> float:
        return self._clock()

    def record(self, failed: bool, slow: bool) -> Snapshot:
        return self._window.record(failed, slow, self.now())

    def acquire_trial(self) -> tuple[int, int] | None:
        now = self.now()
        for slot in range(self.config.half_open_max_calls):
            if slot in self._trial_successes:
                continue
            lease = self._trials.get(slot)
            if lease is None or lease[0] <= now:
                token = next(self._tokens)
                self._trials[slot] = (now + self.config.trial_lease, token)
                return slot, token
        return None

    def complete_trial(self, slot: int, token: int, succeeded: bool) -> int:
        lease = self._trials.get(slot)
        if lease is not None and lease[1] == token:
            del self._trials[slot]
        if succeeded:
            self._trial_successes.add(slot)
        return len(self._trial_successes)

    def transition(self, new: CircuitStatus, reason: str, snapshot: Snapshot | None) -> bool:
        old = self._status
        if new.generation != old.generation + 1:
            return False
        self._status = new
        self._window = window_for(self.config)
        self._trials.clear()
        self._trial_successes.clear()
        event = Transition(self.name, old, new, reason, snapshot)
        for listener in self.listeners:
            listener(event)
        return True

    # -- public API ------------------------------------------------------------------
    @property
    def state(self) -> State:
        return self._status.state

    @property
    def retry_after(self) -> float | None:
        return self._status.retry_after(self.now())

    def snapshot(self) -> Snapshot:
        """The current window's totals."""
        return self._window.snapshot(self.now())

    def acquire(self) -> Permit:
        """Admit a call or raise CircuitOpenError."""
        return behaviour_for(self._status.state).acquire(self)

    def on_result(self, permit: Permit, outcome: Outcome, duration: float = 0.0) -> None:
        """Report the outcome of a call admitted by :meth:`acquire`."""
        settle(self, permit, outcome, duration)

    def move_to(self, state: State, reason: str, until: float | None = None) -> bool:
        """An operator's transition (force open/closed, disable, reset to CLOSED);
        ``until`` (a reading of the clock) bounds an operator state."""
        check_transition(self._status.state, state, operator=True)
        new = self._status.moved_to(state, self.now(), self.config, until)
        return self.transition(new, reason, None)

    def reset(self) -> bool:
        """Back to CLOSED with an empty window and ``open_count = 0``."""
        return self.move_to(State.CLOSED, "reset")
