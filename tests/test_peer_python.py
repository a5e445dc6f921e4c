"""Scenarios of the Python peers' suites (pybreaker's ``tests/pybreaker_test.py``,
fabfuel/circuitbreaker's ``tests/test_functional.py``, purgatory's
``tests/unittests/_sync/test_circuitbreaker.py``), told again on our public API with
DESIGN §3's semantics; where a peer decides otherwise the docstring says so.

Real ``breaker()`` handles on the configured backend, a fake clock, never a sleep
(``tests/peers.py``); threads where the peer races threads. The first pybreaker ports
are in ``tests/test_peer_scenarios.py``.
"""

from __future__ import annotations

import contextlib
import sys
import threading

import pytest
from asgiref.sync import async_to_sync

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import Snapshot
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.signals import state_changed
from tests.helpers import FakeStore
from tests.peers import fail, fake_store, live, reasons, succeed, taking, tripped, window

pytestmark = pytest.mark.django_db(transaction=True)

#: How long a thread of a race may wait for the others before the test gives up (a
#: guard against a hang, never a timed assertion).
STUCK = 30.0


@pytest.fixture
def fake(monkeypatch):
    return fake_store(monkeypatch)


@pytest.fixture
def moves():
    """The ``state_changed`` signals sent during the test, as (old, new, reason)."""
    sent: list[tuple[str, str, str]] = []

    def receiver(sender, name, old_state, new_state, reason, **kwargs):
        sent.append((str(old_state), str(new_state), reason))

    state_changed.connect(receiver)
    yield sent
    state_changed.disconnect(receiver)


def race(work, threads: int) -> None:
    """Run ``work`` in ``threads`` threads started together, switching as often as the
    interpreter can; re-raise the first error of any of them."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(STUCK)
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        started = [threading.Thread(target=run) for _ in range(threads)]
        for thread in started:
            thread.start()
        for thread in started:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    if errors:
        raise errors[0]


# -- pybreaker ----------------------------------------------------------------------------


def test_failures_of_several_threads_are_all_counted(fake):
    """pybreaker ``test_fail_thread_safety``: failures of concurrent threads are counted
    atomically (3 × 500 there), here in a count window that never fills."""
    Circuit.objects.create(name="payments", window_size=100_000, minimum_calls=100_000)
    guarded = breaker("payments")

    def work() -> None:
        for _ in range(250):
            with pytest.raises(ConnectionError):
                guarded.call(taking(fake, 0.0, ConnectionError("down")))

    race(work, 4)
    # What the fleet reads (a fresh read of the shared window): this process's own view
    # is the totals the last write it made returned, which under a thread race may be
    # an earlier write's, until its next refresh.
    assert live("payments").window == Snapshot(calls=1_000, failures=1_000, slow=0)


def test_threads_tripping_together_make_one_transition(fake, moves):
    """pybreaker ``test_fail_max_thread_safety``: four threads failing at once past the
    threshold (a count window of 10 at 100 %) open the circuit once: one event and one
    signal, whichever thread's failure came tenth; the rest are rejected."""
    Circuit.objects.create(
        name="payments", window_size=10, minimum_calls=10, failure_rate_threshold=100
    )
    guarded = breaker("payments")
    rejected = []

    def work() -> None:
        for _ in range(50):
            try:
                guarded.call(taking(fake, 0.0, ConnectionError("down")))
            except ConnectionError:
                pass
            except CircuitOpenError:
                rejected.append(1)

    race(work, 4)
    assert moves == [("closed", "open", "failure_rate_above_threshold")]
    assert reasons("payments") == [("closed", "open", "failure_rate_above_threshold")]
    assert guarded.state is State.OPEN
    assert 4 * 50 - len(rejected) >= 10


def test_threads_arriving_after_the_wait_share_the_trials(fake, moves):
    """pybreaker ``test_half_open_thread_safety``: of five threads calling when the wait
    is over, one moves the circuit to HALF_OPEN, ``half_open_max_calls`` (2) call the
    dependency while the three others are rejected, and the two good trials close it."""
    tripped(fake, half_open_max_calls=2)
    guarded = breaker("payments")
    decided = threading.Semaphore(0)  # released by each thread once it knows its fate
    finish = threading.Event()
    trials, rejected = [], []

    def trial() -> str:
        trials.append(1)
        decided.release()
        assert finish.wait(STUCK)
        return "ok"

    def work() -> None:
        try:
            guarded.call(trial)
        except CircuitOpenError as exc:
            rejected.append(exc.state)
            decided.release()

    errors: list[BaseException] = []

    def run() -> None:
        try:
            race(work, 5)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    racing = threading.Thread(target=run)
    racing.start()
    for _ in range(5):  # every thread admitted or rejected, the trials still running
        assert decided.acquire(timeout=STUCK)
    finish.set()
    racing.join()
    assert errors == []
    assert (len(trials), rejected) == (2, [State.HALF_OPEN] * 3)
    assert moves == [
        ("closed", "open", "failure_rate_above_threshold"),
        ("open", "half_open", "wait_elapsed"),
        ("half_open", "closed", "trials_succeeded"),
    ]


def test_mixed_outcomes_of_several_threads_are_all_counted(fake):
    """pybreaker ``test_fail_thread_safety`` and ``test_success_thread_safety`` at once:
    each failure writes the successes batched so far by every thread; none is lost."""
    Circuit.objects.create(name="payments", window_size=100_000, minimum_calls=100_000)
    guarded = breaker("payments")

    def work() -> None:
        for step in range(2_000):
            if step % 4:
                guarded.call(taking(fake, 0.0))
            else:
                with pytest.raises(ConnectionError):
                    guarded.call(taking(fake, 0.0, ConnectionError("down")))

    race(work, 4)
    fake.advance(1.0)  # past STATE_TTL: the next read writes the batch
    fake.runtime("payments").refresh()
    assert window(fake, "payments") == Snapshot(calls=8_000, failures=2_000, slow=0)


def test_processes_share_the_half_open_permits_and_close_it_once(fake, moves):
    """pybreaker ``CircuitBreakerRedisConcurrencyTestCase.test_half_open_thread_safety``
    (machines sharing one Redis): two processes past the wait hold the three trials of a
    half-open period between them (two here, one there); a fourth call in either is
    rejected, and the three good trials close the circuit once."""
    Circuit.objects.create(
        name="payments",
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=100,
        wait_duration=5,
        half_open_max_calls=3,
    )
    other = FakeStore(fake.clock).install()
    here = breaker("payments")
    succeed(other, "payments")  # the other process knows the circuit
    there = breaker("payments")
    fake.install()
    fail(fake, "payments")
    fail(fake, "payments")
    fake.advance(5)
    with contextlib.ExitStack() as trials_here:
        trials_here.enter_context(here)
        other.install()
        with there:
            fake.install()
            trials_here.enter_context(here)
            for process, handle in ((other, there), (fake, here)):
                process.install()
                with pytest.raises(CircuitOpenError) as rejected:
                    handle.call(taking(process, 0.0))
                assert rejected.value.state is State.HALF_OPEN
            other.install()  # its trial ends first
        assert moves[-1][1] == "half_open"
        fake.install()
    assert moves == [
        ("closed", "open", "failure_rate_above_threshold"),
        ("open", "half_open", "wait_elapsed"),
        ("half_open", "closed", "trials_succeeded"),
    ]
    other.install()
    fake.advance(0.125)  # past the re-read of a process refused a trial
    succeed(other, "payments")


def test_a_process_that_starts_later_waits_out_the_same_retry_time(fake):
    """pybreaker ``test_state_opened_at_not_reset_during_creation``: a breaker created
    over storage where the circuit is open keeps its open time. Here a process that
    first uses the circuit 10 s into a 30 s wait rejects for the 20 s left, then takes
    the trial."""
    Circuit.objects.create(
        name="payments",
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=100,
        wait_duration=30,
        half_open_max_calls=1,
    )
    fail(fake, "payments")
    fail(fake, "payments")
    fake.advance(10)
    later = FakeStore(fake.clock).install()
    with pytest.raises(CircuitOpenError) as rejected:
        breaker("payments").call(taking(later, 0.0))
    assert (rejected.value.state, rejected.value.retry_after) == (State.OPEN, 20)
    assert breaker("payments").retry_after == 20
    later.advance(20)
    succeed(later, "payments")
    assert breaker("payments").state is State.CLOSED


def test_a_cache_that_lost_the_state_falls_back_to_the_database(fake):
    """pybreaker ``test_missing_state`` / ``test_fallback_state``: when the shared storage
    loses the state, pybreaker falls back to a configured state. DESIGN keeps the state
    in the database: with the cache emptied while OPEN, this process (once its snapshot
    is stale) and a new one still reject until the same ``retry_at``, and a trial then
    closes the circuit."""
    from django.core.cache import caches

    Circuit.objects.create(
        name="payments",
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=100,
        wait_duration=30,
        half_open_max_calls=1,
    )
    fail(fake, "payments")
    fail(fake, "payments")
    caches[fake.store.cache_alias].clear()
    fake.store.counters.purge_expired()
    fake.advance(10)
    for process in (fake, FakeStore(fake.clock).install()):
        with pytest.raises(CircuitOpenError) as rejected:
            breaker("payments").call(taking(process, 0.0))
        assert (rejected.value.state, rejected.value.retry_after) == (State.OPEN, 20)
    fake.advance(20)
    succeed(fake, "payments")
    assert breaker("payments").state is State.CLOSED
    assert [reason for *_, reason in reasons("payments")] == [
        "failure_rate_above_threshold",
        "wait_elapsed",
        "trials_succeeded",
    ]


# -- purgatory ----------------------------------------------------------------------------


def test_with_blocks_signal_each_transition_once(fake, moves):
    """purgatory ``test_circuitbreaker_raise_state_changed_event`` and ``…add_listener``:
    the first failure of a ``with`` block signals nothing, the second opens the circuit
    (one signal); after the wait, a good block moves it to HALF_OPEN and CLOSED."""
    Circuit.objects.create(
        name="payments",
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=100,
        wait_duration=0.125,
        half_open_max_calls=1,
    )
    guarded = breaker("payments")
    with pytest.raises(RuntimeError), guarded:
        raise RuntimeError("boom")
    assert moves == []
    with pytest.raises(RuntimeError), guarded:
        raise RuntimeError("boom")
    assert moves == [("closed", "open", "failure_rate_above_threshold")]
    with pytest.raises(CircuitOpenError), guarded:
        raise AssertionError("a rejected block never runs")
    fake.advance(0.125)
    with guarded:
        pass
    assert moves[1:] == [
        ("open", "half_open", "wait_elapsed"),
        ("half_open", "closed", "trials_succeeded"),
    ]


def test_exceptions_outside_record_and_ignore_subclasses_count_as_designed(fake):
    """purgatory ``test_circuit_breaker_factory_global_exclude`` and pybreaker
    ``test_excluded_exceptions``: excluded errors (and their subclasses) do not count;
    here ``ignore=(LookupError,)`` ignores a KeyError, ``record=(OSError,)`` records a
    ConnectionError, and a ValueError, in neither, counts as a success (DESIGN §1; the
    peers record every error not excluded)."""
    Circuit.objects.create(name="payments", window_size=3, minimum_calls=3)
    guarded = breaker("payments", record=(OSError,), ignore=(LookupError,))
    for error in (KeyError("k"), ValueError("v"), ConnectionError("c"), LookupError("l")):
        with pytest.raises(type(error)):
            guarded.call(taking(fake, 0.0, error))
    assert window(fake, "payments") == Snapshot(calls=2, failures=1, slow=0)
    with pytest.raises(ConnectionError):
        guarded.call(taking(fake, 0.0, ConnectionError("c")))
    assert guarded.state is State.OPEN  # V C C: 2 failures of 3


# -- fabfuel/circuitbreaker ---------------------------------------------------------------


def test_an_async_function_trips_rejects_reopens_and_recovers(fake):
    """fabfuel ``test_circuitbreaker_recover_half_open`` and ``…reopens_after_successful
    _calls`` on an async decorated function: three failures open it, rejected calls never
    reach the function, a failed trial after the wait reopens it (with backoff here,
    where fabfuel waits the same time again), and a good trial closes it."""
    Circuit.objects.create(
        name="payments",
        window_size=3,
        minimum_calls=3,
        failure_rate_threshold=100,
        wait_duration=1,
        backoff_multiplier=2,
        half_open_max_calls=1,
    )
    reached = []

    @breaker("payments")
    async def pay(ok: bool) -> str:
        reached.append(ok)
        if not ok:
            raise OSError("connection refused")
        return "ok"

    async def scenario() -> None:
        assert await pay(True) == "ok"
        for _ in range(3):
            with pytest.raises(OSError):
                await pay(False)
        assert pay.breaker.state is State.OPEN
        for _ in range(2):
            with pytest.raises(CircuitOpenError) as rejected:
                await pay(True)
            assert rejected.value.retry_after == 1
        fake.advance(1)
        with pytest.raises(OSError):
            await pay(False)  # the trial fails
        with pytest.raises(CircuitOpenError) as rejected:
            await pay(True)
        assert rejected.value.retry_after == 2
        fake.advance(2)
        assert await pay(True) == "ok"

    async_to_sync(scenario)()
    assert reached == [True, False, False, False, False, True]
    assert breaker("payments").state is State.CLOSED
    assert live("payments").window == Snapshot(calls=0, failures=0, slow=0)
    assert CircuitEvent.objects.filter(to_state="open").count() == 2
