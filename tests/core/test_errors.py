"""CircuitOpenError: fields, message and pickling (errors.py)."""

from __future__ import annotations

import pickle
import weakref

import pytest

from circuitbreaker_app.core import CircuitOpenError, State


@pytest.mark.parametrize(
    ("state", "retry_after"),
    [(State.OPEN, 12.5), (State.FORCED_OPEN, None), (State.HALF_OPEN, None), (State.OPEN, 0.0)],
)
def test_circuit_open_error_survives_a_pickle_round_trip(
    state: State, retry_after: float | None
) -> None:
    error = CircuitOpenError("payments", state, retry_after)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is CircuitOpenError
    assert copy.circuit == "payments"
    assert copy.state is state
    assert copy.retry_after == retry_after
    assert str(copy) == str(error)
    assert copy.args == error.args


def test_message_names_the_circuit_state_and_rounded_up_wait() -> None:
    assert str(CircuitOpenError("payments", State.OPEN, 12.1)) == (
        "circuit 'payments' is open; retry in 13 s"
    )
    assert str(CircuitOpenError("http:api.example.com", State.FORCED_OPEN, None)) == (
        "circuit 'http:api.example.com' is forced_open"
    )
    assert "retry in 0 s" in str(CircuitOpenError("a", State.OPEN, -3.0))
    assert isinstance(CircuitOpenError("a", State.OPEN, None), Exception)


@pytest.mark.parametrize(
    ("retry_clock", "now", "retry_after"),
    [(1_012.5, 1_000.0, 12.5), (None, 1_000.0, None), (1_000.0, 1_000.0, 0.0)],
)
def test_a_breakers_own_rejection_carries_two_clock_readings(
    retry_clock: float | None, now: float, retry_after: float | None
) -> None:
    """The hot path passes ``(circuit, state, retry_clock, now)``: the error reads as the
    three-value one, in a pickled copy too."""
    error = CircuitOpenError("payments", State.OPEN, retry_clock, now)
    by_hand = CircuitOpenError("payments", State.OPEN, retry_after)
    for seen in (error, pickle.loads(pickle.dumps(error))):
        assert seen.circuit == "payments"
        assert seen.state is State.OPEN
        assert seen.retry_after == retry_after
        assert str(seen) == str(by_hand)
        assert repr(seen) == repr(by_hand)
    assert repr(by_hand) == f"CircuitOpenError('payments', {State.OPEN!r}, {retry_after!r})"


def test_an_error_built_some_other_way_keeps_its_own_words() -> None:
    error = CircuitOpenError("copied by a library")
    assert str(error) == "copied by a library"
    assert repr(error) == "CircuitOpenError('copied by a library')"


def test_the_error_has_no_weakref_slot_but_keeps_attributes_and_subclasses() -> None:
    """``__slots__ = ()``: freeing an error skips clearing weak references (a rejection's
    cost); attributes set on it (BaseException's own ``__dict__``) survive a pickle."""
    error = CircuitOpenError("payments", State.OPEN, 3.0)
    with pytest.raises(TypeError):
        weakref.ref(error)
    error.note = "set by a caller"
    assert pickle.loads(pickle.dumps(error)).note == "set by a caller"

    class Custom(CircuitOpenError):
        pass

    assert str(Custom("payments", State.OPEN, None)) == "circuit 'payments' is open"
