"""When probes are sent: the beat entry, Celery detection, and the probe a trip schedules."""

from __future__ import annotations

import logging
import math
import time

import pytest
import responses
from celery import Celery
from celery import _state as celery_state
from django.test import override_settings

from circuitbreaker_app import breaker, schedule
from circuitbreaker_app.core import Outcome, State
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.tasks import beat_schedule as tasks_beat_schedule
from circuitbreaker_app.tasks import probe_circuits
from tests.helpers import FakeStore, fake_dns

PROBE = "circuitbreaker_app.tasks.probe_circuit"
TRIP = {
    "window_type": "count",
    "window_size": 2,
    "minimum_calls": 2,
    "failure_rate_threshold": 100,
    "wait_duration": 10,
    "probe_url": "http://upstream.test/health",
}


class StubApp:
    """Records what would have been sent to the broker (or refuses, like a dead one)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.sent: list[tuple] = []

    def send_task(self, name, args=None, kwargs=None, **options):
        if self.error is not None:
            raise self.error
        self.sent.append((name, args, kwargs, options))


@pytest.fixture(autouse=True)
def fresh_sender(monkeypatch):
    monkeypatch.setattr(schedule, "_send_state", schedule._SendState())


@pytest.fixture
def fake():
    return FakeStore().install()


def use(monkeypatch, app):
    monkeypatch.setattr(schedule, "celery_app", lambda: app)
    return app


def trip(fake, name="payments"):
    runtime = fake.runtime(name)
    for _ in range(2):
        runtime.on_result(runtime.acquire(), Outcome.FAILURE, 0.0)
    assert runtime.status.state is State.OPEN
    assert schedule._sender.drain(5)
    return runtime.status.generation


# -- the beat entry -----------------------------------------------------------------------


def test_beat_schedule_runs_probe_circuits_every_interval_and_expires_stale_runs():
    expected = {
        "circuitbreaker-probe-circuits": {
            "task": "circuitbreaker_app.tasks.probe_circuits",
            "schedule": 2.5,
            "options": {"expires": 2.5},
        }
    }
    assert schedule.beat_schedule(2.5) == expected
    with override_settings(CIRCUITBREAKER={"PROBE_INTERVAL": 2.5}):
        assert tasks_beat_schedule() == expected
    assert schedule.beat_schedule()["circuitbreaker-probe-circuits"]["schedule"] == 5.0


@pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf, "5", True])
def test_beat_schedule_rejects_bad_intervals(interval):
    with pytest.raises(ValueError, match="positive number of seconds"):
        schedule.beat_schedule(interval)


# -- is Celery set up? ----------------------------------------------------------------------


def test_celery_app_is_none_without_a_project_app_or_when_eager():
    previous = celery_state._tls.current_app
    celery_state._set_current_app(None)
    app = Celery("cb-unit", broker="memory://", set_as_current=False, fixups=[])
    try:
        assert schedule.celery_app() is None  # Celery's implicit fallback app
        app.set_current()
        assert schedule.celery_app() is app
        app.conf.task_always_eager = True  # sending would run the probe right now
        assert schedule.celery_app() is None
        app.conf.task_always_eager = False
        app.conf.broker_url = None  # an app without a broker (e.g. imported by a test)
        assert schedule.celery_app() is None
    finally:
        celery_state._set_current_app(previous)
        app.close()


# -- a trip schedules its probe ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_trip_sends_its_probe_for_retry_at(fake, monkeypatch):
    app = use(monkeypatch, StubApp())
    Circuit.objects.create(name="payments", **TRIP)
    generation = trip(fake)
    assert app.sent == [
        (
            PROBE,
            ["payments"],
            {"generation": generation},
            {"countdown": pytest.approx(10.1), "expires": pytest.approx(15.1), "retry": False},
        )
    ]


@pytest.mark.django_db(transaction=True)
def test_other_transitions_send_nothing(fake, monkeypatch):
    Circuit.objects.create(name="payments", **TRIP)
    trip(fake)
    app = use(monkeypatch, StubApp())
    fake.advance(10)
    fake.store.advance("payments", State.OPEN, State.HALF_OPEN, "probe_due")
    fake.store.advance("payments", State.HALF_OPEN, State.CLOSED, "probe_succeeded")
    assert schedule._sender.drain(5)
    assert app.sent == []


@pytest.mark.django_db(transaction=True)
def test_without_celery_a_trip_sends_nothing(fake):
    assert schedule.celery_app() is None  # the test process has no Celery app
    Circuit.objects.create(name="payments", **TRIP)
    trip(fake)
    assert schedule._sender.queue is None or schedule._sender.queue.unfinished_tasks == 0


@pytest.mark.django_db(transaction=True)
def test_a_refusing_broker_is_logged_once_and_never_reaches_the_guarded_call(
    fake, monkeypatch, caplog
):
    app = use(monkeypatch, StubApp(error=OSError("broker down")))
    Circuit.objects.create(name="payments", **TRIP)
    Circuit.objects.create(name="inventory", **TRIP)

    def failing():
        raise RuntimeError("upstream says no")

    for name in ("payments", "inventory"):
        for _ in range(2):
            with pytest.raises(RuntimeError, match="upstream says no"):
                breaker(name).call(failing)
        assert fake.runtime(name).status.state is State.OPEN
    assert schedule._sender.drain(5)
    warnings = [r for r in caplog.records if "cannot send probe tasks" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    # Sending resumes after the pause, and says so.
    caplog.set_level(logging.INFO, logger="circuitbreaker_app")
    app.error = None
    schedule._send_state.paused_until = 0.0
    assert schedule.send_probe("payments", 1, 0.0)
    assert "sending probe tasks works again" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_real_broker_costs_the_guarded_call_nothing(fake, monkeypatch, caplog):
    app = use(
        monkeypatch,
        Celery("cb-unit", broker="redis://127.0.0.1:1/0", set_as_current=False, fixups=[]),
    )
    Circuit.objects.create(name="payments", **TRIP)

    def failing():
        raise RuntimeError("upstream says no")

    try:
        started = time.monotonic()
        for _ in range(2):
            with pytest.raises(RuntimeError):
                breaker("payments").call(failing)
        assert time.monotonic() - started < 0.5  # the background thread does the sending
        assert fake.runtime("payments").status.state is State.OPEN
        assert schedule._sender.drain(30)  # redis-py retries a refused connect for seconds
        assert "cannot send probe tasks (OperationalError" in caplog.text
    finally:
        app.close()


# -- fan-out ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_celery_the_fan_out_sends_one_task_per_circuit_instead_of_probing(fake, monkeypatch):
    Circuit.objects.create(name="payments", **TRIP)
    Circuit.objects.create(name="inventory", **TRIP)
    trip(fake)
    trip(fake, "inventory")
    app = use(monkeypatch, StubApp())
    fake.advance(10)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        assert probe_circuits() == {"forced_ended": 0, "half_opened": 2, "probes": 2, "resynced": 0}
        assert len(rsps.calls) == 0
    generations = dict(Circuit.objects.values_list("name", "generation"))
    assert sorted(app.sent) == [
        (
            PROBE,
            [name],
            {"generation": generations[name]},
            {"countdown": None, "expires": 5.0, "retry": False},
        )
        for name in ("inventory", "payments")
    ]


@pytest.mark.django_db(transaction=True)
def test_when_the_broker_refuses_the_fan_out_probes_inline(fake, monkeypatch):
    fake_dns(monkeypatch, {"upstream.test": ["192.0.2.10"]})
    Circuit.objects.create(name="payments", **TRIP)
    trip(fake)
    use(monkeypatch, StubApp(error=OSError("broker down")))
    fake.advance(10)
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, TRIP["probe_url"], status=200)
        probe_circuits()
        assert len(rsps.calls) == 1
    assert Circuit.objects.get(name="payments").state == "closed"
