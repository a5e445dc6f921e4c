"""The probe tasks, called directly on a fake clock (no broker: probes run inline).

``tests/test_celery_worker.py`` runs the same flows through a real worker and beat.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import responses

from circuitbreaker_app import CircuitOpenError, State, breaker, probes
from circuitbreaker_app.core import Outcome
from circuitbreaker_app.models import Circuit, CircuitCounter, CircuitEvent
from circuitbreaker_app.store import DatabaseCounters, generation_prefix, state_key
from circuitbreaker_app.tasks import (
    LOCK_KEY,
    PROBE_LEASE_MARGIN,
    probe_circuit,
    probe_circuits,
    resync_cache,
)
from tests.helpers import FakeStore, empty_probe_registry, fake_dns

pytestmark = pytest.mark.django_db(transaction=True)

URL = "http://upstream.test/health"


@pytest.fixture(autouse=True)
def _upstream_resolves(monkeypatch):
    """upstream.test resolves to a documentation address (the probe checks it first)."""
    fake_dns(monkeypatch, {"upstream.test": ["192.0.2.10"]})


TRIP = {
    "window_type": "count",
    "window_size": 2,
    "minimum_calls": 2,
    "failure_rate_threshold": 100,
    "wait_duration": 10,
    "half_open_max_calls": 1,
    "probe_timeout": 1.0,
}


@pytest.fixture
def fake():
    return FakeStore().install()


@pytest.fixture(autouse=True)
def clean_registry():
    with empty_probe_registry():
        yield


def make(name="payments", **fields):
    return Circuit.objects.create(name=name, **{**TRIP, "probe_url": URL, **fields})


def trip(fake, name="payments"):
    runtime = fake.runtime(name)
    for _ in range(2):
        runtime.on_result(runtime.acquire(), Outcome.FAILURE, 0.0)
    assert runtime.status.state is State.OPEN
    return runtime.status.generation


def moves(name="payments"):
    events = CircuitEvent.objects.filter(circuit__name=name).order_by("created_at", "id")
    return [(e.from_state, e.to_state, e.reason) for e in events]


def probed(status):
    """Run ``probe_circuits`` with the upstream answering ``status``; return (result, hits)."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.GET, URL, status=status)
        result = probe_circuits()
        return result, len(rsps.calls)


# -- probe_circuits ------------------------------------------------------------------------


def test_a_due_circuit_goes_half_open_and_a_good_probe_closes_it(fake):
    make()
    trip(fake)
    fake.advance(10)
    result, hits = probed(200)
    assert result == {"forced_ended": 0, "half_opened": 1, "probes": 1, "resynced": 0}
    assert hits == 1
    row = Circuit.objects.get(name="payments")
    assert (row.state, row.open_count, row.retry_at) == ("closed", 0, None)
    assert moves()[1:] == [
        ("open", "half_open", "probe_due"),
        ("half_open", "closed", "probe_succeeded"),
    ]
    assert fake.runtime("payments").status.state is State.CLOSED


def test_a_circuit_that_is_not_due_is_left_alone(fake):
    make()
    trip(fake)
    fake.advance(9.9)
    result, hits = probed(200)
    assert result == {"forced_ended": 0, "half_opened": 0, "probes": 0, "resynced": 0}
    assert hits == 0
    assert Circuit.objects.get(name="payments").state == "open"
    assert len(moves()) == 1


def test_a_failed_probe_reopens_with_the_doubled_wait(fake):
    make()
    trip(fake)
    fake.advance(10)
    assert probed(503)[1] == 1
    row = Circuit.objects.get(name="payments")
    assert (row.state, row.open_count) == ("open", 2)
    assert (row.retry_at - row.opened_at).total_seconds() == pytest.approx(20.0)
    assert [m[2] for m in moves()[1:]] == ["probe_due", "probe_failed"]
    fake.advance(19.9)
    assert probed(200) == ({"forced_ended": 0, "half_opened": 0, "probes": 0, "resynced": 0}, 0)
    fake.advance(0.1)
    assert probed(200)[1] == 1
    assert Circuit.objects.get(name="payments").state == "closed"


def test_without_a_probe_the_task_only_moves_to_half_open_and_live_trials_decide(fake):
    make(probe_url="")
    trip(fake)
    fake.advance(10)
    assert probed(200) == ({"forced_ended": 0, "half_opened": 1, "probes": 0, "resynced": 0}, 0)
    assert Circuit.objects.get(name="payments").state == "half_open"
    assert breaker("payments").call(lambda: "live trial") == "live trial"
    assert Circuit.objects.get(name="payments").state == "closed"


def test_probe_mode_without_a_probe_reopens_and_says_why(fake, caplog):
    make(probe_url="", trial_mode="probe")
    trip(fake)
    fake.advance(10)
    result, _ = probed(200)
    assert result["probes"] == 1
    assert Circuit.objects.get(name="payments").state == "open"
    assert "no probe_url and no registered probe function" in caplog.text


def test_probe_mode_keeps_live_calls_rejected_until_the_probe_succeeds(fake):
    make(probe_url="", trial_mode="probe")
    live = []

    @probes.register("payments")
    def probe():
        try:
            breaker("payments").call(lambda: live.append("reached"))
        except CircuitOpenError as exc:
            live.append(exc.state)
        return True

    trip(fake)
    fake.advance(10)
    with pytest.raises(CircuitOpenError):  # due, but only a probe may try in probe mode
        breaker("payments").call(lambda: live.append("reached"))
    probe_circuits()
    assert live == [State.HALF_OPEN]  # the live call made during the probe was rejected
    assert Circuit.objects.get(name="payments").state == "closed"
    breaker("payments").call(lambda: live.append("reached"))
    assert live == [State.HALF_OPEN, "reached"]


def test_only_one_run_at_a_time_and_the_lock_is_released(fake):
    make()
    trip(fake)
    fake.advance(10)
    assert fake.store.counter_claim(LOCK_KEY, 5)  # another beat/worker is running
    assert probed(200) == ({"locked": 1}, 0)
    assert Circuit.objects.get(name="payments").state == "open"
    fake.store.counter_delete(LOCK_KEY)
    assert probed(200)[1] == 1
    assert fake.store.counter_claim(LOCK_KEY, 5)  # released after the run


def test_expired_permits_in_the_database_counters_are_purged(fake):
    fake.store.counters = DatabaseCounters(fake.store.db_alias, fake.store.now)
    make(probe_url="", trial_lease=5)
    trip(fake)
    fake.advance(10)
    probe_circuits()
    runtime = fake.runtime("payments")
    runtime.acquire()  # a trial whose process dies before it reports
    with pytest.raises(CircuitOpenError):
        runtime.acquire()
    assert CircuitCounter.objects.filter(key__contains="/trial").count() == 1
    fake.advance(5 + 61)
    probe_circuits()
    assert CircuitCounter.objects.filter(key__contains="/trial").count() == 0
    runtime.on_result(runtime.acquire(), Outcome.SUCCESS, 0.0)  # the permit is free again
    assert runtime.status.state is State.CLOSED


def test_resync_rewrites_a_cache_entry_that_missed_transitions(fake):
    make()
    make("inventory")
    trip(fake)
    entry = fake.store.cache.get(state_key("payments"))
    stale = {**entry, "state": "closed", "generation": entry["generation"] - 1, "retry_at": None}
    fake.store.cache.set(state_key("payments"), stale, timeout=None)
    fake.store.cache.delete(state_key("inventory"))
    assert resync_cache() == 1
    assert fake.store.cache.get(state_key("payments"))["state"] == "open"
    assert fake.store.cache.get(state_key("inventory")) is None  # loaded on first use
    assert resync_cache() == 0


# -- probe_circuit --------------------------------------------------------------------------


def probe(name="payments", generation=None, status=200):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.GET, URL, status=status)
        return probe_circuit(name, generation=generation), len(rsps.calls)


def test_duplicate_and_late_deliveries_are_no_ops(fake):
    make()
    opened = trip(fake)
    fake.advance(10)
    assert probe(generation=opened) == ("closed", 1)
    assert probe(generation=opened) == ("skipped: stale delivery", 0)
    assert probe(generation=opened + 1) == ("skipped: stale delivery", 0)
    assert len(moves()) == 3


def test_an_early_delivery_is_a_no_op_that_comes_back_at_retry_at(fake, monkeypatch):
    make()
    opened = trip(fake)
    fake.advance(4)
    assert probe(generation=opened) == ("skipped: not due yet", 0)
    sent = []
    monkeypatch.setattr("circuitbreaker_app.schedule.celery_app", lambda: object())
    monkeypatch.setattr(
        "circuitbreaker_app.schedule.send_probe", lambda *args, **kw: sent.append(args)
    )
    assert probe(generation=opened) == ("skipped: not due yet", 0)
    assert sent == [("payments", opened, pytest.approx(6.1))]
    assert Circuit.objects.get(name="payments").state == "open"


def test_a_probe_already_running_elsewhere_is_not_repeated_until_its_lease_ends(fake):
    fake.store.counters = DatabaseCounters(fake.store.db_alias, fake.store.now)
    make()
    trip(fake)
    fake.advance(10)
    fake.store.advance("payments", State.OPEN, State.HALF_OPEN, "probe_due")
    half = Circuit.objects.get(name="payments").generation
    circuit_id = Circuit.objects.get(name="payments").pk
    # A worker took the probe permit, then died.
    assert fake.store.counter_claim(
        f"{generation_prefix('payments', half, circuit_id=circuit_id)}/probe", 1.0 + 2.0
    )
    assert probe(generation=half) == ("skipped: a probe is already running", 0)
    fake.advance(1.0 + PROBE_LEASE_MARGIN)
    assert probe(generation=half) == ("closed", 1)


def test_probe_now_on_an_open_circuit_that_is_not_due_closes_it_when_healthy(fake):
    make()
    trip(fake)
    fake.advance(1)
    assert probe() == ("closed", 1)
    assert [m[2] for m in moves()[1:]] == ["probe_requested", "probe_succeeded"]
    assert moves()[1][:2] == ("open", "half_open")


def test_probe_now_that_fails_leaves_the_circuit_open_without_extra_backoff(fake, caplog):
    make()
    trip(fake)
    before = Circuit.objects.get(name="payments")
    fake.advance(1)
    assert probe(status=500) == ("failed: circuit stays open", 1)
    after = Circuit.objects.get(name="payments")
    assert (after.state, after.generation, after.open_count, after.retry_at) == (
        "open",
        before.generation,
        before.open_count,
        before.retry_at,
    )
    assert "requested probe failed (HTTP 500)" in caplog.text


def test_probe_now_without_a_probe_on_a_waiting_circuit_does_nothing(fake):
    make(probe_url="")
    trip(fake)
    assert probe() == ("skipped: not due yet and no probe to run", 0)


def test_probe_now_on_a_closed_circuit_does_nothing(fake):
    make()
    assert probe() == ("skipped: circuit is closed", 0)


def test_an_unknown_circuit_is_a_logged_no_op_and_is_not_created(fake, caplog):
    caplog.set_level(logging.INFO, logger="circuitbreaker_app")
    assert probe("ghost") == ("skipped: no such circuit", 0)
    assert probe("ghost", generation=3) == ("skipped: no such circuit", 0)
    assert not Circuit.objects.filter(name="ghost").exists()
    assert "no such circuit" in caplog.text


def test_a_circuit_deleted_while_its_probe_runs_is_left_deleted(fake):
    make(probe_url="")

    @probes.register("payments")
    def delete_then_answer():
        Circuit.objects.filter(name="payments").delete()
        return True

    trip(fake)
    fake.advance(10)
    assert probe_circuit("payments") == "skipped: no such circuit"
    assert not Circuit.objects.filter(name="payments").exists()


@pytest.mark.parametrize("url", ["ftp://upstream.test/health", "http://[::1/health"])
def test_a_bad_probe_url_is_a_failed_probe(fake, url):
    make()
    Circuit.objects.filter(name="payments").update(probe_url=url)  # bypasses validation
    trip(fake)
    fake.advance(10)
    assert probe_circuit("payments") == "reopened"
    assert Circuit.objects.get(name="payments").open_count == 2


def test_a_probe_function_that_raises_or_hangs_is_a_failed_probe(fake):
    make(probe_url="", probe_timeout=0.2)
    make("inventory", probe_url="", probe_timeout=0.2)
    release = threading.Event()
    probes.register("payments")(lambda: 1 / 0)
    probes.register("inventory")(lambda: release.wait(10))
    trip(fake)
    trip(fake, "inventory")
    fake.advance(10)
    started = time.monotonic()
    try:
        assert probe_circuit("payments") == "reopened"
        assert probe_circuit("inventory") == "reopened"
        assert time.monotonic() - started < 1.5
    finally:
        release.set()
        probes._running["inventory"].join(5)
    assert Circuit.objects.filter(state="open", open_count=2).count() == 2


def test_the_beat_task_records_dashboard_samples():
    from circuitbreaker_app.models import Circuit, CircuitSample
    from circuitbreaker_app.tasks import probe_circuits

    Circuit.objects.create(name="sampled")
    probe_circuits()
    assert CircuitSample.objects.filter(circuit__name="sampled").count() == 1
