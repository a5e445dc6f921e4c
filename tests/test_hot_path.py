"""The costs DESIGN §4 promises for a guarded call, counted exactly.

A closed success and an open rejection: 0 queries and 0 cache operations while the
snapshot is fresh, and exactly two cache operations (one refresh, one flush) per
``STATE_TTL`` however many calls there were. A failure: one round trip (a Redis script
call, or one compare-and-set statement on the database counters); on the per-process
LocMem cache, a get and a set of process memory under a lock.
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.models import Circuit
from tests.helpers import FakeStore

pytestmark = pytest.mark.django_db(transaction=True)

CALLS = 1_000


def ok() -> int:
    return 1


def boom() -> None:
    raise ConnectionError("upstream down")


@pytest.fixture
def fake():
    Circuit.objects.create(
        name="payments",
        window_size=10,
        minimum_calls=5,
        failure_rate_threshold=50,
        wait_duration=30,
    )
    fake = FakeStore().install()
    breaker("payments").call(ok)  # the first use loads the circuit
    fake.cache.reset()
    return fake


def cache_is_the_database(fake) -> bool:
    return not fake.store.counters.in_cache


def write_cost(fake) -> tuple[int, int]:
    """(queries, cache operations) of one write to a count window."""
    if cache_is_the_database(fake):
        return 1, 0
    if fake.store.backend.name == "locmem":
        return 0, 2  # LocMem: get + set in this process's memory
    return 0, 1


def test_closed_success_costs_no_query_and_no_cache_operation(fake, django_assert_num_queries):
    guarded = breaker("payments")
    with django_assert_num_queries(0):
        for _ in range(CALLS):
            assert guarded.call(ok) == 1
    assert fake.cache.total == 0


def test_closed_successes_cost_two_cache_operations_per_state_ttl(fake):
    guarded = breaker("payments")
    for _ in range(3):
        fake.advance(1.0)
        for _ in range(CALLS):
            guarded.call(ok)
    # per STATE_TTL: one get_many (refresh) and one write (flush of the batched successes);
    # the calls' tally for the fleet's totals rides in that write on Redis, is a query on
    # the database counters, and on LocMem one incr of process memory
    assert fake.cache.calls["get_many"] == 3
    writes = sum(fake.cache.calls[name] for name in ("incr", "add", "get", "set"))
    tally = 3 if fake.store.backend.name == "locmem" else 0
    assert writes == 3 * write_cost(fake)[1] + tally
    assert fake.cache.total / (3 * CALLS) < 0.01  # "0 on average"


def test_open_rejection_costs_no_query_and_no_cache_operation(fake, django_assert_num_queries):
    guarded = breaker("payments")
    for _ in range(4):  # with the first call's success: S F F F F = 80 % of 5 calls
        with pytest.raises(ConnectionError):
            guarded.call(boom)
    assert guarded.state is State.OPEN
    fake.cache.reset()
    with django_assert_num_queries(0):
        for _ in range(CALLS):
            with pytest.raises(CircuitOpenError):
                guarded.call(ok)
    assert fake.cache.total == 0


def test_a_failure_costs_at_most_one_cache_operation(fake, django_assert_num_queries):
    guarded = breaker("payments")
    with pytest.raises(ConnectionError):
        guarded.call(boom)  # the process's first write of this window reads it first
    queries, operations = write_cost(fake)
    for _ in range(2):
        guarded.call(ok)
        guarded.call(ok)
        fake.cache.reset()
        with django_assert_num_queries(queries):
            with pytest.raises(ConnectionError):
                guarded.call(boom)
        assert fake.cache.total == operations
    assert guarded.state is State.CLOSED  # 3 failures in 8 calls: 37.5 % < 50 %


@pytest.mark.parametrize("guarded_call", ["decorated", "call", "timed"])
def test_a_recorded_failure_reaches_the_caller_as_raised(fake, guarded_call):
    # The caller gets the call's own error with its own traceback: the breaker's frames
    # each once, none of the frames that recorded the failure, nothing chained.
    name = "payments"
    if guarded_call == "timed":  # slow calls configured: admitted by fast_admit, timed
        name = "timed"
        Circuit.objects.create(name=name, window_size=10, minimum_calls=5, slow_call_duration=5)
    error = ConnectionError("upstream down")

    def fails() -> None:
        raise error

    handle = breaker(name)
    call = handle(fails) if guarded_call == "decorated" else (lambda: handle.call(fails))
    for _ in range(3):
        with pytest.raises(ConnectionError) as raised:
            call()
        assert raised.value is error
        assert error.__cause__ is None and error.__context__ is None
        names = [entry.name for entry in raised.traceback]
        assert names[-1] == "fails"
        assert len(names) == len(set(names)), names
        assert not {"_failed", "failed", "on_result", "_settle"} & set(names), names
        error.__traceback__ = None
    assert fake.store.runtime(name).snapshot().failures == 3


async def aok() -> int:
    return 1


#: Ways of guarding a call whose hot paths compare no stores, as (options, one call).
REPLACED_STORE_WAYS = {
    "decorated": ({}, lambda handle: handle(ok)),
    "decorated, last_good": ({"fallback": "last_good"}, lambda handle: handle(ok)),
    "call": ({}, lambda handle: lambda: handle.call(ok)),
    "acall": ({}, lambda handle: lambda: async_to_sync(handle.acall)(aok)),
}


@pytest.mark.parametrize("way", sorted(REPLACED_STORE_WAYS))
def test_a_guarded_call_follows_a_replaced_store(fake, way):
    # The hot paths compare no stores: a store that stops being the process's (settings
    # changed, fork, another installed) plans no fast path for its runtimes, so calls go
    # to the new store, and back when the first returns.
    from circuitbreaker_app.fallbacks import last_good
    from circuitbreaker_app.store import reset_store

    options, make = REPLACED_STORE_WAYS[way]
    if options:
        options = {"fallback": last_good()}
    guarded = make(breaker("payments", **options))
    first = fake.runtime("payments")
    first.flush()
    guarded()
    guarded()
    assert first.pending == 2
    second = FakeStore(fake.clock).install()
    guarded()
    assert (first.pending, second.runtime("payments").pending) == (2, 1)
    reset_store(fake.store)
    guarded()  # the first store again, its snapshot still fresh: one more in its batch
    assert second.runtime("payments").pending == 1
    assert (first.pending, first.snapshot().calls) == (3, 4)  # the fixture's 1 written


def test_a_decorated_function_rejects_through_a_replaced_store(fake):
    for _ in range(4):  # with the fixture's success: 4 of 5 failed, 80 % opens it
        with pytest.raises(ConnectionError):
            breaker("payments").call(boom)
    guarded = breaker("payments")(ok)
    with pytest.raises(CircuitOpenError):
        guarded()
    first = fake.runtime("payments")
    second = FakeStore(fake.clock).install()
    with pytest.raises(CircuitOpenError):
        guarded()
    with pytest.raises(CircuitOpenError):
        guarded()
    assert (first.rejected, second.runtime("payments").rejected) == (1, 2)


def test_a_runtime_keeps_every_attribute_in_a_slot(fake):
    """A guarded call reads its circuit's runtime through slots (fixed offsets): with a
    ``__dict__`` the runtime's ~40 attributes are more than CPython keeps inline, and
    every read on the hot path becomes a dict lookup. A new attribute, or a new base
    class without ``__slots__``, fails here instead of slowing every call."""
    breaker("payments").call(ok)
    runtime = fake.store.runtime("payments")
    assert not hasattr(runtime, "__dict__")
    with pytest.raises(AttributeError):
        runtime.not_an_attribute = 1
