"""States, allowed transitions and CircuitStatus (states.py)."""

from __future__ import annotations

import itertools

import pytest

from circuitbreaker_app.core import CircuitConfig, CircuitStatus, IllegalTransitionError, State
from circuitbreaker_app.core.states import AUTOMATIC_TRANSITIONS, Outcome, check_transition

OPERATOR_TARGETS = {State.FORCED_OPEN, State.FORCED_CLOSED, State.DISABLED, State.CLOSED}
ALL_PAIRS = list(itertools.product(State, State))


def test_state_is_a_str_enum_with_the_documented_values() -> None:
    assert [s.value for s in State] == [
        "closed",
        "open",
        "half_open",
        "forced_open",
        "forced_closed",
        "disabled",
    ]
    assert State("half_open") is State.HALF_OPEN
    assert State.HALF_OPEN == "half_open"
    assert str(State.FORCED_OPEN) == "forced_open"
    assert {o.value for o in Outcome} == {"success", "failure", "ignored"}


def test_the_breaker_moves_closed_open_half_open_closed_and_ends_forced_states() -> None:
    assert AUTOMATIC_TRANSITIONS == {
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.OPEN),
        (State.HALF_OPEN, State.CLOSED),
        # when an operator state's forced_until passes
        (State.FORCED_OPEN, State.HALF_OPEN),
        (State.FORCED_CLOSED, State.CLOSED),
        (State.DISABLED, State.CLOSED),
    }


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_check_transition_for_the_breaker(old: State, new: State) -> None:
    if (old, new) in AUTOMATIC_TRANSITIONS:
        check_transition(old, new)
        return
    with pytest.raises(IllegalTransitionError) as info:
        check_transition(old, new)
    assert f"from {old} to {new}" in str(info.value)
    assert "the breaker" in str(info.value)


@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_check_transition_for_an_operator(old: State, new: State) -> None:
    if new in OPERATOR_TARGETS or (old, new) in AUTOMATIC_TRANSITIONS:
        check_transition(old, new, operator=True)
        return
    with pytest.raises(IllegalTransitionError) as info:
        check_transition(old, new, operator=True)
    assert "an operator" in str(info.value)


def test_closed_to_half_open_is_illegal() -> None:
    with pytest.raises(IllegalTransitionError, match="closed to half_open"):
        check_transition(State.CLOSED, State.HALF_OPEN)
    assert issubclass(IllegalTransitionError, RuntimeError)


def test_moved_to_open_sets_the_deadline_with_backoff() -> None:
    config = CircuitConfig(wait_duration=10, backoff_multiplier=3, max_wait_duration=100)
    status = CircuitStatus(state=State.HALF_OPEN, generation=4, open_count=1)
    moved = status.moved_to(State.OPEN, 50.0, config)
    assert moved == CircuitStatus(State.OPEN, 5, 2, opened_at=50.0, retry_at=80.0, changed_at=50.0)
    assert moved.retry_after(60.0) == 20.0
    assert moved.retry_after(81.0) == 0.0  # never negative


def test_moved_to_operator_states_has_no_deadline() -> None:
    config = CircuitConfig()
    status = CircuitStatus(State.OPEN, 2, 3, opened_at=1.0, retry_at=31.0, changed_at=1.0)
    forced_open = status.moved_to(State.FORCED_OPEN, 9.0, config)
    assert (forced_open.opened_at, forced_open.retry_at, forced_open.open_count) == (9.0, None, 3)
    assert forced_open.retry_after(9.0) is None
    for state in (State.FORCED_CLOSED, State.DISABLED):
        moved = status.moved_to(state, 9.0, config)
        assert (moved.opened_at, moved.retry_at, moved.open_count) == (None, None, 3)
        assert moved.changed_at == 9.0


def test_a_transition_never_dates_from_before_the_one_it_follows() -> None:
    """The shared clock may step back when it is re-synchronised; the event log stays in order."""
    config = CircuitConfig()
    status = CircuitStatus(State.FORCED_CLOSED, 7, changed_at=100.0)
    moved = status.moved_to(State.FORCED_OPEN, 99.5, config)
    assert moved.changed_at == 100.0
    assert status.moved_to(State.FORCED_OPEN, 101.0, config).changed_at == 101.0


def test_retry_after_is_none_outside_open() -> None:
    for state in State:
        if state is not State.OPEN:
            assert CircuitStatus(state=state, retry_at=5.0).retry_after(0.0) is None


def test_a_move_the_circuit_already_made_elsewhere_is_a_no_op() -> None:
    """A refresh inside the move may show another process already opened it: no error."""
    from circuitbreaker_app.core import CircuitConfig
    from circuitbreaker_app.core.states import Closed, Snapshot

    class Elsewhere:
        """A context whose refreshed snapshot shows a move made by another process."""

        name = "race"
        config = CircuitConfig(window_size=2, minimum_calls=2, failure_rate_threshold=50)
        status = CircuitStatus(state=State.FORCED_OPEN, generation=1)
        transitions: list[object] = []

        def now(self) -> float:
            return 0.0

        def transition(self, new: object, reason: str, snapshot: object) -> bool:
            self.transitions.append(new)
            return True

    ctx = Elsewhere()
    Closed.check_window(ctx, Snapshot(calls=2, failures=2))  # type: ignore[arg-type]
    assert ctx.transitions == []
