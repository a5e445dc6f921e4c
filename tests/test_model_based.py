"""Model-based test: ``core.CircuitStateMachine`` against a small reference model of DESIGN §3.

Hypothesis drives both with random configurations, call outcomes and durations, calls
held in flight (several trials at once, outcomes arriving after a transition), clock
advances (including exactly to ``retry_at``) and operator moves, and checks after every
step that state, generation, ``open_count``, ``retry_after``, window totals and every
admission decision agree. The reference is written from DESIGN §3 alone, as plainly as
possible (lists, no running totals); live trials only (probe mode is the beat task's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from circuitbreaker_app.core import (
    CircuitConfig,
    CircuitOpenError,
    CircuitStateMachine,
    FakeClock,
    Outcome,
    State,
)

EXAMPLES = 500
STEPS = 40

# Values whose sums and products are exact in binary floating point, so a divergence is a
# semantic one, never a rounding one.
THRESHOLDS = [1, 10, 25, 33.5, 50, 62.5, 75, 90, 100]
SECONDS = [0.0, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0]
DURATIONS = [0.0, 0.5, 1.0, 2.0, 5.0]


@st.composite
def configs(draw) -> dict:
    window_type = draw(st.sampled_from(["count", "time"]))
    window_size = draw(st.integers(1, 6))
    top = window_size if window_type == "count" else 8
    wait = draw(st.sampled_from([0.0, 0.5, 1.0, 2.5, 10.0]))
    return {
        "window_type": window_type,
        "window_size": window_size,
        "minimum_calls": draw(st.integers(1, top)),
        "failure_rate_threshold": draw(st.sampled_from(THRESHOLDS)),
        "slow_call_duration": draw(st.sampled_from([None, 1.0, 2.0])),
        "slow_call_rate_threshold": draw(st.sampled_from(THRESHOLDS)),
        "wait_duration": wait,
        "backoff_multiplier": draw(st.sampled_from([1, 1.5, 2, 3])),
        "max_wait_duration": wait + draw(st.sampled_from([0.0, 2.0, 20.0, 600.0])),
        "half_open_max_calls": draw(st.integers(1, 3)),
        "trial_lease": draw(st.sampled_from([1.0, 5.0, 30.0])),
    }


# -- the reference model ---------------------------------------------------------------------


@dataclass(frozen=True)
class RefPermit:
    state: str
    generation: int
    slot: int | None = None
    token: int = 0


class Reference:
    """DESIGN §3, literally."""

    def __init__(self, config: dict) -> None:
        self.c = config
        self.state = "closed"
        self.generation = 0
        self.open_count = 0
        self.retry_at: float | None = None
        self.calls: list[tuple[float, bool, bool]] = []  # (time, failed, slow) this period
        self.leases: dict[int, tuple[float, int]] = {}  # trial slot -> (lease end, token)
        self.succeeded: set[int] = set()
        self.tokens = 0

    # "the last window_size recorded calls (count) or the calls of the last window_size
    # seconds (time)" -- a call at t belongs to second floor(t).
    def window(self, now: float) -> tuple[int, int, int]:
        size = self.c["window_size"]
        if self.c["window_type"] == "count":
            kept = self.calls[-size:]
        else:
            kept = [c for c in self.calls if math.floor(c[0]) > math.floor(now) - size]
        return len(kept), sum(c[1] for c in kept), sum(c[2] for c in kept)

    def opens(self, now: float) -> bool:
        calls, failures, slow = self.window(now)
        if calls == 0 or calls < self.c["minimum_calls"]:
            return False
        if 100 * failures / calls >= self.c["failure_rate_threshold"]:
            return True
        return (
            self.c["slow_call_duration"] is not None
            and 100 * slow / calls >= self.c["slow_call_rate_threshold"]
        )

    def wait(self) -> float:
        wait = self.c["wait_duration"] * self.c["backoff_multiplier"] ** (self.open_count - 1)
        return min(wait, self.c["max_wait_duration"])

    def move(self, state: str, now: float) -> None:
        self.state = state
        self.generation += 1
        self.calls, self.leases, self.succeeded = [], {}, set()
        self.retry_at = None
        if state == "open":
            self.open_count += 1
            self.retry_at = now + self.wait()
        elif state == "closed":
            self.open_count = 0

    def retry_after(self, now: float) -> float | None:
        if self.state == "open":
            return max(0.0, self.retry_at - now)
        return None

    def acquire(self, now: float) -> RefPermit | float | None:
        """A permit, or the rejection's retry_after (a float, or None when unknown)."""
        if self.state in ("closed", "forced_closed", "disabled"):
            return RefPermit(self.state, self.generation)
        if self.state == "forced_open":
            return None
        if self.state == "open":
            if self.retry_at - now > 0:
                return self.retry_at - now
            self.move("half_open", now)
        for slot in range(self.c["half_open_max_calls"]):
            lease = self.leases.get(slot)
            if slot not in self.succeeded and (lease is None or lease[0] <= now):
                self.tokens += 1
                self.leases[slot] = (now + self.c["trial_lease"], self.tokens)
                return RefPermit("half_open", self.generation, slot, self.tokens)
        return None

    def settle(self, permit: RefPermit, outcome: str, duration: float, now: float) -> None:
        if permit.generation != self.generation:
            return  # the circuit moved on since the call was admitted
        slow = self.c["slow_call_duration"] is not None and duration >= self.c["slow_call_duration"]
        failed = outcome == "failure"
        if permit.state == "half_open":
            if outcome == "ignored" or not (failed or slow):
                if self.leases.get(permit.slot, (0, None))[1] == permit.token:
                    del self.leases[permit.slot]
            if outcome == "ignored":
                return
            if failed or slow:
                self.move("open", now)
            else:
                self.succeeded.add(permit.slot)
                if len(self.succeeded) >= self.c["half_open_max_calls"]:
                    self.move("closed", now)
            return
        if outcome == "ignored" or permit.state == "disabled":
            return
        self.calls.append((now, failed, slow))
        if permit.state == "closed" and self.opens(now):
            self.move("open", now)


# -- the comparison --------------------------------------------------------------------------


class CoreMatchesDesign(RuleBasedStateMachine):
    inflight = Bundle("inflight")

    @initialize(config=configs())
    def setup(self, config: dict) -> None:
        self.clock = FakeClock(1_000.0)
        self.machine = CircuitStateMachine("model", CircuitConfig(**config), clock=self.clock)
        self.reference = Reference(config)

    def _acquire(self):
        now = self.clock()
        expected = self.reference.acquire(now)
        try:
            permit = self.machine.acquire()
        except CircuitOpenError as exc:
            assert not isinstance(expected, RefPermit), f"rejected, model admits {expected}"
            assert exc.state is self.machine.state
            if expected is None:
                assert exc.retry_after is None
            else:
                assert exc.retry_after == pytest.approx(expected, abs=1e-9)
            return None
        assert isinstance(expected, RefPermit), f"admitted, model rejects ({expected})"
        got = (permit.state.value, permit.generation, permit.trial_slot)
        assert got == (expected.state, expected.generation, expected.slot)
        return permit, expected

    def _settle(self, pair, outcome: str, duration: float) -> None:
        permit, expected = pair
        self.machine.on_result(permit, Outcome(outcome), duration)
        self.reference.settle(expected, outcome, duration, self.clock())

    @rule(
        outcome=st.sampled_from(["success", "failure", "ignored"]),
        duration=st.sampled_from(DURATIONS),
    )
    def call(self, outcome: str, duration: float) -> None:
        pair = self._acquire()
        if pair is not None:
            self._settle(pair, outcome, duration)

    @rule(target=inflight)
    def begin(self):
        pair = self._acquire()
        return pair if pair is not None else "rejected"

    @rule(
        pair=consumes(inflight),
        outcome=st.sampled_from(["success", "failure", "ignored"]),
        duration=st.sampled_from(DURATIONS),
    )
    def finish(self, pair, outcome: str, duration: float) -> None:
        if pair != "rejected":
            self._settle(pair, outcome, duration)

    @rule(seconds=st.sampled_from(SECONDS))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.reference.state == "open")
    @rule()
    def advance_to_retry_at(self) -> None:
        self.clock.set(max(self.clock(), self.reference.retry_at))

    @rule(state=st.sampled_from(["forced_open", "forced_closed", "disabled", "closed"]))
    def operator(self, state: str) -> None:
        assert self.machine.move_to(State(state), "operator")
        self.reference.move(state, self.clock())

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "machine"):
            return
        now = self.clock()
        status = self.machine.status
        reference = self.reference
        assert status.state.value == reference.state
        assert status.generation == reference.generation
        assert status.open_count == reference.open_count
        expected = reference.retry_after(now)
        actual = self.machine.retry_after
        assert (actual is None) == (expected is None)
        if expected is not None:
            assert actual == pytest.approx(expected, abs=1e-9)
        snapshot = self.machine.snapshot()
        assert (snapshot.calls, snapshot.failures, snapshot.slow) == reference.window(now)


CoreMatchesDesign.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_core_matches_the_design_model = CoreMatchesDesign.TestCase


def test_the_reference_model_itself_follows_the_design_examples():
    """The model must be right before it judges the core: DESIGN §3's own examples."""
    config = {
        "slow_call_rate_threshold": 100,
        "trial_lease": 30.0,
        "window_type": "count",
        "window_size": 10,
        "minimum_calls": 5,
        "failure_rate_threshold": 50,
        "slow_call_duration": None,
        "wait_duration": 10.0,
        "backoff_multiplier": 2,
        "max_wait_duration": 15.0,
        "half_open_max_calls": 2,
    }
    model, states = Reference(config), []
    for outcome in ["success", "failure", "success", "failure", "failure"]:
        permit = model.acquire(0.0)
        model.settle(permit, outcome, 0.0, 0.0)
        states.append(model.state)
    assert states == ["closed"] * 4 + ["open"]  # S F S F F opens at the fifth call (60 %)
    assert model.acquire(5.0) == 5.0  # rejected, retry in 5 s
    first = model.acquire(10.0)  # due: half-open, trial 1 of 2
    second = model.acquire(10.0)
    assert (first.slot, second.slot, model.acquire(10.0)) == (0, 1, None)
    model.settle(first, "failure", 0.0, 10.0)  # a failed trial reopens, with backoff
    assert (model.state, model.retry_after(10.0)) == ("open", 15.0)  # 10 × 2, capped at 15
    model.settle(second, "success", 0.0, 10.0)  # from the previous period: dropped
    assert model.state == "open"
    for permit in (model.acquire(25.0), model.acquire(25.0)):
        model.settle(permit, "success", 0.0, 25.0)
    assert (model.state, model.open_count, model.window(25.0)) == ("closed", 0, (0, 0, 0))
