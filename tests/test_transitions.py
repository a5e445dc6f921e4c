"""DESIGN §3 continued, on the runtime production runs: operator states (with and without an
end), reset and generations. Races between processes (one transition per trip, the
compare-and-set) are in tests/test_store.py and tests/test_multiprocess.py."""

from __future__ import annotations

import pytest

from circuitbreaker_app.core import (
    CircuitOpenError,
    CircuitStatus,
    IllegalTransitionError,
    Permit,
    Snapshot,
    State,
)
from tests.semantics import F, Harness, S

pytestmark = pytest.mark.django_db(transaction=True)

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


# -- listeners -----------------------------------------------------------------------


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
