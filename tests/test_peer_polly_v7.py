"""Polly's v7 scenarios (``Polly.Specs``: ``AdvancedCircuitBreakerSpecs`` and its
cancellation specs), told again on our public API with DESIGN §3's semantics; where Polly
decides otherwise the docstring says so. Polly v8's are in ``tests/test_peer_polly.py``.

Real ``breaker()`` handles on the configured backend, a fake clock, never a sleep
(``tests/peers.py``).
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync

from circuitbreaker_app import CircuitOpenError, State, breaker, operator
from circuitbreaker_app.core import Snapshot
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.tasks import probe_circuits
from tests.peers import (
    START,
    fail,
    fake_store,
    live,
    reasons,
    signalled_moves,
    succeed,
    tripped,
    window,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake(monkeypatch):
    return fake_store(monkeypatch)


@pytest.fixture
def moves():
    """The ``state_changed`` signals sent during the test, as (old, new)."""
    yield from signalled_moves()


def test_a_time_window_counts_the_calls_at_its_edge_on_both_sides(fake):
    """v7 ``AdvancedCircuitBreakerSpecs``: ``Should_open_circuit_if_failures_at_end_of_last
    _timeslice_below_failure_threshold_and_failures_in_beginning_of_new_timeslice_where
    _total_equals_failure_threshold`` and its twin ``…when_below_minimum_throughput
    _threshold``. A 10 s window (minimum 4, 50 %): a success at 0 s, calls in the last
    moment of the tenth second, then a failure at 10 s, when the first success has left:
    S S F + F opens it (2 of 4), F F + F does not (3 calls)."""
    for name in ("payments", "search"):
        Circuit.objects.create(name=name, window_type="time", window_size=10, minimum_calls=4)
        succeed(fake, name)
    fake.clock.set(START + 9.875)
    succeed(fake, "payments")
    succeed(fake, "payments")
    fail(fake, "payments")
    fail(fake, "search")
    fail(fake, "search")
    assert [breaker(name).state for name in ("payments", "search")] == [State.CLOSED] * 2
    fake.clock.set(START + 10)
    fail(fake, "payments")
    fail(fake, "search")
    assert breaker("payments").state is State.OPEN
    assert live("payments").trip.calls == 4
    assert breaker("search").state is State.CLOSED
    assert window(fake, "search") == Snapshot(calls=3, failures=3, slow=0)


def test_a_failure_that_ends_after_the_trip_opens_nothing_again(fake, moves):
    """v7 ``Should_call_onbreak_when_breaking_circuit_first_time_but_not_for_subsequent
    _call_failure_which_arrives_on_open_state_though_started_on_closed_state``: a call
    admitted while CLOSED fails after other calls opened the circuit: no second
    transition or signal, and its failure is in no window (the next period starts empty)."""
    Circuit.objects.create(
        name="payments",
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=100,
        wait_duration=5,
        half_open_max_calls=1,
    )
    guarded = breaker("payments")
    with pytest.raises(ConnectionError), guarded:  # admitted while CLOSED
        fail(fake, "payments")
        fail(fake, "payments")
        assert moves == [("closed", "open")]
        raise ConnectionError("ends after the trip")
    assert moves == [("closed", "open")]
    assert guarded.retry_after == 5
    assert window(fake, "payments") == Snapshot(calls=0, failures=0, slow=0)
    fake.advance(5)
    succeed(fake, "payments")
    assert moves[1:] == [("open", "half_open"), ("half_open", "closed")]
    assert window(fake, "payments") == Snapshot(calls=0, failures=0, slow=0)


def test_reading_the_state_moves_nothing_the_beat_or_a_call_does(fake, moves):
    """v7 ``Should_call_onhalfopen_when_automatically_transitioning_to_halfopen_due_to
    _state_read``: in Polly reading the state after the break moves the circuit to
    HALF_OPEN. DESIGN §3 moves it "on the next call or by the beat task": reading
    ``state`` and ``retry_after`` moves nothing, a beat before ``retry_at`` neither, the
    beat after it does (one signal), and the next call is the trial."""
    Circuit.objects.create(
        name="payments",
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=100,
        wait_duration=5,
        half_open_max_calls=1,
    )
    fail(fake, "payments")
    fail(fake, "payments")
    fake.advance(4.875)
    assert probe_circuits()["half_opened"] == 0
    fake.advance(0.125)
    guarded = breaker("payments")
    assert (guarded.state, guarded.retry_after) == (State.OPEN, 0.0)
    assert moves == [("closed", "open")]
    assert probe_circuits()["half_opened"] == 1
    assert guarded.state is State.HALF_OPEN
    assert moves == [("closed", "open"), ("open", "half_open")]
    succeed(fake, "payments")
    assert moves[2:] == [("half_open", "closed")]


def test_a_reset_open_circuit_starts_its_backoff_over(fake):
    """v7 ``Should_be_able_to_reset_automatically_opened_circuit_without_specified
    _duration_passing``: a reset closes an open circuit before its wait is over. After two
    opens (the second waiting 20 s) a reset lets calls through at once, and the next trip
    waits ``wait_duration`` again: ``open_count`` is 0 after a reset (DESIGN §1)."""
    Circuit.objects.create(
        name="payments",
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=100,
        wait_duration=10,
        backoff_multiplier=2,
        half_open_max_calls=1,
    )
    fail(fake, "payments")
    fail(fake, "payments")
    fake.advance(10)
    fail(fake, "payments")  # the trial
    assert breaker("payments").retry_after == 20
    assert operator.reset("payments")
    succeed(fake, "payments")
    fail(fake, "payments")
    fail(fake, "payments")
    assert breaker("payments").state is State.OPEN  # S F F: the last two of 2
    assert breaker("payments").retry_after == 10
    assert live("payments").open_count == 1


def test_a_cancelled_trial_hands_its_permit_back(fake):
    """``Should_report_cancellation_during_faulting_action_execution…`` (Polly reports a
    cancelled execution as cancelled, not as a fault): a half-open trial awaited through
    ``acall`` and cancelled is neither success nor failure (``CancelledError`` is a
    ``BaseException``); it hands its permit back and the next call is the trial."""
    tripped(fake, half_open_max_calls=1)
    guarded = breaker("payments")

    async def scenario() -> None:
        started, never = asyncio.Event(), asyncio.Event()

        async def hang() -> str:
            started.set()
            await never.wait()
            return "never"

        async def answer() -> str:
            return "ok"

        trial = asyncio.ensure_future(guarded.acall(hang))
        await started.wait()
        with pytest.raises(CircuitOpenError):
            await guarded.acall(answer)  # the one permit is taken
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        assert guarded.state is State.HALF_OPEN
        fake.advance(0.125)  # past the re-read of a process refused a trial
        assert await guarded.acall(answer) == "ok"

    async_to_sync(scenario)()
    assert guarded.state is State.CLOSED
    assert [reason for *_, reason in reasons("payments")][-2:] == [
        "wait_elapsed",
        "trials_succeeded",
    ]
