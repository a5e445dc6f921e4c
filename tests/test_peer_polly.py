"""Polly's v8 scenarios (``CircuitBreakerResiliencePipelineBuilderTests``,
``CircuitStateControllerTests``, ``RollingHealthMetricsTests``, ``CircuitBreakerManual
ControlTests``, ``IssuesTests``), told again on our public API with DESIGN §3's
semantics; where Polly decides otherwise the docstring says so. Polly v7's specs are in
``tests/test_peer_polly_v7.py``.

Real ``breaker()`` handles on the configured backend, a fake clock, never a sleep
(``tests/peers.py``).
"""

from __future__ import annotations

import traceback

import pytest

from circuitbreaker_app import CircuitOpenError, State, breaker, operator
from circuitbreaker_app.core import Snapshot
from circuitbreaker_app.models import Circuit
from tests.helpers import FakeStore
from tests.peers import START, fail, fake_store, live, signalled_moves, succeed, taking, window

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake(monkeypatch):
    return fake_store(monkeypatch)


@pytest.fixture
def moves():
    """The ``state_changed`` signals sent during the test, as (old, new)."""
    yield from signalled_moves()


def test_results_judged_failures_open_half_open_reopen_and_close(fake, moves):
    """``AddCircuitBreaker_IntegrationTest``: failures are results (``is_failure``, no
    exception), ten in a 10 s window (minimum 10, 50 %) open it for 1 s; the rejection
    tells the time left, half of it later half as much; the trial after the wait also
    returns a failure and reopens it for 1 s (no backoff); the next trial closes it."""
    Circuit.objects.create(
        name="payments",
        window_type="time",
        window_size=10,
        minimum_calls=10,
        wait_duration=1.0,
        backoff_multiplier=1,
        half_open_max_calls=1,
    )
    answers = iter([-1] * 10 + [-1, 0])
    called = []

    @breaker("payments", is_failure=lambda result: result == -1)
    def pay() -> int:
        called.append(1)
        return next(answers)

    for _ in range(10):
        assert pay() == -1  # a failure, still returned to the caller
    assert moves == [("closed", "open")]
    with pytest.raises(CircuitOpenError) as rejected:
        pay()
    assert rejected.value.retry_after == 1.0
    fake.advance(0.5)
    with pytest.raises(CircuitOpenError) as rejected:
        pay()
    assert rejected.value.retry_after == 0.5
    fake.advance(0.5)
    assert pay() == -1  # the trial
    with pytest.raises(CircuitOpenError) as rejected:
        pay()
    assert (rejected.value.state, rejected.value.retry_after) == (State.OPEN, 1.0)
    assert moves == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]
    fake.advance(1.0)
    assert pay() == 0
    assert moves[3:] == [("open", "half_open"), ("half_open", "closed")]
    assert len(called) == 12  # no rejected call reached the function


def test_a_time_window_reports_calls_as_they_age_out(fake):
    """``GetHealthInfo_EnsureWindowRespected``: every 2 s a call that fails the first two
    times and a success, in a 10 s window: read 2 s after each pair, the window shows
    2, 4, 6, 8 calls, then 8 with one failure left, then 6 with none."""
    Circuit.objects.create(name="payments", window_type="time", window_size=10, minimum_calls=100)
    seen = []
    for step in range(5):
        (fail if step < 2 else succeed)(fake, "payments")
        succeed(fake, "payments")
        fake.advance(2)
        seen.append(window(fake, "payments"))
    fake.advance(2)
    seen.append(window(fake, "payments"))
    assert seen == [
        Snapshot(calls=2, failures=1, slow=0),
        Snapshot(calls=4, failures=2, slow=0),
        Snapshot(calls=6, failures=2, slow=0),
        Snapshot(calls=8, failures=2, slow=0),
        Snapshot(calls=8, failures=1, slow=0),
        Snapshot(calls=6, failures=0, slow=0),
    ]
    assert live("payments").failure_rate == 0.0


def test_batched_successes_leave_a_time_window_one_second_at_a_time(fake):
    """``GetHealthInfo_EnsureWindowCapacityRespected`` and ``GetHealthInfo_Sampling
    DurationRespected``: a success a second for 10 s in a 10 s window (this process
    batches them): 9 left at 10 s, 8 at 11 s; two successes are gone exactly 10 s later."""
    Circuit.objects.create(name="payments", window_type="time", window_size=10, minimum_calls=100)
    for _ in range(10):
        succeed(fake, "payments")
        fake.advance(1)
    assert window(fake, "payments").calls == 9
    fake.advance(1)
    assert window(fake, "payments").calls == 8
    Circuit.objects.create(name="search", window_type="time", window_size=10, minimum_calls=100)
    succeed(fake, "search")
    succeed(fake, "search")
    assert window(fake, "search").calls == 2
    fake.advance(10)
    assert window(fake, "search") == Snapshot(calls=0, failures=0, slow=0)
    assert live("search").window == Snapshot(calls=0, failures=0, slow=0)


def test_rejections_are_new_errors_whose_tracebacks_do_not_grow(fake):
    """``OnActionPreExecute_CircuitOpened_EnsureExceptionStackTraceDoesNotGrow``: a hundred
    rejections, through ``call`` and through a decorated function, are a hundred
    distinct errors whose tracebacks do not grow, chained to nothing (DESIGN §1 gives
    ``CircuitOpenError`` no inner error, where Polly's carries the last failure)."""
    Circuit.objects.create(name="payments", window_size=2, minimum_calls=2)
    fail(fake, "payments")
    fail(fake, "payments")

    @breaker("payments")
    def pay() -> str:
        return "ok"

    for attempt in (lambda: breaker("payments").call(pay), pay):
        errors = []
        for _ in range(100):
            try:
                attempt()
            except CircuitOpenError as exc:
                errors.append(exc)
        assert len({id(exc) for exc in errors}) == 100
        depths = [len(traceback.extract_tb(exc.__traceback__)) for exc in errors]
        # The first rejection may take the slower path (it re-reads the state); then
        # every one is raised the same way, and none carries an earlier one's frames.
        assert len(set(depths[1:])) == 1 and max(depths) <= depths[0] <= 4
        assert all(exc.__cause__ is None and exc.__context__ is None for exc in errors)
        assert errors[-1].retry_after == 30.0


def test_backoff_grows_with_each_reopen_and_starts_over_after_a_close(fake):
    """``BreakDurationGenerator_EnsureHalfOpenAttempts``: Polly hands the generator the
    number of half-open attempts (0, 1, 2, …, back to 0 after a close); DESIGN §3's
    backoff is that count as an exponent: waits of 1, 2, 4, 8 s then the 10 s cap while
    trials keep failing, and 1 s again for the first open after a close (async calls)."""
    from asgiref.sync import async_to_sync

    Circuit.objects.create(
        name="payments",
        window_size=1,
        minimum_calls=1,
        wait_duration=1,
        backoff_multiplier=2,
        max_wait_duration=10,
        half_open_max_calls=1,
    )
    guarded = breaker("payments")

    async def answer(ok: bool) -> str:
        if not ok:
            raise ConnectionError("down")
        return "ok"

    async def scenario() -> list[float | None]:
        waits = []
        for ok in [False] * 6 + [True, False]:  # the first failure trips, then trials
            try:
                await guarded.acall(answer, ok)
            except ConnectionError:
                pass
            waits.append(guarded.retry_after)
            fake.advance(guarded.retry_after or 0.0)
        return waits

    assert async_to_sync(scenario)() == [1, 2, 4, 8, 10, 10, None, 1]
    assert live("payments").open_count == 1


def test_one_operator_move_isolates_every_handle_and_process(fake):
    """``AddCircuitBreakers_WithIsolatedManualControl_ShouldBeIsolated``: Polly shares one
    manual control between two pipelines. Here forcing the circuit open rejects the calls
    of every handle of it, whatever their options (a fallback is handed the rejection),
    in this process at once and in another once its ``STATE_TTL`` has passed, with no
    retry time; a reset lets them all through again."""
    Circuit.objects.create(name="payments")
    other = FakeStore(fake.clock)  # another process, which has used the circuit already
    other.install()
    succeed(other, "payments")
    fake.install()
    answered: list[BaseException] = []

    def queued(exc: BaseException) -> str:
        answered.append(exc)
        return "queued"

    plain = breaker("payments").call
    picky = breaker("payments", ignore=(KeyError,), is_failure=lambda result: result != "ok").call
    decorated = breaker("payments", fallback=queued)(taking(fake, 0.0))
    assert [plain(taking(fake, 0.0)), picky(taking(fake, 0.0)), decorated()] == ["ok"] * 3
    assert operator.force_open("payments")
    for call in (plain, picky):
        with pytest.raises(CircuitOpenError) as rejected:
            call(taking(fake, 0.0))
        assert (rejected.value.state, rejected.value.retry_after) == (State.FORCED_OPEN, None)
    assert decorated() == "queued"
    assert [(exc.state, exc.retry_after) for exc in answered] == [(State.FORCED_OPEN, None)]  # type: ignore[attr-defined]
    other.install()
    fake.advance(1.0)  # STATE_TTL
    with pytest.raises(CircuitOpenError):
        breaker("payments").call(taking(other, 0.0))
    fake.install()
    assert operator.reset("payments")
    assert [plain(taking(fake, 0.0)), picky(taking(fake, 0.0)), decorated()] == ["ok"] * 3
    fake.advance(1.0)
    assert plain(taking(fake, 0.0)) == "ok"  # its refresh shares what it counted
    other.install()
    succeed(other, "payments")
    assert live("payments").rejected == 4  # the fleet's: 3 in this process, 1 in the other


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


def test_a_circuit_forced_open_before_any_process_used_it_rejects_the_first_call(fake):
    """``CircuitBreakerManualControlTests.IsolateAsync_NotInitialized_Ok``: isolating a
    circuit no pipeline has used yet isolates its first use. Here an operator forces a
    circuit open that this process has never called: a process's first call is rejected,
    and after the reset it passes."""
    Circuit.objects.create(name="payments")
    assert operator.force_open("payments")
    first = FakeStore(fake.clock).install()  # its first use of the circuit
    with pytest.raises(CircuitOpenError) as rejected:
        breaker("payments").call(taking(first, 0.0))
    assert rejected.value.state is State.FORCED_OPEN
    assert operator.reset("payments")
    succeed(first, "payments")


def test_handles_judging_different_results_share_one_window(fake):
    """``IssuesTests.CircuitBreakerStateSharing_959``: one circuit guards calls whose
    results are judged differently (-1 from one function, "error" from another): five
    of each fill the window of 10 (100 %) and open it for both; after the wait the two
    handles' good results close it and pass."""
    Circuit.objects.create(
        name="payments",
        window_size=10,
        minimum_calls=10,
        failure_rate_threshold=100,
        wait_duration=5,
        half_open_max_calls=1,
    )
    numbers = iter([-1] * 5 + [0])
    words = iter(["error"] * 5 + ["valid"])

    @breaker("payments", is_failure=lambda result: result == -1)
    def count() -> int:
        return next(numbers)

    @breaker("payments", is_failure=lambda result: result == "error")
    def name() -> str:
        return next(words)

    for _ in range(5):
        assert (count(), name()) == (-1, "error")
    for guarded in (count, name):
        with pytest.raises(CircuitOpenError):
            guarded()
    assert live("payments").trip.calls == 10
    fake.advance(5)
    assert (count(), name()) == (0, "valid")
    assert breaker("payments").state is State.CLOSED
