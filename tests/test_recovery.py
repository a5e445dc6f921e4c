"""The fleet recovers together (DESIGN §3): a process refused a trial re-reads within 0.2 s.

Two ``CircuitStore`` objects on one fake clock stand for two processes (as in
``tests/test_store.py``); their cache operations are counted with ``CountingCache``, so
the tests also pin down what waiting costs: nothing between two re-reads, one refresh
and one permit attempt per :data:`RECHECK_INTERVAL`, and nothing at all for closed
successes and open rejections outside those windows. ``tests/test_fleet.py`` measures the
same with real processes.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import FakeClock, Outcome
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store.runtime import RECHECK_INTERVAL
from tests.helpers import FakeStore

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 10.0


@pytest.fixture
def pair(db):
    Circuit.objects.create(
        name="payments",
        window_type="count",
        window_size=4,
        minimum_calls=4,
        failure_rate_threshold=100,
        wait_duration=WAIT,
        backoff_multiplier=1,
        half_open_max_calls=1,
    )
    clock = FakeClock(1_000_000.0)
    return FakeStore(clock), FakeStore(clock)


def circuit_queries(captured: CaptureQueriesContext) -> list[str]:
    """Queries on the circuits and events tables (not the cache's own table, or the
    counters table, which are the cache on the database-cache variant)."""
    tables = ('"circuitbreaker_app_circuit"', '"circuitbreaker_app_circuitevent"')
    return [q["sql"] for q in captured.captured_queries if any(t in q["sql"] for t in tables)]


def trip(runtime) -> None:
    for _ in range(4):
        permit = runtime.acquire()
        runtime.on_result(permit, Outcome.FAILURE, 0.0)
    assert runtime.status.state is State.OPEN


def refused(runtime) -> CircuitOpenError:
    with pytest.raises(CircuitOpenError) as info:
        runtime.acquire()
    return info.value


def half_open_with_trial_taken(a, b):
    """A trips the circuit, waits, and takes the only trial; B is refused it."""
    ra, rb = a.runtime("payments"), b.runtime("payments")
    trip(ra)
    a.advance(WAIT)
    trial = ra.acquire()
    assert trial.trial_slot == 0
    assert refused(rb).state is State.HALF_OPEN
    return ra, rb, trial


def test_a_process_refused_a_trial_learns_of_the_close_within_the_recheck_interval(pair):
    a, b = pair
    ra, rb, trial = half_open_with_trial_taken(a, b)
    a.advance(0.05)
    ra.on_result(trial, Outcome.SUCCESS, 0.05)
    assert ra.status.state is State.CLOSED
    assert refused(rb).state is State.HALF_OPEN  # still within its interval
    a.advance(RECHECK_INTERVAL - 0.05)
    assert rb.acquire().state is State.CLOSED  # not STATE_TTL (1 s) later
    assert RECHECK_INTERVAL <= 0.2


def test_waiting_for_a_trial_costs_nothing_between_two_rereads(pair, django_assert_num_queries):
    a, b = pair
    _, rb, _ = half_open_with_trial_taken(a, b)
    b.cache.reset()
    with django_assert_num_queries(0):
        for _ in range(100):
            refused(rb)
            a.advance(RECHECK_INTERVAL / 200)
    assert b.cache.total == 0
    a.advance(RECHECK_INTERVAL / 2 + 0.001)
    with CaptureQueriesContext(connection) as captured:
        assert refused(rb).state is State.HALF_OPEN  # re-read: still half-open, trial taken
    assert circuit_queries(captured) == []
    # one refresh (the state entry with its window) and one try for the single permit
    assert b.cache.calls["get_many"] == 1
    if b.store.counters.in_cache:  # else a counters-table query
        assert b.cache.calls["add"] == 1
        # LocMem: a refused claim also reads the holder (a malformed value is taken over)
        assert b.cache.total == 2 + (b.store.backend.name == "locmem")


def test_guarded_calls_are_rejected_on_the_hot_path_while_waiting(pair):
    a, b = pair
    b.install()
    guarded = breaker("payments")
    _, rb, _ = half_open_with_trial_taken(a, b)
    assert guarded._runtime() is rb
    b.cache.reset()
    for _ in range(50):
        with pytest.raises(CircuitOpenError) as info:
            guarded.call(lambda: "never called")
        assert (info.value.state, info.value.retry_after) == (State.HALF_OPEN, None)
    assert b.cache.total == 0


def test_a_failed_trial_reaches_the_waiting_process_within_the_interval(pair):
    a, b = pair
    ra, rb, trial = half_open_with_trial_taken(a, b)
    ra.on_result(trial, Outcome.FAILURE, 0.0)
    a.advance(RECHECK_INTERVAL)
    error = refused(rb)
    assert error.state is State.OPEN
    assert error.retry_after == pytest.approx(WAIT - RECHECK_INTERVAL)


def test_when_retry_at_passes_a_process_rereads_the_cache_instead_of_racing_the_database(
    pair, django_assert_num_queries
):
    a, b = pair
    ra, rb = a.runtime("payments"), b.runtime("payments")
    trip(ra)
    a.advance(WAIT - 0.5)  # B re-reads (STATE_TTL passed): OPEN, retry_at 0.5 s away
    assert refused(rb).state is State.OPEN
    b.cache.reset()
    with django_assert_num_queries(0):
        for _ in range(100):
            refused(rb)  # open rejections: no I/O at all
    assert b.cache.total == 0
    a.advance(0.5)
    ra.acquire()  # A moves the circuit to HALF_OPEN and takes the trial
    with CaptureQueriesContext(connection) as captured:
        # B trusted its snapshot only until retry_at: one read tells it HALF_OPEN, so it
        # does not race A with a compare-and-set on the database
        assert refused(rb).state is State.HALF_OPEN
    assert circuit_queries(captured) == []
    assert b.cache.calls["get_many"] == 1


def test_closed_successes_cost_nothing_after_recovering(pair):
    a, b = pair
    b.install()
    ra, rb, trial = half_open_with_trial_taken(a, b)
    ra.on_result(trial, Outcome.SUCCESS, 0.0)
    a.advance(RECHECK_INTERVAL)
    guarded = breaker("payments")
    assert guarded.call(lambda: 1) == 1  # re-reads: CLOSED
    b.cache.reset()
    for _ in range(1_000):
        guarded.call(lambda: 1)
    assert b.cache.total == 0


def test_in_probe_mode_processes_past_retry_at_reread_within_the_interval(pair):
    a, b = pair
    Circuit.objects.filter(name="payments").update(trial_mode="probe")
    ra, rb = a.runtime("payments"), b.runtime("payments")
    ra.store.reload(ra)
    rb.store.reload(rb)
    trip(ra)
    a.advance(WAIT)
    assert refused(rb).retry_after is None  # the probe decides
    b.cache.reset()
    refused(rb)
    assert b.cache.total == 0
    assert a.store.advance("payments", State.OPEN, State.HALF_OPEN, "probe")
    assert a.store.advance("payments", State.HALF_OPEN, State.CLOSED, "probe_succeeded")
    a.advance(RECHECK_INTERVAL)
    assert rb.acquire().state is State.CLOSED
