"""Model-based test: the code that runs, against a small plain model of DESIGN §3.

Hypothesis drives real ``breaker()`` handles of two simulated processes (two
:class:`~circuitbreaker_app.store.CircuitStore` objects on one fake clock, sharing one
backend and one database) on every counter backend: LocMem, the database (the
``CircuitCounter`` table, under a file cache) and Redis. Its rules: calls that succeed,
fail or raise an ignored error; calls held open (several half-open trials at once,
outcomes arriving after a transition); pauses, longer than a time window and up to past
``retry_at``; operator moves (forced states, disable, reset); and a handover from one
process to the other, which is how batches from several processes meet in one window.
After every step the admission decisions, the state and the window the active process
reports (``snapshot()``, what the status endpoint shows) must equal the model's.

The model is DESIGN §3 for a fleet whose processes have shared what they know: at a
handover the process that was active flushes its batched successes and the next one
refreshes its snapshot (``STATE_TTL``'s lag between processes is tested in
``tests/test_store.py`` and ``tests/test_multiprocess.py``). Batching inside a process is
never flushed by the test: it must stay invisible on its own.

Forced states are set with and without an end (``until``): the first call after the end
leaves them (the beat task's move is tested in ``tests/test_tasks.py``). Not modelled:
slow calls and probe mode (``tests/test_store.py``, ``tests/test_tasks.py``).

Examples: ``CB_MODEL_EXAMPLES`` (default 20, local runs stay short); under the CI
hypothesis profile (``HYPOTHESIS_PROFILE=ci``) in the services run (``CB_CACHE=redis``),
500 examples of 40 steps per backend.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from dataclasses import dataclass, field

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import FakeClock
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import reset_store
from tests.conftest import hypothesis_profile
from tests.helpers import BACKENDS, FakeStore, backend_settings

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = 40


def examples() -> int:
    """How many examples per backend (see the module docstring)."""
    chosen = os.environ.get("CB_MODEL_EXAMPLES", "").strip()
    if chosen:
        return int(chosen)
    services_run = os.environ.get("CB_CACHE", "").strip().lower() == "redis"
    return 500 if hypothesis_profile() == "ci" and services_run else 20


# Pauses are multiples of 1/8 s, so every time is exact in binary floating point (and in
# the database's microseconds): a divergence is a semantic one, never a rounding one.
PAUSES = [0.125, 0.5, 1.0, 1.375, 2.5, 3.25, 6.0]
THRESHOLDS = [25, 50, 62.5, 75, 100]
#: Where an operator state goes when its end passes (DESIGN §1, operator API).
ENDS_IN = {
    State.FORCED_OPEN: State.HALF_OPEN,
    State.FORCED_CLOSED: State.CLOSED,
    State.DISABLED: State.CLOSED,
}


class Ignored(Exception):
    """Raised by a guarded call whose outcome counts as neither success nor failure."""


@st.composite
def configs(draw: st.DrawFn) -> dict:
    window_type = draw(st.sampled_from(["count", "time"]))
    window_size = draw(st.integers(1, 6))
    wait = draw(st.sampled_from([0.5, 1.0, 2.5]))
    return {
        "window_type": window_type,
        "window_size": window_size,
        "minimum_calls": draw(st.integers(1, window_size if window_type == "count" else 6)),
        "failure_rate_threshold": draw(st.sampled_from(THRESHOLDS)),
        "wait_duration": wait,
        "backoff_multiplier": draw(st.sampled_from([1, 2])),
        "max_wait_duration": wait * 4,
        "half_open_max_calls": draw(st.integers(1, 3)),
        # Leases never run out here: a lease is a crash guard, not a decision.
        "trial_lease": 3600.0,
    }


# -- the model: DESIGN §3, as plainly as possible ------------------------------------------


@dataclass
class Model:
    """One circuit of a fleet that has shared everything it knows."""

    config: dict
    state: State = State.CLOSED
    generation: int = 0
    open_count: int = 0
    retry_at: float | None = None
    #: Outcomes of this period (generation) as (time, failed), oldest first.
    outcomes: list[tuple[float, bool]] = field(default_factory=list)
    #: HALF_OPEN: trial permits taken (calls in flight plus trials that succeeded).
    trials: int = 0
    trial_successes: int = 0
    #: When an operator state ends by itself (None: until reset).
    forced_until: float | None = None

    def window(self, now: float) -> tuple[int, int]:
        """(calls, failures) in the sliding window at ``now``."""
        size = self.config["window_size"]
        if self.config["window_type"] == "count":
            held = self.outcomes[-size:]
        else:  # a call at t counts in the seconds floor(t) .. floor(t) + size - 1
            held = [o for o in self.outcomes if math.floor(o[0]) > math.floor(now) - size]
        return len(held), sum(failed for _, failed in held)

    def move(self, state: State, now: float, until: float | None = None) -> None:
        self.state = state
        self.forced_until = until if state in ENDS_IN else None
        self.generation += 1
        self.outcomes, self.trials, self.trial_successes = [], 0, 0
        self.retry_at = None
        if state is State.OPEN:
            self.open_count += 1
            wait = self.config["wait_duration"] * self.config["backoff_multiplier"] ** (
                self.open_count - 1
            )
            self.retry_at = now + min(wait, self.config["max_wait_duration"])
        elif state is State.CLOSED:
            self.open_count = 0

    def admit(self, now: float) -> tuple[State, int] | None:
        """The permit (state, generation) a call gets at ``now``, or None (rejected)."""
        if self.forced_until is not None and now >= self.forced_until:
            self.move(ENDS_IN[self.state], now)  # an operator state that has ended
        if self.state in (State.CLOSED, State.FORCED_CLOSED, State.DISABLED):
            return self.state, self.generation
        if self.state is State.FORCED_OPEN:
            return None
        if self.state is State.OPEN:
            if now < self.retry_at:
                return None
            self.move(State.HALF_OPEN, now)
        if self.trials >= self.config["half_open_max_calls"]:
            return None
        self.trials += 1
        return State.HALF_OPEN, self.generation

    def settle(self, permit: tuple[State, int], outcome: str, now: float) -> None:
        """The outcome (S, F or I) of a call admitted with ``permit`` arrives at ``now``."""
        state, generation = permit
        if generation != self.generation:
            return  # the circuit moved on: the call says nothing about this period
        if state is State.HALF_OPEN:
            if outcome == "I":
                self.trials -= 1
            elif outcome == "F":
                self.move(State.OPEN, now)
            else:
                self.trial_successes += 1
                if self.trial_successes >= self.config["half_open_max_calls"]:
                    self.move(State.CLOSED, now)
            return
        if outcome == "I" or state not in (State.CLOSED, State.FORCED_CLOSED):
            return
        self.outcomes.append((now, outcome == "F"))
        calls, failures = self.window(now)
        if (
            state is State.CLOSED
            and calls >= self.config["minimum_calls"]
            and failures * 100 >= self.config["failure_rate_threshold"] * calls
        ):
            self.move(State.OPEN, now)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_runtime_follows_the_model(backend, tmp_path):
    with override_settings(**backend_settings(backend, tmp_path)):
        clock = FakeClock(1_000_000.0)
        processes = [FakeStore(clock), FakeStore(clock)]
        # Names never used before: Redis keeps a circuit's counters across test runs.
        run = uuid.uuid4().hex[:8]
        names = (f"model-{run}-{n}" for n in itertools.count())

        class Fleet(FleetMachine):
            pass

        Fleet.clock, Fleet.processes, Fleet.names = clock, processes, names
        try:
            run_state_machine_as_test(
                Fleet,
                settings=settings(
                    max_examples=examples(),
                    stateful_step_count=STEPS,
                    deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                ),
            )
        finally:
            reset_store()


class FleetMachine(RuleBasedStateMachine):
    """Two processes' real handles on one circuit, step by step beside the model."""

    clock: FakeClock
    processes: list[FakeStore]
    names: itertools.count

    held = Bundle("held")

    @initialize(config=configs())
    def create(self, config: dict) -> None:
        self.name = next(self.names)
        Circuit.objects.create(name=self.name, **config)
        self.model = Model(config)
        self.active = 0
        for process in self.processes:
            process.store.forget()
        reset_store(self.processes[0].store)
        self.handles = [
            breaker(self.name, record=(ConnectionError,), ignore=(Ignored,)) for _ in self.processes
        ]

    def teardown(self) -> None:
        Circuit.objects.filter(name=getattr(self, "name", None)).delete()

    # -- helpers ---------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock()

    def activate(self, index: int) -> None:
        """Hand over to process ``index``: the active one shares its batch, the next one
        re-reads the circuit."""
        if index == self.active:
            return
        self.processes[self.active].store.flush()
        self.active = index
        store = self.processes[index].store
        reset_store(store)
        store.runtime(self.name).refresh()

    # -- rules -------------------------------------------------------------------------------
    @rule(process=st.integers(0, 1), outcome=st.sampled_from("SSSFFI"))
    def call(self, process: int, outcome: str) -> None:
        self.activate(process)

        def guarded() -> str:
            if outcome == "F":
                raise ConnectionError("upstream down")
            if outcome == "I":
                raise Ignored("not the dependency's fault")
            return "ok"

        permit = self.model.admit(self.now())
        try:
            self.handles[process].call(guarded)
        except CircuitOpenError:
            assert permit is None, f"rejected, but the model admits ({self.model.state})"
            return
        except (ConnectionError, Ignored):
            pass
        assert permit is not None, f"admitted, but the model rejects ({self.model.state})"
        self.model.settle(permit, outcome, self.now())

    @rule(target=held, process=st.integers(0, 1))
    def begin(self, process: int):
        """Enter a ``with breaker(...)`` block and keep it open (a call in flight)."""
        self.activate(process)
        handle = breaker(self.name, record=(ConnectionError,), ignore=(Ignored,))
        permit = self.model.admit(self.now())
        try:
            handle.__enter__()
        except CircuitOpenError:
            assert permit is None, f"rejected, but the model admits ({self.model.state})"
            return None
        assert permit is not None, f"admitted, but the model rejects ({self.model.state})"
        return (process, handle, permit)

    @rule(call=consumes(held), outcome=st.sampled_from("SFI"))
    def end(self, call, outcome: str) -> None:
        """Leave a block opened by :meth:`begin` with outcome S, F or I."""
        if call is None:
            return
        process, handle, permit = call
        self.activate(process)
        errors = {"S": None, "F": ConnectionError("upstream down"), "I": Ignored("no")}
        error = errors[outcome]
        try:
            handle.__exit__(type(error) if error else None, error, None)
        except (ConnectionError, Ignored):  # pragma: no cover - __exit__ never raises these
            pass
        self.model.settle(permit, outcome, self.now())

    @rule(seconds=st.sampled_from(PAUSES))
    def pause(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def wait_until_retry(self) -> None:
        """Jump exactly to ``retry_at`` (the first moment a trial may start)."""
        if self.model.state is State.OPEN and self.model.retry_at > self.now():
            self.clock.set(self.model.retry_at)

    @rule(
        state=st.sampled_from([State.FORCED_OPEN, State.FORCED_CLOSED, State.DISABLED]),
        ends_in=st.sampled_from([None, None, 0.5, 2.5]),
    )
    def force(self, state: State, ends_in: float | None) -> None:
        """An operator's move, until reset or for ``ends_in`` seconds."""
        until = None if ends_in is None else self.now() + ends_in
        store = self.processes[self.active].store
        changed = store.move_to(self.name, state, "model: operator", until=until)
        model = self.model
        assert changed == (model.state is not state or model.forced_until != until)
        if changed:
            model.move(state, self.now(), until)

    @rule()
    def reset(self) -> None:
        assert self.processes[self.active].store.move_to(self.name, State.CLOSED, "model: reset")
        self.model.move(State.CLOSED, self.now())

    # -- what must always agree -------------------------------------------------------------------
    @invariant()
    def same_state_and_window(self) -> None:
        if not hasattr(self, "model"):
            return
        runtime = self.processes[self.active].store.runtime(self.name)
        state = runtime.status.state
        assert state is self.model.state, f"state {state}, model {self.model.state}"
        assert runtime.status.generation == self.model.generation
        assert runtime.status.open_count == self.model.open_count
        assert runtime.status.forced_until == self.model.forced_until
        snapshot = runtime.snapshot()
        assert (snapshot.calls, snapshot.failures) == self.model.window(self.now())
