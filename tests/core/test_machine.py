"""DESIGN §3 continued: operator states, reset, generations and transition listeners."""

from __future__ import annotations

import pytest

from circuitbreaker_app.core import (
    CircuitOpenError,
    CircuitStateMachine,
    CircuitStatus,
    IllegalTransitionError,
    Permit,
    Snapshot,
    State,
)
from tests.core.helpers import F, Harness, S

TRIPPY = {"window_size": 5, "minimum_calls": 5, "failure_rate_threshold": 100}


def test_a_new_machine_is_closed_at_generation_zero() -> None:
    h = Harness()
    assert h.machine.status == CircuitStatus()
    assert h.machine.state is State.CLOSED
    assert h.machine.retry_after is None
    assert h.machine.acquire() == Permit(State.CLOSED, 0)


# -- forced states -------------------------------------------------------------------


@pytest.mark.parametrize("start", ["closed", "open", "half_open"])
def test_forced_open_rejects_everything_with_unknown_retry_after(start: str) -> None:
    h = Harness(**TRIPPY, half_open_max_calls=1)
    if start != "closed":
        h.trip()
    if start == "half_open":
        h.to_half_open()
    assert h.machine.move_to(State.FORCED_OPEN, "operator")
    for _ in range(3):
        with pytest.raises(CircuitOpenError) as info:
            h.machine.acquire()
        assert info.value.state is State.FORCED_OPEN
        assert info.value.retry_after is None
        assert "retry in" not in str(info.value)
        h.clock.advance(10**6)  # no deadline: only an operator ends it
    assert h.machine.retry_after is None
    assert h.machine.status.retry_at is None


def test_forced_closed_admits_everything_records_metrics_and_never_trips() -> None:
    h = Harness(**TRIPPY, slow_call_duration=1.0, slow_call_rate_threshold=1)
    h.trip()
    h.machine.move_to(State.FORCED_CLOSED, "operator")
    for _ in range(50):
        h.call(F, 5.0)
    assert h.machine.state is State.FORCED_CLOSED
    assert h.machine.snapshot() == Snapshot(calls=5, failures=5, slow=5)
    assert h.machine.snapshot().failure_rate == 100.0
    assert h.machine.retry_after is None
    assert [e.new.state for e in h.events] == [State.OPEN, State.FORCED_CLOSED]


def test_disabled_admits_everything_and_records_nothing() -> None:
    h = Harness(**TRIPPY, slow_call_duration=1.0)
    h.run("FF")
    h.machine.move_to(State.DISABLED, "operator")
    for _ in range(50):
        assert h.call(F, 5.0).state is State.DISABLED
    assert h.machine.state is State.DISABLED
    assert h.machine.snapshot() == Snapshot()
    assert len(h.events) == 1


def test_operator_states_are_flagged() -> None:
    assert {s for s in State if s.is_operator_state} == {
        State.FORCED_OPEN,
        State.FORCED_CLOSED,
        State.DISABLED,
    }


# -- reset ---------------------------------------------------------------------------


def _reach(h: Harness, state: str) -> None:
    if state == "closed":
        h.run("FFFF")  # failures in the window, not tripped
        return
    h.trip()
    h.machine.on_result(h.to_half_open(), F)  # open_count 2
    if state == "half_open":
        h.to_half_open()
    elif state != "open":
        h.machine.move_to(State(state), "operator")
        h.run("FF" if state == "forced_closed" else "")


@pytest.mark.parametrize("state", [s.value for s in State])
def test_reset_returns_closed_with_empty_window_and_open_count_zero(state: str) -> None:
    h = Harness(**TRIPPY, half_open_max_calls=1)
    _reach(h, state)
    assert h.machine.state.value == state
    assert h.machine.reset()
    status = h.machine.status
    assert status.state is State.CLOSED
    assert (status.open_count, status.opened_at, status.retry_at) == (0, None, None)
    assert h.machine.snapshot() == Snapshot()
    assert h.machine.retry_after is None
    assert h.events[-1].reason == "reset"
    assert h.events[-1].old.state.value == state
    assert h.run("FFFF") == ["closed"] * 4  # an empty window: nothing old counts
    assert h.run("F") == ["open"]
    assert h.machine.status.open_count == 1


def test_operator_states_keep_open_count_until_reset() -> None:
    h = Harness(**TRIPPY, half_open_max_calls=1)
    h.trip()
    h.machine.on_result(h.to_half_open(), F)
    h.machine.move_to(State.FORCED_CLOSED, "operator")
    assert h.machine.status.open_count == 2
    h.machine.reset()
    assert h.machine.status.open_count == 0


# -- generations ---------------------------------------------------------------------


def test_every_transition_increments_generation_by_one() -> None:
    h = Harness(**TRIPPY, half_open_max_calls=1)
    h.trip()
    h.machine.on_result(h.to_half_open(), S)
    h.machine.move_to(State.DISABLED, "operator")
    h.machine.reset()
    assert [(e.old.generation, e.new.generation) for e in h.events] == [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        (4, 5),
    ]
    assert h.machine.status.generation == 5


def test_outcome_from_before_a_trip_is_dropped() -> None:
    h = Harness(**TRIPPY)
    stale = h.machine.acquire()
    h.trip()
    status = h.machine.status
    h.machine.on_result(stale, F)
    assert h.machine.status == status
    assert len(h.events) == 1


@pytest.mark.parametrize("state", [State.CLOSED, State.FORCED_CLOSED])
def test_outcome_from_before_a_reset_does_not_reach_the_new_window(state: State) -> None:
    h = Harness(**TRIPPY)
    if state is not State.CLOSED:
        h.machine.move_to(state, "operator")
    stale = h.machine.acquire()
    h.machine.reset()
    h.machine.on_result(stale, F)
    assert h.machine.snapshot() == Snapshot()


def test_trial_outcome_from_an_earlier_half_open_period_is_dropped() -> None:
    h = Harness(**TRIPPY, half_open_max_calls=2)
    h.trip()
    old_trial = h.to_half_open()
    h.run("F")  # another trial fails: OPEN again
    h.to_half_open()  # a new HALF_OPEN period, one trial out
    h.machine.on_result(old_trial, S)
    assert h.machine.state is State.HALF_OPEN
    h.run("S")  # only this period's trials count: 1 of 2 so far
    assert h.machine.state is State.HALF_OPEN


def test_transition_is_a_compare_and_set_on_generation() -> None:
    h = Harness(**TRIPPY)
    current = h.machine.status
    moved = current.moved_to(State.OPEN, h.clock(), h.machine.config)
    assert moved.generation == current.generation + 1
    stale = CircuitStatus(state=State.OPEN, generation=current.generation)
    assert not h.machine.transition(stale, "stale", None)
    skipped = CircuitStatus(state=State.OPEN, generation=current.generation + 2)
    assert not h.machine.transition(skipped, "skipped", None)
    assert h.machine.status == current
    assert h.events == []
    assert h.machine.transition(moved, "ok", None)
    assert not h.machine.transition(moved, "again", None)  # the same move twice: once
    assert len(h.events) == 1


def test_open_call_that_loses_the_race_to_half_open_is_decided_by_the_winner() -> None:
    class Racing(CircuitStateMachine):
        """Another process moves OPEN -> HALF_OPEN just before this one tries."""

        raced = False

        def transition(self, new, reason, snapshot):  # type: ignore[no-untyped-def]
            if new.state is State.HALF_OPEN and not self.raced:
                self.raced = True
                super().transition(new, "other_process", snapshot)
                return False
            return super().transition(new, reason, snapshot)

    h = Harness(**TRIPPY, half_open_max_calls=1)
    h.machine = racing = Racing("payments", h.machine.config, clock=h.clock)
    racing.listeners.append(h.events.append)
    h.trip()
    permit = h.to_half_open()
    assert permit.state is State.HALF_OPEN
    assert [e.reason for e in h.events][-1] == "other_process"
    assert len(h.events) == 2


# -- listeners -----------------------------------------------------------------------


def test_listeners_get_one_transition_per_real_transition() -> None:
    h = Harness(window_size=10, minimum_calls=5, failure_rate_threshold=50, half_open_max_calls=2)
    second: list[object] = []
    h.machine.listeners.append(second.append)
    h.run("SFSFF")
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            h.machine.acquire()
    h.clock.advance(30)
    h.run("SS")
    assert [(e.old.state, e.new.state, e.reason) for e in h.events] == [
        (State.CLOSED, State.OPEN, "failure_rate_above_threshold"),
        (State.OPEN, State.HALF_OPEN, "wait_elapsed"),
        (State.HALF_OPEN, State.CLOSED, "trials_succeeded"),
    ]
    assert second == h.events
    assert all(e.name == "payments" for e in h.events)
    assert h.events[0].snapshot == Snapshot(calls=5, failures=3)
    assert h.events[1].snapshot is None
    assert h.events[2].new == h.machine.status


def test_a_rejected_illegal_move_changes_nothing_and_notifies_no_one() -> None:
    h = Harness(**TRIPPY)
    with pytest.raises(IllegalTransitionError):
        h.machine.move_to(State.HALF_OPEN, "operator")
    assert h.machine.status == CircuitStatus()
    assert h.events == []


# -- operator states with an end (``until``) ---------------------------------------------


def test_forced_open_until_rejects_with_the_time_left_then_half_opens() -> None:
    h = Harness(**TRIPPY, half_open_max_calls=1)
    assert h.machine.move_to(State.FORCED_OPEN, "operator", until=h.clock() + 60)
    with pytest.raises(CircuitOpenError) as info:
        h.machine.acquire()
    assert info.value.retry_after == pytest.approx(60)
    h.clock.advance(60)
    permit = h.machine.acquire()  # the end passed: this call is the trial
    assert (permit.state, h.machine.state) == (State.HALF_OPEN, State.HALF_OPEN)
    assert h.machine.status.forced_until is None


@pytest.mark.parametrize("state", [State.FORCED_CLOSED, State.DISABLED])
def test_forced_closed_and_disabled_until_return_to_closed(state: State) -> None:
    h = Harness(**TRIPPY)
    h.trip()
    h.machine.move_to(state, "operator", until=h.clock() + 5)
    h.clock.advance(4.9)
    assert h.machine.acquire().state is state
    h.clock.advance(0.1)
    assert h.machine.acquire() == Permit(State.CLOSED, h.machine.status.generation)
    assert (h.machine.status.open_count, h.machine.snapshot()) == (0, Snapshot())


def test_an_end_belongs_to_operator_states_only() -> None:
    h = Harness(**TRIPPY)
    h.machine.move_to(State.FORCED_OPEN, "operator", until=h.clock() + 5)
    h.machine.move_to(State.CLOSED, "reset", until=h.clock() + 5)
    assert h.machine.status.forced_until is None
    assert not h.machine.status.forced_expired(h.clock() + 10)
