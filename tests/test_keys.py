"""Counter keys belong to one circuit row, not to a name.

A circuit deleted and created again under the same name is a new circuit (a new id) whose
generation starts at 0 again. Its window, trial permits and probe lease must start empty
on every counter backend, even while the old circuit's counters have not expired yet:
the keys carry the circuit's id as well as its name and generation.
"""

from __future__ import annotations

import uuid

import pytest
from django.test import override_settings

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import FakeClock
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import generation_prefix, reset_store
from tests.helpers import BACKENDS, FakeStore, backend_settings

pytestmark = pytest.mark.django_db(transaction=True)

#: "Open after 3 failures in the last 5 calls" (count) or "in the last 60 s" (time).
DEFINITION = {"window_size": 5, "minimum_calls": 3, "failure_rate_threshold": 50}


def fail(name: str) -> None:
    def down() -> None:
        raise ConnectionError("upstream down")

    with pytest.raises(ConnectionError):
        breaker(name).call(down)


def test_the_prefix_names_the_circuit_row_and_its_period():
    assert generation_prefix("payments", 3, circuit_id=7) == "circuitbreaker/2/{payments}/c7/g3"
    assert generation_prefix("payments", 3, circuit_id=7) != generation_prefix(
        "payments", 3, circuit_id=8
    )


@pytest.mark.parametrize("window_type", ["count", "time"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_recreated_circuit_starts_with_an_empty_window(backend, window_type, tmp_path):
    name = f"recreated-{uuid.uuid4().hex[:8]}"  # Redis keeps counters across test runs
    definition = {**DEFINITION, "window_type": window_type}
    if window_type == "time":
        definition["window_size"] = 60
    with override_settings(**backend_settings(backend, tmp_path)):
        clock = FakeClock(1_000_000.0)
        first, second, admin = FakeStore(clock), FakeStore(clock), FakeStore(clock)
        try:
            old = Circuit.objects.create(name=name, **definition)
            first.install()
            fail(name)
            fail(name)  # two failures in the shared window, one short of opening
            assert first.runtime(name).snapshot().failures == 2
            admin.install()  # an operator deletes and re-creates it, in a process of its own
            old.delete()
            new = Circuit.objects.create(name=name, **definition)
            assert new.pk != old.pk and new.generation == old.generation == 0

            # Another process uses the new circuit first: the old failures are not its own.
            second.install()
            fail(name)
            runtime = second.runtime(name)
            assert runtime.status.state is State.CLOSED
            assert (runtime.snapshot().calls, runtime.snapshot().failures) == (1, 1)

            # The process that knew the old circuit re-reads the state after STATE_TTL and
            # takes the new circuit's window, not the old one it held.
            first.install()
            clock.advance(1.5)
            fail(name)
            runtime = first.runtime(name)
            assert runtime.circuit_id == new.pk
            assert runtime.status.state is State.CLOSED
            assert (runtime.snapshot().calls, runtime.snapshot().failures) == (2, 2)
            fail(name)  # the third failure of the new circuit opens it
            assert runtime.status.state is State.OPEN
            with pytest.raises(CircuitOpenError):
                breaker(name).call(lambda: None)
        finally:
            Circuit.objects.filter(name=name).delete()
            reset_store()
