"""Resilience4j's scenarios (``CircuitBreakerStateMachineTest``,
``SlidingTimeWindowMetricsTest``, ``FixedSizeSlidingWindowMetricsTest``,
``CircuitBreakerResultHandlingTest``), told again on our public API with DESIGN §3's
semantics; where Resilience4j decides otherwise the docstring says so.

Real ``breaker()`` handles on the configured backend, a fake clock, never a sleep
(``tests/peers.py``). The first ports are in ``tests/test_peer_scenarios.py``.
"""

from __future__ import annotations

import pytest

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import Snapshot
from circuitbreaker_app.models import Circuit
from tests.helpers import FakeStore
from tests.peers import fail, fake_store, live, reasons, succeed, taking, window

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake(monkeypatch):
    return fake_store(monkeypatch)


@pytest.mark.parametrize("window_type", ["count", "time"])
def test_successes_one_process_batched_open_a_window_anothers_failures_filled(fake, window_type):
    """``shouldOpenAfterFailureRateThresholdExceeded`` in a fleet (pybreaker's storage
    shared by several machines): one process's two successes, batched in memory, and
    another's two failures make F F S S in a window of 4 calls (minimum 4, 50 %). The
    circuit opens when the batch is written (within ``STATE_TTL``): the first process's
    next call is rejected, and the other sees OPEN after its own ``STATE_TTL``.

    Regression: the batch was written without a decision, so the window read 2 failures
    of 4 calls (50 %) under a CLOSED circuit, and the next success (40 %) let it pass."""
    size = 4 if window_type == "count" else 10
    Circuit.objects.create(
        name="payments", window_type=window_type, window_size=size, minimum_calls=4
    )
    succeed(fake, "payments")  # batched by this process
    other = FakeStore(fake.clock).install()
    fail(other, "payments")
    fail(other, "payments")
    fake.install()
    succeed(fake, "payments")  # batched too: this process has not seen the failures yet
    assert window(fake, "payments") == Snapshot(calls=2, failures=0, slow=0)
    fake.advance(1.0)  # STATE_TTL: the next call writes the batch and re-reads
    with pytest.raises(CircuitOpenError):
        breaker("payments").call(taking(fake, 0.0))
    assert reasons("payments") == [("closed", "open", "failure_rate_above_threshold")]
    status = live("payments")
    assert (status.state, status.trip.calls, status.trip.failure_rate) == (State.OPEN, 4, 50.0)
    other.install()
    with pytest.raises(CircuitOpenError):
        breaker("payments").call(taking(other, 0.0))
