"""Polly's scenarios (v8: ``CircuitBreakerResiliencePipelineBuilderTests``,
``CircuitStateControllerTests``, ``RollingHealthMetricsTests``), told again on our public
API with DESIGN §3's semantics; where Polly decides otherwise the docstring says so.

Real ``breaker()`` handles on the configured backend, a fake clock, never a sleep
(``tests/peers.py``).
"""

from __future__ import annotations

import pytest

from circuitbreaker_app.core import Snapshot
from circuitbreaker_app.models import Circuit
from tests.peers import START, fail, fake_store, live, succeed, window

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake(monkeypatch):
    return fake_store(monkeypatch)


@pytest.mark.parametrize("size", [10, 60, 61, 90, 119, 121, 3_601])
def test_calls_leave_a_time_window_of_any_size_by_its_size(fake, size):
    """``GetHealthInfo_SamplingDurationRespected``: calls are gone from the window once
    ``window_size`` seconds have passed, whatever the size (DESIGN §3: a call counts
    "only during the ``window_size`` seconds after it happened"), and still there a
    little before. Windows over 60 s use buckets of several seconds (at most 60 buckets).

    Regression: a size that is not a multiple of its bucket width (61 s: 2 s buckets) was
    rounded up to whole buckets, keeping calls up to a bucket longer (62 s)."""
    Circuit.objects.create(name="payments", window_type="time", window_size=size, minimum_calls=100)
    succeed(fake, "payments")
    fail(fake, "payments")
    width = -(-size // 60)  # the bucket width: ceil(size / 60)
    fake.clock.set(START + size - 2 * width)
    assert window(fake, "payments") == Snapshot(calls=2, failures=1, slow=0)
    fake.clock.set(START + size)
    assert window(fake, "payments") == Snapshot(calls=0, failures=0, slow=0)
    assert live("payments").window == Snapshot(calls=0, failures=0, slow=0)
