"""The public ``breaker()`` handle: every way of guarding a call, options and bad input."""

from __future__ import annotations

import asyncio
import functools
import pickle

import pytest
from asgiref.sync import async_to_sync

from circuitbreaker_app import Breaker, CircuitOpenError, State, breaker
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.store import get_store
from tests.helpers import FakeStore

pytestmark = pytest.mark.django_db(transaction=True)


class Declined(Exception):
    """A business error: the dependency answered."""


@pytest.fixture
def fake():
    Circuit.objects.create(
        name="payments",
        window_size=4,
        minimum_calls=2,
        failure_rate_threshold=100,
        wait_duration=30,
    )
    return FakeStore().install()


def boom() -> None:
    raise ConnectionError("upstream down")


def trip(guarded: Breaker) -> None:
    for _ in range(2):
        with pytest.raises(ConnectionError):
            guarded.call(boom)
    assert guarded.state is State.OPEN


def test_call_passes_arguments_and_returns_the_result(fake):
    assert breaker("payments").call(lambda a, b=0: a + b, 1, b=2) == 3


def test_decorator_guards_every_call(fake):
    calls = []

    @breaker("payments")
    def charge(order: int) -> int:
        calls.append(order)
        raise ConnectionError("down")

    for order in (1, 2):
        with pytest.raises(ConnectionError):
            charge(order)
    with pytest.raises(CircuitOpenError) as info:
        charge(3)
    assert calls == [1, 2]  # the third call never reached the function
    assert charge.__name__ == "charge"
    assert info.value.circuit == "payments"
    assert info.value.state is State.OPEN
    assert info.value.retry_after == pytest.approx(30.0)
    assert "payments" in str(info.value)


def test_context_manager_records_the_block(fake):
    guarded = breaker("payments")
    for _ in range(2):
        with pytest.raises(ConnectionError), guarded:
            raise ConnectionError("down")
    with pytest.raises(CircuitOpenError), guarded:
        pytest.fail("an open circuit must not run the block")


def test_fallback_answers_rejections_and_recorded_failures(fake):
    seen = []
    guarded = breaker("payments", fallback=lambda exc: seen.append(type(exc)) or "queued")
    assert guarded.call(boom) == "queued"
    assert guarded.call(boom) == "queued"
    assert guarded.state is State.OPEN
    assert guarded.call(lambda: "live") == "queued"
    assert seen == [ConnectionError, ConnectionError, CircuitOpenError]


def test_exceptions_outside_record_count_as_successes(fake):
    guarded = breaker("payments", record=(ConnectionError,))
    for _ in range(5):
        with pytest.raises(Declined):
            guarded.call(lambda: (_ for _ in ()).throw(Declined("card declined")))
    assert guarded.state is State.CLOSED
    # Five successes in a count window of 4: the window holds the last 4.
    assert fake.runtime("payments").snapshot().calls == 4
    assert fake.runtime("payments").snapshot().failures == 0


def test_ignored_exceptions_count_as_nothing_and_propagate(fake):
    guarded = breaker("payments", ignore=(ConnectionResetError,))
    for _ in range(5):
        with pytest.raises(ConnectionResetError):
            guarded.call(lambda: (_ for _ in ()).throw(ConnectionResetError()))
    assert guarded.state is State.CLOSED
    assert fake.runtime("payments").snapshot().calls == 0


def test_base_exceptions_are_ignored(fake):
    guarded = breaker("payments")
    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            guarded.call(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert fake.runtime("payments").snapshot().calls == 0


def test_is_failure_records_a_failure_and_returns_the_result(fake):
    guarded = breaker("payments", is_failure=lambda response: response["status"] >= 500)
    assert guarded.call(lambda: {"status": 503}) == {"status": 503}
    assert guarded.call(lambda: {"status": 502}) == {"status": 502}
    assert guarded.state is State.OPEN
    assert CircuitEvent.objects.get().reason == "failure_rate_above_threshold"


def test_a_checked_closed_success_is_one_count_and_a_raising_check_counts_nothing(fake):
    def judge(result: str) -> bool:
        if result == "boom":
            raise ZeroDivisionError("predicate bug")
        return result == "bad"

    guarded = breaker("payments", is_failure=judge)
    guarded.call(lambda: "ok")
    runtime = fake.runtime("payments")
    fake.cache.reset()
    for _ in range(10):
        assert guarded.call(lambda: "ok") == "ok"
    assert (runtime.pending, fake.cache.total) == (11, 0)  # counted in memory only
    with pytest.raises(ZeroDivisionError):
        guarded.call(lambda: "boom")  # ignored: not counted, the predicate's error raised
    assert runtime.pending == 11
    assert guarded.call(lambda: "bad") == "bad"  # a failure: written with the counts
    snapshot = runtime.snapshot()  # a count window of 4: three successes and the failure
    assert (snapshot.calls, snapshot.failures) == (4, 1)


# -- exception predicates -------------------------------------------------------------------


class ApiError(Exception):
    """One error class for every answer, as some API clients raise."""

    def __init__(self, status: int) -> None:
        super().__init__(f"API answered {status}")
        self.status = status


def api(status: int) -> None:
    raise ApiError(status)


def test_a_record_predicate_decides_from_the_exception_itself(fake):
    guarded = breaker("payments", record=lambda exc: getattr(exc, "status", 500) >= 500)
    for _ in range(3):
        with pytest.raises(ApiError):
            guarded.call(api, 404)  # the dependency answered: a success
    assert fake.runtime("payments").snapshot().failures == 0
    for _ in range(4):  # window 4 at 100 %: four failures in a row open it
        with pytest.raises(ApiError):
            guarded.call(api, 503)
    assert guarded.state is State.OPEN


def test_an_ignore_predicate_counts_nothing_and_wins_over_record(fake):
    guarded = breaker("payments", ignore=lambda exc: getattr(exc, "status", 0) == 409)
    for _ in range(3):
        with pytest.raises(ApiError):
            guarded.call(api, 409)
    assert fake.runtime("payments").snapshot().calls == 0
    with pytest.raises(ApiError):
        guarded.call(api, 500)  # not ignored: recorded by the default record=(Exception,)
    assert fake.runtime("payments").snapshot().failures == 1


def test_predicates_are_asked_only_about_exceptions(fake):
    asked = []
    guarded = breaker("payments", record=lambda exc: asked.append(exc) or True)
    assert [guarded.call(abs, -n) for n in range(5)] == [0, 1, 2, 3, 4]
    assert asked == []
    with pytest.raises(KeyboardInterrupt):  # not an Exception: ignored, never asked
        guarded.call(lambda: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert asked == []


def test_a_raising_predicate_ignores_the_call_and_its_error_is_chained_to_the_original(fake):
    def broken(exc: BaseException) -> bool:
        return exc.status >= 500  # type: ignore[attr-defined]  # ConnectionError has none

    guarded = breaker("payments", record=broken)
    for _ in range(3):
        with pytest.raises(AttributeError) as info:
            guarded.call(boom)
        assert isinstance(info.value.__cause__, ConnectionError)
    for _ in range(3):
        with pytest.raises(AttributeError) as info, guarded:
            raise ConnectionError("down")
        assert isinstance(info.value.__cause__, ConnectionError)
    assert fake.runtime("payments").snapshot().calls == 0  # ignored, never recorded
    assert guarded.state is State.CLOSED
    assert guarded.call(lambda: "still guarded") == "still guarded"


def test_a_raising_predicate_hands_a_half_open_trial_back(fake):
    Circuit.objects.create(
        name="trials",
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=100,
        wait_duration=30,
        half_open_max_calls=1,
    )
    guarded = breaker("trials", ignore=lambda exc: 1 / 0)
    trip(breaker("trials"))
    fake.advance(30)
    for _ in range(3):  # one trial at a time: each ignored trial hands its permit back
        with pytest.raises(ZeroDivisionError):
            guarded.call(boom)
    assert guarded.state is State.HALF_OPEN
    assert guarded.call(lambda: "trial") == "trial"
    assert guarded.state is State.CLOSED


def test_async_predicates_decide_and_a_raising_one_is_chained(fake):
    async def api_async(status: int) -> None:
        raise ApiError(status)

    async def scenario() -> list[str]:
        guarded = breaker("payments", record=lambda exc: exc.status >= 500)
        seen = []
        for status in (404, 503, 418):
            try:
                await guarded.acall(api_async, status)
            except ApiError as exc:
                seen.append(f"{exc.status}")
        try:
            await guarded.acall(boom_async)
        except AttributeError as exc:
            seen.append(type(exc.__cause__).__name__)
        try:
            async with guarded:
                raise ConnectionError("down")
        except AttributeError as exc:
            seen.append(type(exc.__cause__).__name__)
        return seen

    async def boom_async() -> None:
        raise ConnectionError("no status attribute")

    assert async_to_sync(scenario)() == ["404", "503", "418", "ConnectionError", "ConnectionError"]
    snapshot = fake.runtime("payments").snapshot()
    assert (snapshot.calls, snapshot.failures) == (3, 1)


def test_retry_after_and_state_follow_the_circuit(fake):
    guarded = breaker("payments")
    assert (guarded.state, guarded.retry_after) == (State.CLOSED, None)
    trip(guarded)
    fake.advance(12)
    assert guarded.retry_after == pytest.approx(18.0)


def test_a_decorated_functions_rejection_says_how_long_to_wait(fake):
    """The decorator's own rejection (its fastest path) carries the wait as of the call,
    in the error and in a pickled copy of it (Celery sends task errors between processes)."""
    guarded = breaker("payments")
    trip(guarded)
    charge = guarded(lambda: "never called")
    fake.advance(12)
    with pytest.raises(CircuitOpenError) as info:
        charge()
    fake.advance(5)  # read later: still the wait as of the rejection
    copy = pickle.loads(pickle.dumps(info.value))
    for error in (info.value, copy):
        assert error.retry_after == pytest.approx(18.0)
        assert (error.circuit, error.state) == ("payments", State.OPEN)
        assert str(error) == "circuit 'payments' is open; retry in 18 s"


def test_an_open_circuit_rejects_without_io_until_retry_at_then_admits_a_trial(fake):
    guarded = breaker("payments")
    trip(guarded)
    fake.advance(0.5)
    fake.cache.reset()
    for _ in range(3):
        with pytest.raises(CircuitOpenError) as info:
            guarded.call(lambda: "never called")
    assert info.value.retry_after == pytest.approx(29.5)
    assert fake.cache.total == 0
    fake.advance(29.0)  # the snapshot is stale: one refresh, still open
    with pytest.raises(CircuitOpenError) as info:
        guarded.call(lambda: "never called")
    assert info.value.retry_after == pytest.approx(0.5)
    fake.advance(0.6)  # retry_at has passed while the snapshot is still fresh
    assert guarded.call(lambda: "trial") == "trial"
    assert CircuitEvent.objects.filter(to_state="half_open").count() == 1


def test_a_forced_open_circuit_rejects_with_no_retry_time(fake):
    guarded = breaker("payments")
    guarded.call(lambda: 1)
    get_store().move_to("payments", State.FORCED_OPEN, "maintenance")
    fake.cache.reset()
    with pytest.raises(CircuitOpenError) as info:
        guarded.call(lambda: "never called")
    assert (info.value.state, info.value.retry_after) == (State.FORCED_OPEN, None)
    assert fake.cache.total == 0


def test_successes_counted_on_the_hot_path_are_flushed_with_the_next_refresh(fake):
    guarded = breaker("payments")
    guarded.call(lambda: 1)
    runtime = get_store().runtime("payments")
    for _ in range(50):
        guarded.call(lambda: 1)
    assert runtime.pending == 51
    assert runtime.window.estimate(0.0).calls == 0  # nothing shared yet
    fake.advance(1.0)
    guarded.call(lambda: 1)  # stale: the refresh flushes first
    assert runtime.pending == 1
    assert runtime.window.window[0] == 51  # every success reached the shared window


def test_circuit_open_error_pickles():
    error = CircuitOpenError("payments", State.OPEN, 2.5)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.circuit, copy.state, copy.retry_after) == ("payments", State.OPEN, 2.5)


# -- async ----------------------------------------------------------------------------------


def test_async_decorator_and_acall(fake):
    @breaker("payments")
    async def fetch(value: int) -> int:
        await asyncio.sleep(0)
        if value < 0:
            raise ConnectionError("down")
        return value

    async def scenario() -> list[object]:
        results: list[object] = [await breaker("inventory")(fetch.__wrapped__)(1)]
        for _ in range(2):
            try:
                await fetch(-1)
            except ConnectionError as exc:
                results.append(type(exc))
        try:
            await breaker("payments").acall(fetch.__wrapped__, 5)
        except CircuitOpenError as exc:
            results.append(exc.state)
        return results

    assert async_to_sync(scenario)() == [1, ConnectionError, ConnectionError, State.OPEN]


def test_async_context_manager_and_async_fallback(fake):
    async def fallback(exc: BaseException) -> str:
        return f"fallback for {type(exc).__name__}"

    guarded = breaker("payments", fallback=fallback)

    async def scenario() -> list[object]:
        results: list[object] = []
        for _ in range(2):
            try:
                async with guarded:
                    raise ConnectionError("down")
            except ConnectionError:
                results.append("failed")

        async def never() -> str:
            raise AssertionError("an open circuit must not call the function")

        results.append(await guarded.acall(never))
        return results

    assert async_to_sync(scenario)() == ["failed", "failed", "fallback for CircuitOpenError"]


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "names"),
    [
        ({"retries": 3}, TypeError, "retries"),
        ({"record": ValueError()}, TypeError, "record"),
        ({"record": (ValueError, "x")}, TypeError, "record"),
        ({"ignore": int}, TypeError, "ignore"),
        ({"record": lambda: True}, TypeError, "record.*one argument"),
        ({"ignore": lambda a, b: True}, TypeError, "ignore.*one argument"),
        ({"record": (ValueError, lambda exc: True)}, TypeError, "record"),
        ({"record": "ValueError"}, TypeError, "record"),
        ({"is_failure": True}, TypeError, "is_failure"),
        ({"fallback": "queued"}, TypeError, "fallback"),
    ],
)
def test_bad_options_name_the_option(options, error, names):
    with pytest.raises(error, match=names):
        breaker("payments", **options)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("", ValueError),
        ("has space", ValueError),
        ("x" * 101, ValueError),
        ("é", ValueError),
        ("a'; DROP TABLE x;--", ValueError),
        (None, TypeError),
        (42, TypeError),
    ],
)
def test_bad_names_are_rejected_before_any_io(name, error, django_assert_num_queries):
    with django_assert_num_queries(0), pytest.raises(error, match="circuit name"):
        breaker(name)
    assert not Circuit.objects.exists()


def test_decorating_a_non_callable_is_a_type_error():
    with pytest.raises(TypeError, match="callables"):
        breaker("payments")(42)


def test_decorating_a_generator_function_is_a_type_error(django_assert_num_queries):
    """Calling a generator function only creates the generator: guarded, every call would
    be a success and the errors raised while iterating would never reach the circuit."""

    def rows():
        yield 1
        raise ConnectionError("down")

    async def events():
        yield 1

    for fn in (rows, events, functools.partial(rows)):
        with django_assert_num_queries(0), pytest.raises(TypeError, match="generator function"):
            breaker("payments")(fn)
