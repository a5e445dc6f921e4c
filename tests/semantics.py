"""Drive the runtime that production runs, as a guarded call would, for the DESIGN §3
scenario tests (``tests/test_semantics.py``, ``tests/test_transitions.py``).

:class:`Harness` gives those tests a small API (``h.run("SFSFF")``, ``h.machine.acquire()``,
``h.events``) over a real :class:`~circuitbreaker_app.store.CircuitRuntime` on a store with
a fake clock, its circuit a ``Circuit`` row, its transitions ``CircuitEvent`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from circuitbreaker_app.core import CircuitStatus, Outcome, Permit, Snapshot, State
from circuitbreaker_app.models import Circuit, CircuitEvent
from tests.helpers import FakeStore

S, F, IGN = Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORED
CODES = {"S": S, "F": F, "I": IGN}


@dataclass(frozen=True)
class Transition:
    """One transition, as its event row records it."""

    old: Any
    new: Any
    reason: str
    snapshot: Snapshot | None


class RuntimeMachine:
    """A circuit's runtime in one process, under the names the scenario tests use."""

    def __init__(self, fake: FakeStore, name: str) -> None:
        self.fake = fake
        self.name = name

    @property
    def runtime(self) -> Any:
        return self.fake.store.runtime(self.name)

    @property
    def status(self) -> CircuitStatus:
        return self.runtime.status

    @property
    def state(self) -> State:
        return self.runtime.status.state

    @property
    def config(self) -> Any:
        return self.runtime.config

    @property
    def retry_after(self) -> float | None:
        return self.runtime.retry_after

    def snapshot(self) -> Snapshot:
        return self.runtime.snapshot()

    def acquire(self) -> Permit:
        return self.runtime.acquire()

    def on_result(self, permit: Permit, outcome: Outcome, duration: float = 0.0) -> None:
        self.runtime.on_result(permit, outcome, duration)

    def acquire_trial(self) -> tuple[int, int] | None:
        return self.runtime.acquire_trial()

    def move_to(self, state: State, reason: str, until: float | None = None) -> bool:
        return self.fake.store.move_to(self.name, state, reason, until=until)

    def reset(self) -> bool:
        return self.move_to(State.CLOSED, "reset")


class Harness:
    """A circuit, the runtime of one process on a fake clock, and its transitions."""

    def __init__(self, name: str = "payments", **config: Any) -> None:
        Circuit.objects.create(name=name, **config)
        self.fake = FakeStore().install()
        self.clock = self.fake.clock
        self.machine = RuntimeMachine(self.fake, name)

    @property
    def events(self) -> list[Transition]:
        """The circuit's transitions so far, oldest first."""
        found: list[Transition] = []
        seen = 0
        for event in CircuitEvent.objects.filter(circuit_name=self.machine.name).order_by("id"):
            if event.generation <= seen:  # not a transition (a definition edit)
                continue
            seen = event.generation
            snapshot = None
            if event.calls is not None:
                calls = event.calls
                snapshot = Snapshot(
                    calls,
                    round((event.failure_rate or 0) * calls / 100),
                    round((event.slow_call_rate or 0) * calls / 100),
                )
            found.append(
                Transition(
                    SimpleNamespace(state=State(event.from_state), generation=event.generation - 1),
                    SimpleNamespace(state=State(event.to_state), generation=event.generation),
                    event.reason,
                    snapshot,
                )
            )
        return found

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
        config = self.machine.config
        for _ in range(config.window_size + config.minimum_calls):
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
