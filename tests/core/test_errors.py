"""CircuitOpenError: fields, message and pickling (errors.py)."""

from __future__ import annotations

import pickle

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
