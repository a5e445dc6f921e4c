"""``circuitbreaker_app.celery``: tasks that meet an open circuit retry at ``retry_after``.

Celery runs in eager mode (no broker, no worker): a retry then runs at once, so the
countdown each retry asked for is read from the ``task_retry`` signal, and the fake clock
is moved by exactly that countdown between attempts, as a worker's ETA would.
"""

from __future__ import annotations

import pytest
from celery import Celery
from celery.signals import task_retry

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.celery import (
    CircuitBreakerTask,
    retry_countdown,
    retry_later,
    retry_when_open,
)
from circuitbreaker_app.core.config import DEFAULT_WAIT_DURATION
from circuitbreaker_app.store import get_store
from tests.helpers import TWO_STRAIGHT, fake_store_with

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake():
    return fake_store_with("payments", **TWO_STRAIGHT, half_open_max_calls=1)


@pytest.fixture
def opened(fake):
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker("payments").call(_down)
    fake.advance(0.4)  # 29.6 s left: the countdown rounds up to 30
    return fake


def _down() -> None:
    raise ConnectionError("down")


@pytest.fixture
def app():
    app = Celery("circuitbreaker-tests", set_as_current=False)
    app.conf.task_always_eager = True
    return app


@pytest.fixture
def upstream():
    """The dependency the tasks call: records every call that reaches it."""
    calls: list[int] = []

    def charge(order: int) -> str:
        calls.append(order)
        return f"charged {order}"

    charge.calls = calls  # type: ignore[attr-defined]
    return charge


@pytest.fixture
def retries(fake):
    """Countdowns asked for by retries; each one moves the fake clock by that much."""
    seen: list[float] = []

    def receiver(sender=None, reason=None, **kwargs):
        seen.append(reason.when)
        fake.advance(reason.when)

    task_retry.connect(receiver, weak=False)
    yield seen
    task_retry.disconnect(receiver)


@pytest.fixture(params=["base_class", "decorator"])
def charge_task(request, app, upstream):
    if request.param == "base_class":

        @app.task(base=CircuitBreakerTask, max_retries=3, name=f"tests.charge.{request.node.name}")
        def charge(order: int) -> str:
            return breaker("payments").call(upstream, order)

    else:

        @app.task(bind=True, max_retries=3, name=f"tests.charge.{request.node.name}")
        @retry_when_open
        def charge(self, order: int) -> str:
            return breaker("payments").call(upstream, order)

    return charge


def test_open_circuit_retries_at_retry_after_then_succeeds(opened, charge_task, upstream, retries):
    result = charge_task.delay(7)
    assert result.state == "SUCCESS"
    assert result.result == "charged 7"
    assert retries == [30]  # one retry, 30 s later: the circuit then admitted the trial
    assert upstream.calls == [7]
    assert breaker("payments").state is State.CLOSED


def test_max_retries_is_respected_then_the_task_fails(fake, app, upstream, retries):
    get_store().move_to("payments", State.FORCED_OPEN, "maintenance")

    @app.task(base=CircuitBreakerTask, max_retries=2, name="tests.charge_max_retries")
    def charge(order: int) -> str:
        return breaker("payments").call(upstream, order)

    result = charge.delay(7)
    # retry_after is unknown when forced open: the circuit's wait_duration is used.
    assert retries == [30, 30]
    assert result.state == "FAILURE"
    assert isinstance(result.result, CircuitOpenError)
    assert result.result.state is State.FORCED_OPEN
    assert upstream.calls == []


def test_a_rejection_is_not_counted_by_the_breaker(opened, app, upstream, retries):
    @app.task(base=CircuitBreakerTask, max_retries=0, name="tests.charge_no_retry")
    def charge(order: int) -> str:
        return breaker("payments").call(upstream, order)

    result = charge.delay(1)
    assert result.state == "FAILURE"
    assert retries == []  # max_retries=0: no retry at all
    runtime = get_store().runtime("payments")
    assert runtime.snapshot().calls == 0
    assert runtime.status.state is State.OPEN


def test_other_exceptions_fail_the_task_without_retry(fake, app, retries):
    @app.task(base=CircuitBreakerTask, max_retries=3)
    def broken() -> None:
        raise ValueError("a bug, not an outage")

    result = broken.delay()
    assert result.state == "FAILURE"
    assert isinstance(result.result, ValueError)
    assert retries == []


def test_called_directly_the_task_raises_circuit_open(opened, charge_task, upstream):
    with pytest.raises(CircuitOpenError):
        charge_task(1)
    assert upstream.calls == []


def test_explicit_retry_later_with_options(opened, app, upstream, retries):
    @app.task(bind=True, max_retries=3, name="tests.charge_retry_later")
    def charge(self, order: int) -> str:
        try:
            return breaker("payments").call(upstream, order)
        except CircuitOpenError as exc:
            raise retry_later(self, exc, countdown=45) from exc

    assert charge.delay(3).result == "charged 3"
    assert retries == [45]


def test_retry_countdown():
    assert retry_countdown(CircuitOpenError("x", State.OPEN, 29.2)) == 30
    assert retry_countdown(CircuitOpenError("x", State.OPEN, 0.0)) == 1
    with pytest.raises(TypeError, match="CircuitOpenError"):
        retry_countdown(ValueError("nope"))  # type: ignore[arg-type]


def test_unknown_wait_duration_falls_back_to_the_default(db, settings, caplog):
    settings.CIRCUITBREAKER = {"AUTO_CREATE": False}
    exc = CircuitOpenError("never-defined", State.FORCED_OPEN, None)
    assert retry_countdown(exc) == DEFAULT_WAIT_DURATION
    assert "never-defined" in caplog.text


def test_the_decorator_needs_a_bound_task(app):
    @app.task(max_retries=1)
    @retry_when_open
    def unbound(order: int) -> None:
        raise CircuitOpenError("payments", State.OPEN, 1)

    with pytest.raises(TypeError, match="bind=True"):
        unbound.apply(args=(1,)).get()
    with pytest.raises(TypeError, match="task function"):
        retry_when_open("not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="running Celery task"):
        retry_later(object(), CircuitOpenError("x", State.OPEN, 1))  # type: ignore[arg-type]
