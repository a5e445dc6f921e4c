"""Drive a CircuitStateMachine on a FakeClock, as a guarded call would."""

from __future__ import annotations

from circuitbreaker_app.core import CircuitConfig, CircuitStateMachine, FakeClock, Outcome, Permit
from circuitbreaker_app.core.machine import Transition

S, F, IGN = Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORED
CODES = {"S": S, "F": F, "I": IGN}


class Harness:
    """A machine, its clock and the transitions its listener saw."""

    def __init__(self, name: str = "payments", **config: object) -> None:
        self.clock = FakeClock()
        self.machine = CircuitStateMachine(
            name,
            CircuitConfig(**config),  # type: ignore[arg-type]
            clock=self.clock,
        )
        self.events: list[Transition] = []
        self.machine.listeners.append(self.events.append)

    def call(self, outcome: Outcome = S, duration: float = 0.0) -> Permit:
        """acquire() (which may raise CircuitOpenError), then report the outcome."""
        permit = self.machine.acquire()
        self.machine.on_result(permit, outcome, duration)
        return permit

    def run(self, codes: str) -> list[str]:
        """Play outcomes such as "SFSFF"; return the state after each call."""
        states = []
        for code in codes:
            self.call(CODES[code])
            states.append(self.machine.state.value)
        return states

    def trip(self) -> None:
        """Record failures until the circuit opens."""
        for _ in range(self.machine.config.window_size + self.machine.config.minimum_calls):
            self.call(F)
            if self.machine.state.value == "open":
                return
        raise AssertionError("the circuit did not open")

    def to_half_open(self) -> Permit:
        """Wait until retry_at and make the call that moves OPEN to HALF_OPEN (live mode)."""
        retry_at = self.machine.status.retry_at
        assert retry_at is not None
        self.clock.set(retry_at)
        permit = self.machine.acquire()
        assert permit.state.value == "half_open"
        return permit
