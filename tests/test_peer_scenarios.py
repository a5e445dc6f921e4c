"""Scenarios of the peers' test suites, told again on our public API.

Each test is a scenario of pybreaker's ``tests/pybreaker_test.py`` or Resilience4j's
``CircuitBreakerStateMachineTest`` / ``SlidingTimeWindowMetricsTest`` /
``FixedSizeSlidingWindowMetricsTest`` that our other tests did not tell, in our own words
and with our semantics (DESIGN §3): real ``breaker()`` handles on the configured backend,
a fake clock that also times the calls (the breaker's ``perf_counter``), never a sleep
(``tests/peers.py``). More ports, by peer: ``tests/test_peer_resilience4j.py``,
``tests/test_peer_polly.py``, ``tests/test_peer_polly_v7.py``,
``tests/test_peer_python.py``.
"""

from __future__ import annotations

import sys
import threading

import pytest

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import Snapshot
from circuitbreaker_app.models import Circuit
from tests.helpers import FakeStore
from tests.peers import START, fail, fake_store, reasons, succeed, taking, tripped, window

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake(monkeypatch):
    """This process's store on a fake clock that also measures call durations."""
    return fake_store(monkeypatch)


# -- pybreaker --------------------------------------------------------------------------------


def test_successes_from_several_threads_are_all_counted(fake):
    """pybreaker: successes of concurrent threads are counted atomically (3 × 500 there)."""
    Circuit.objects.create(name="payments", window_size=100_000, minimum_calls=100_000)
    guarded = breaker("payments")
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(5_000):
            guarded.call(lambda: None)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    fake.advance(1.0)  # past STATE_TTL: the next read flushes the batch
    fake.runtime("payments").refresh()
    assert window(fake, "payments") == Snapshot(calls=20_000, failures=0, slow=0)


def test_a_failed_trial_starts_the_count_of_successful_trials_again(fake):
    """pybreaker (``success_threshold``): two good trials of three, then a failure,
    reopen the circuit; the next half-open period needs three good trials again."""
    Circuit.objects.create(
        name="payments",
        window_size=3,
        minimum_calls=3,
        failure_rate_threshold=100,
        wait_duration=10,
        backoff_multiplier=2,
        max_wait_duration=60,
        half_open_max_calls=3,
    )
    for _ in range(3):
        fail(fake, "payments")
    assert breaker("payments").state is State.OPEN
    fake.advance(10)
    succeed(fake, "payments")
    succeed(fake, "payments")
    assert breaker("payments").state is State.HALF_OPEN
    fail(fake, "payments")
    assert breaker("payments").state is State.OPEN
    assert breaker("payments").retry_after == 20  # backoff: 10 × 2
    fake.advance(20)
    succeed(fake, "payments")
    succeed(fake, "payments")
    assert breaker("payments").state is State.HALF_OPEN  # the earlier two do not count
    succeed(fake, "payments")
    assert breaker("payments").state is State.CLOSED
    assert [reason for *_, reason in reasons("payments")] == [
        "failure_rate_above_threshold",
        "wait_elapsed",
        "trial_failed",
        "wait_elapsed",
        "trials_succeeded",
    ]


def test_a_new_process_takes_the_shared_failures_as_they_are(fake):
    """pybreaker: creating a breaker over existing storage resets neither its failure
    count nor its state. Here: a process that starts later sees the fleet's window."""
    Circuit.objects.create(
        name="payments", window_size=3, minimum_calls=3, failure_rate_threshold=100
    )
    fail(fake, "payments")
    fail(fake, "payments")
    later = FakeStore(fake.clock).install()  # another process, its first use of the circuit
    fail(later, "payments")  # the third failure of the fleet opens it
    assert breaker("payments").state is State.OPEN
    assert reasons("payments") == [("closed", "open", "failure_rate_above_threshold")]
    with pytest.raises(CircuitOpenError):
        breaker("payments").call(lambda: None)


# -- Resilience4j -----------------------------------------------------------------------------


def test_a_time_window_keeps_calls_for_its_size_in_whole_seconds(fake):
    """Resilience4j ``SlidingTimeWindowMetricsTest``: failures, successes and a slow
    failure recorded within one second stay in a 5 s window until it slides past them."""
    Circuit.objects.create(
        name="payments",
        window_type="time",
        window_size=5,
        minimum_calls=100,
        slow_call_duration=0.5,
    )
    fail(fake, "payments", 0.125)
    succeed(fake, "payments", 0.125)
    fail(fake, "payments", 0.5)  # slow, and a failure
    assert window(fake, "payments") == Snapshot(calls=3, failures=2, slow=1)
    fake.clock.set(START + 4.875)  # the last moment of the fifth second
    assert window(fake, "payments") == Snapshot(calls=3, failures=2, slow=1)
    fake.clock.set(START + 5)
    assert window(fake, "payments") == Snapshot(calls=0, failures=0, slow=0)


def test_a_count_window_drops_its_oldest_call_slow_or_not(fake):
    """Resilience4j ``FixedSizeSlidingWindowMetricsTest`` with slow calls: the window of
    the last 3 calls lets a slow success and then a failure go as new calls arrive."""
    Circuit.objects.create(
        name="payments", window_size=3, minimum_calls=3, slow_call_duration=1.0
    )  # never opens: the default thresholds are 50 % failures and 100 % slow calls
    succeed(fake, "payments", 1.0)  # slow
    fail(fake, "payments")
    succeed(fake, "payments")
    assert window(fake, "payments") == Snapshot(calls=3, failures=1, slow=1)
    succeed(fake, "payments")
    assert window(fake, "payments") == Snapshot(calls=3, failures=1, slow=0)
    succeed(fake, "payments", 2.0)
    assert window(fake, "payments") == Snapshot(calls=3, failures=0, slow=1)


def test_slow_successes_open_the_circuit_at_the_slow_call_rate(fake):
    """Resilience4j ``shouldOpenAfterSlowCallRateThresholdExceededUsingMockClock``: calls
    that succeed but take too long open the circuit at the slow-call rate."""
    Circuit.objects.create(
        name="payments",
        window_size=5,
        minimum_calls=5,
        slow_call_duration=1.0,
        slow_call_rate_threshold=60,
    )
    for seconds in (1.0, 0.5, 2.0, 0.0):
        succeed(fake, "payments", seconds)
    assert breaker("payments").state is State.CLOSED  # 2 slow of 4: below the minimum
    succeed(fake, "payments", 1.0)  # 3 slow of 5: 60 %
    assert breaker("payments").state is State.OPEN
    assert reasons("payments") == [("closed", "open", "slow_call_rate_above_threshold")]


def test_a_slow_trial_reopens_with_backoff(fake):
    """Resilience4j ``shouldTransitionBackToOpenStateWhenSlowCallRateIsAboveThreshold``:
    a half-open trial that succeeds too slowly reopens the circuit, with backoff."""
    Circuit.objects.create(
        name="payments",
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=100,
        slow_call_duration=1.0,
        wait_duration=5,
        backoff_multiplier=3,
        max_wait_duration=12,
        half_open_max_calls=2,
    )
    fail(fake, "payments")
    fail(fake, "payments")
    fake.advance(5)
    succeed(fake, "payments")  # a good trial
    succeed(fake, "payments", 1.5)  # a slow one
    assert breaker("payments").state is State.OPEN
    assert breaker("payments").retry_after == 12  # 5 × 3, capped at 12
    assert [reason for *_, reason in reasons("payments")][-1] == "trial_slow"


def test_an_ignored_trial_hands_its_permit_back_and_good_trials_close(fake):
    """Resilience4j ``shouldIgnoreExceptionsAndThenTransitionToClosed``: an ignored error in
    HALF_OPEN is no trial; the permits it held go to the next calls, which close it."""
    tripped(fake, half_open_max_calls=2)
    guarded = breaker("payments", ignore=(KeyError,))
    for _ in range(3):  # more ignored calls than there are permits
        with pytest.raises(KeyError):
            guarded.call(taking(fake, 0.0, KeyError("not the dependency's fault")))
    assert guarded.state is State.HALF_OPEN
    succeed(fake, "payments")
    succeed(fake, "payments")
    assert guarded.state is State.CLOSED
    assert window(fake, "payments") == Snapshot(calls=0, failures=0, slow=0)
