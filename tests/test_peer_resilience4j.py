"""Resilience4j's scenarios (``CircuitBreakerStateMachineTest``,
``SlidingTimeWindowMetricsTest``), told again on our public API with DESIGN §3's
semantics; where Resilience4j decides otherwise the docstring says so.

Real ``breaker()`` handles on the configured backend, a fake clock, never a sleep
(``tests/peers.py``). The first ports are in ``tests/test_peer_scenarios.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from asgiref.sync import async_to_sync

from circuitbreaker_app import CircuitOpenError, State, breaker, operator
from circuitbreaker_app.core import Snapshot
from circuitbreaker_app.models import Circuit
from tests.helpers import FakeStore
from tests.peers import START, fail, fake_store, live, reasons, succeed, taking, tripped, window

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake(monkeypatch):
    return fake_store(monkeypatch)


def test_a_time_window_opens_once_failures_spread_over_seconds_reach_the_rate(fake):
    """``shouldOpenAfterFailureRateThresholdExceeded2``: in a 20 s window (minimum 5,
    50 %), three successes and two failures a second apart stay below the rate (2/5);
    a third failure a second later makes 3/6 and opens it."""
    Circuit.objects.create(name="payments", window_type="time", window_size=20, minimum_calls=5)
    for outcome in (succeed, succeed, succeed, fail, fail):
        outcome(fake, "payments")
        fake.advance(1)
    assert breaker("payments").state is State.CLOSED
    assert window(fake, "payments") == Snapshot(calls=5, failures=2, slow=0)
    fail(fake, "payments")
    assert breaker("payments").state is State.OPEN
    assert live("payments").trip.calls == 6


def test_half_open_admits_its_permits_again_in_each_half_open_period(fake):
    """``shouldOnlyPermitFourCallsInHalfOpenState``, ``shouldIncreaseCounterOnRelease
    Permission``: four trials held open take the four permits and further calls are
    rejected; a trial that ends ignored hands its permit back to the next call. A failed
    trial reopens the circuit, and the next half-open period has four permits again."""
    tripped(fake, backoff_multiplier=1, half_open_max_calls=4)
    guarded = breaker("payments", ignore=(KeyError,))
    with pytest.raises(ConnectionError), contextlib.ExitStack() as trials:
        for _ in range(3):
            trials.enter_context(guarded)
        with pytest.raises(KeyError), guarded:  # the fourth trial
            for _ in range(2):
                with pytest.raises(CircuitOpenError) as rejected:
                    guarded.call(taking(fake, 0.0))
                assert rejected.value.state is State.HALF_OPEN
            raise KeyError("ignored: hands its permit back")
        fake.advance(0.125)  # past the re-read of a process refused a trial (DESIGN: 0.2 s)
        trials.enter_context(guarded)  # takes the permit handed back
        with pytest.raises(CircuitOpenError):
            guarded.call(taking(fake, 0.0))
        assert guarded.state is State.HALF_OPEN
        raise ConnectionError("every held trial fails")
    assert guarded.state is State.OPEN
    fake.advance(5)
    with contextlib.ExitStack() as trials:
        for _ in range(4):
            trials.enter_context(guarded)
        with pytest.raises(CircuitOpenError):
            guarded.call(taking(fake, 0.0))
    assert guarded.state is State.CLOSED
    assert live("payments").rejected == 4  # not permitted: counted as Resilience4j does
    assert [reason for *_, reason in reasons("payments")] == [
        "failure_rate_above_threshold",
        "wait_elapsed",
        "trial_failed",
        "wait_elapsed",
        "trials_succeeded",
    ]


def test_one_failed_trial_reopens_and_the_other_trials_change_nothing(fake):
    """``shouldTransitionBackToOpenStateWhenFailureRateIsAboveThreshold`` / ``…Back
    ToClosedStateWhenFailureIsBelowThreshold``. Resilience4j judges the trials as a
    window (F S S S closes it at 25 %); DESIGN §3 reopens at any failed trial, so here
    the first of four trials fails and reopens the circuit, and the three others,
    ending well afterwards, neither close it nor enter any window."""
    tripped(fake, backoff_multiplier=2, max_wait_duration=60, half_open_max_calls=4)
    guarded = breaker("payments")
    with contextlib.ExitStack() as trials:
        for _ in range(3):
            trials.enter_context(guarded)
        with pytest.raises(ConnectionError), guarded:
            raise ConnectionError("the first trial to end fails")
        assert guarded.state is State.OPEN
    assert guarded.state is State.OPEN
    assert guarded.retry_after == 10
    assert window(fake, "payments") == Snapshot(calls=0, failures=0, slow=0)
    assert [reason for *_, reason in reasons("payments")][-1] == "trial_failed"


def test_closed_after_trials_counts_from_an_empty_window(fake):
    """``shouldTransitionBackToClosedStateWhenFailureIsBelowThreshold`` (its end): the
    trials that closed the circuit are not in the new window; the next call is its
    first, and two failures of a count window of 3 then keep it closed."""
    Circuit.objects.create(
        name="payments",
        window_size=3,
        minimum_calls=3,
        failure_rate_threshold=50,
        wait_duration=5,
        half_open_max_calls=2,
    )
    for _ in range(3):
        fail(fake, "payments")
    fake.advance(5)
    succeed(fake, "payments")
    succeed(fake, "payments")
    assert breaker("payments").state is State.CLOSED
    assert window(fake, "payments") == Snapshot(calls=0, failures=0, slow=0)
    succeed(fake, "payments")
    assert window(fake, "payments") == Snapshot(calls=1, failures=0, slow=0)
    fail(fake, "payments")
    assert breaker("payments").state is State.CLOSED  # 2 calls: below the minimum
    fail(fake, "payments")
    assert breaker("payments").state is State.OPEN  # S F F: 2/3


def test_forced_open_stays_open_past_the_wait_and_counts_its_rejections(fake):
    """``shouldForceOpenCircuitBreaker``: a circuit forced open does not move to
    HALF_OPEN when ``wait_duration`` has passed; every call is rejected with no retry
    time, and the rejections are counted."""
    Circuit.objects.create(name="payments", wait_duration=5)
    assert operator.force_open("payments")
    called = []
    for _ in range(2):
        with pytest.raises(CircuitOpenError) as rejected:
            breaker("payments").call(called.append, 1)
        assert (rejected.value.state, rejected.value.retry_after) == (State.FORCED_OPEN, None)
        fake.advance(6)
    assert called == []
    assert breaker("payments").state is State.FORCED_OPEN
    status = live("payments")
    assert (status.state, status.retry_after, status.rejected) == (State.FORCED_OPEN, None, 2)


def test_disabled_admits_everything_records_nothing_and_reset_starts_afresh(fake):
    """``shouldDisableCircuitBreaker`` then ``shouldResetMetrics``: a disabled circuit lets
    failures and successes through without recording them; reset returns it to CLOSED
    with an empty window, where failures count from zero."""
    Circuit.objects.create(name="payments", window_size=4, minimum_calls=4)
    fail(fake, "payments")
    assert operator.disable("payments")
    for _ in range(5):
        fail(fake, "payments")
        succeed(fake, "payments")
    assert breaker("payments").state is State.DISABLED
    assert window(fake, "payments") == Snapshot(calls=0, failures=0, slow=0)
    assert operator.reset("payments")
    assert breaker("payments").state is State.CLOSED
    fail(fake, "payments")
    succeed(fake, "payments")
    fail(fake, "payments")
    assert window(fake, "payments") == Snapshot(calls=3, failures=2, slow=0)
    assert breaker("payments").state is State.CLOSED


def test_forced_closed_records_a_fresh_window_and_never_trips(fake):
    """``shouldResetMetricsAfterMetricsOnlyStateTransition``, ``shouldRecordMetricsIn
    MetricsOnlyState`` (Resilience4j's METRICS_ONLY is our FORCED_CLOSED): the move starts
    an empty window; F F F S S then shows 60 % failures, and a sixth failure, over the
    threshold, still admits the next call."""
    Circuit.objects.create(name="payments", window_size=5, minimum_calls=5)
    succeed(fake, "payments")
    succeed(fake, "payments")
    assert operator.force_closed("payments")
    assert window(fake, "payments") == Snapshot(calls=0, failures=0, slow=0)
    for outcome in (fail, fail, fail, succeed, succeed, fail):
        outcome(fake, "payments")
    assert window(fake, "payments") == Snapshot(calls=5, failures=3, slow=0)
    assert live("payments").failure_rate == 60.0
    succeed(fake, "payments")
    assert breaker("payments").state is State.FORCED_CLOSED
    assert reasons("payments")[-1][:2] == ("closed", "forced_closed")


def test_a_forced_closed_count_window_keeps_its_last_calls_as_they_slide(fake):
    """``CircuitBreakerMetricsTest.testCircuitBreakerMetrics``: a count window of 10
    (minimum 10) records S S F F (4 calls, below the minimum), then F F F F S S S S (12
    recorded, the last 10 kept: 6 failures, 60 %), then S S S (3 failures left, 30 %).
    Forced closed, as Resilience4j's metrics object, it never trips."""
    Circuit.objects.create(name="payments", window_size=10, minimum_calls=10)
    assert operator.force_closed("payments")
    seen = []
    for outcomes in ("SSFF", "FFFFSSSS", "SSS"):
        for letter in outcomes:
            (fail if letter == "F" else succeed)(fake, "payments")
        status = live("payments")
        seen.append((status.window, status.failure_rate))
    assert seen == [
        (Snapshot(calls=4, failures=2, slow=0), 50.0),
        (Snapshot(calls=10, failures=6, slow=0), 60.0),
        (Snapshot(calls=10, failures=3, slow=0), 30.0),
    ]
    assert breaker("payments").state is State.FORCED_CLOSED


def test_reset_drops_the_successes_this_process_had_not_written_yet(fake):
    """``shouldResetClosedState``: two successes, then reset: the window is empty, even
    of the successes this process batched and had not written when the reset came. Two
    failures in a count window of 4 (minimum 4, 50 %) then keep it closed."""
    Circuit.objects.create(name="payments", window_size=4, minimum_calls=4)
    succeed(fake, "payments")
    succeed(fake, "payments")
    assert window(fake, "payments") == Snapshot(calls=2, failures=0, slow=0)
    assert operator.reset("payments")
    assert window(fake, "payments") == Snapshot(calls=0, failures=0, slow=0)
    fail(fake, "payments")
    fail(fake, "payments")
    assert breaker("payments").state is State.CLOSED  # S S F F would be 50 % of 4
    assert window(fake, "payments") == Snapshot(calls=2, failures=2, slow=0)


def test_a_time_window_slides_second_by_second(fake):
    """``testSlidingTimeWindowMetrics``: a 5 s window; calls at 0, 0.1, 0.2 s, then one a
    second; the three of the first second leave together when it is 5 s old, the others
    one by one, and after 5 quiet seconds only the newest call is left."""
    Circuit.objects.create(name="payments", window_type="time", window_size=5, minimum_calls=100)
    seen = []
    steps = [(fail, 0.0), (succeed, 0.125), (succeed, 0.25)]
    steps += [(succeed, 1.25), (succeed, 2.25), (fail, 3.25), (succeed, 4.25)]
    steps += [(succeed, 5.25), (succeed, 6.25), (succeed, 11.25)]
    for outcome, at in steps:
        fake.clock.set(START + at)
        outcome(fake, "payments")
        seen.append(window(fake, "payments"))
    assert [(s.calls, s.failures) for s in seen] == [
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 1),
        (5, 1),
        (6, 2),
        (7, 2),
        (5, 1),
        (5, 1),
        (1, 0),
    ]


ENTRY_POINTS = ["call", "decorator", "with", "acall", "async decorator", "async with"]


def caller(entry: str, name: str) -> Callable[[bool], None]:
    """Calls of ``name`` through ``entry``, each a success or a ConnectionError: one handle
    (and one decorated function) for all of them, so later calls take the hot paths."""
    guarded = breaker(name)

    def answer(ok: bool) -> str:
        if not ok:
            raise ConnectionError("down")
        return "ok"

    async def answer_async(ok: bool) -> str:
        return answer(ok)

    decorated, decorated_async = guarded(answer), guarded(answer_async)

    async def run_async(ok: bool) -> None:
        if entry == "acall":
            await guarded.acall(answer_async, ok)
        elif entry == "async decorator":
            await decorated_async(ok)
        else:
            async with guarded:
                answer(ok)

    def run(ok: bool) -> None:
        if entry == "call":
            guarded.call(answer, ok)
        elif entry == "decorator":
            decorated(ok)
        elif entry == "with":
            with guarded:
                answer(ok)
        else:
            async_to_sync(run_async)(ok)

    def call(ok: bool) -> None:
        if ok:
            run(ok)
        else:
            with pytest.raises(ConnectionError):
                run(ok)

    return call


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("window_type", ["count", "time"])
def test_the_success_that_reaches_the_rate_opens_it_whatever_the_entry_point(
    fake, entry, window_type
):
    """``shouldOpenAfterFailureRateThresholdExceeded``, through every way of guarding a
    call: F F S S in a window of 4 calls (minimum 4, 50 %) opens the circuit at the last
    call, a success; the next call is rejected and counted as such."""
    Circuit.objects.create(
        name="payments",
        window_type=window_type,
        window_size=4 if window_type == "count" else 10,
        minimum_calls=4,
    )
    call = caller(entry, "payments")
    for ok in (False, False, True):
        call(ok)
        fake.advance(0.25)
    assert breaker("payments").state is State.CLOSED
    call(True)
    assert breaker("payments").state is State.OPEN
    with pytest.raises(CircuitOpenError):
        call(True)
    status = live("payments")
    assert (status.trip.calls, status.trip.failure_rate, status.rejected) == (4, 50.0, 1)
    assert reasons("payments") == [("closed", "open", "failure_rate_above_threshold")]


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


def test_fast_successes_one_process_batched_open_a_window_anothers_slow_calls_filled(fake):
    """``shouldOpenAfterSlowCallRateThresholdExceeded`` in a fleet: another process's two
    slow successes and this process's two fast ones, batched (calls timed: slow calls are
    configured), make 2 slow calls of 4 (minimum 4, slow-call threshold 50 %). Writing
    the batch opens the circuit, for the slow-call rate."""
    Circuit.objects.create(
        name="payments",
        window_size=4,
        minimum_calls=4,
        slow_call_duration=1.0,
        slow_call_rate_threshold=50,
    )
    succeed(fake, "payments")  # fast: batched by this process
    succeed(fake, "payments")
    other = FakeStore(fake.clock).install()
    succeed(other, "payments", 2.0)
    succeed(other, "payments", 2.0)
    fake.install()
    assert window(fake, "payments") == Snapshot(calls=2, failures=0, slow=0)
    fake.advance(1.0)  # STATE_TTL: the next call writes the batch first
    with pytest.raises(CircuitOpenError):
        breaker("payments").call(taking(fake, 0.0))
    assert reasons("payments") == [("closed", "open", "slow_call_rate_above_threshold")]
