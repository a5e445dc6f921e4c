"""Async guarding never does cache or database I/O on the event loop's thread.

The store's cache (and the counters, when they keep a database table of their own) is
wrapped so every operation notes whether it ran on a thread with a running event loop;
Django itself raises ``SynchronousOnlyOperation`` for database access from one, but the
store would treat that as an outage and carry on, so the counters' queries are noted too.
Each scenario also asserts that the I/O did happen (off the loop), so the test
cannot pass by doing nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.models import Circuit, CircuitEvent
from tests.helpers import CACHE_OPERATIONS, TWO_STRAIGHT, FakeStore

pytestmark = pytest.mark.django_db(transaction=True)


#: What counters of their own (a database table) do, named as on ``Counters``.
COUNTER_OPERATIONS = frozenset(
    {"incr", "claim", "release", "add_count", "get_many", "delete", "add", "add_tally"}
)


class LoopWatchingCache:
    """Wraps a cache; records each operation, and those made on an event loop's thread."""

    def __init__(self, cache: Any, operations: frozenset[str] = CACHE_OPERATIONS) -> None:
        self._cache = cache
        self._operations = operations
        self.ops: list[str] = []
        self.on_loop: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._cache, name)
        if name not in self._operations:
            return attr

        def watched(*args: Any, **kwargs: Any) -> Any:
            self.note(name)
            return attr(*args, **kwargs)

        return watched

    def note(self, name: str) -> None:
        self.ops.append(name)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            self.on_loop.append(name)


def watch(fake: FakeStore) -> LoopWatchingCache:
    """Make ``fake``'s cache (and counters) note every operation made on a loop's thread."""
    cache = LoopWatchingCache(fake.store.cache)
    fake.store.cache = cache
    counters = fake.store.counters.through(cache)
    if not counters.in_cache:
        # Counters in a database table are queries, not cache operations: note them too.
        counters = LoopWatchingCache(counters, COUNTER_OPERATIONS)
        counters.note = lambda name: cache.note(f"counters.{name}")
    fake.store.counters = counters
    return cache


@pytest.fixture
def watched():
    Circuit.objects.create(name="payments", **TWO_STRAIGHT, half_open_max_calls=1)
    fake = FakeStore()
    cache = watch(fake)
    fake.install()
    return fake, cache


async def ok() -> int:
    await asyncio.sleep(0)
    return 1


async def boom() -> None:
    raise ConnectionError("down")


def test_acall_and_async_with_keep_io_off_the_event_loop(watched):
    fake, cache = watched

    async def scenario() -> list[object]:
        seen: list[object] = []
        guarded = breaker("payments")
        # The first use reads the database and fills the cache; failures go to the shared
        # counter; the second one trips the circuit (a database transition).
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await guarded.acall(boom)
        ops = len(cache.ops)
        with pytest.raises(CircuitOpenError):  # a rejection does no I/O at all
            await guarded.acall(ok)
        seen.append(len(cache.ops) - ops)
        fake.advance(30)
        async with guarded:  # OPEN -> HALF_OPEN, trial permit, success -> CLOSED
            pass

        async def slow() -> int:
            fake.advance(5)  # longer than STATE_TTL: settling must refresh, off the loop
            return 2

        seen.append(await guarded.acall(slow))
        return seen

    assert async_to_sync(scenario)() == [0, 2]
    assert cache.on_loop == []
    if fake.store.counters.in_cache:  # counters are cache operations: add, incr
        assert {"get_many", "incr", "add"} <= set(cache.ops) or {"get", "add"} <= set(cache.ops)
    else:  # the state is read from the cache; failures and the trial permit go to the table
        assert {"get", "counters.add", "counters.claim"} <= set(cache.ops)
    assert list(CircuitEvent.objects.order_by("id").values_list("from_state", "to_state")) == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert breaker("payments").state is State.CLOSED


def test_a_checked_acall_success_is_one_count_and_its_failures_settle_off_the_loop(watched):
    fake, cache = watched

    async def answer(value: str) -> str:
        return value

    def judge(result: str) -> bool:
        if result == "boom":
            raise ZeroDivisionError("predicate bug")
        return result == "bad"

    async def scenario() -> None:
        guarded = breaker("payments", is_failure=judge)
        await guarded.acall(answer, "ok")
        runtime = fake.runtime("payments")
        ops = len(cache.ops)
        for _ in range(10):
            assert await guarded.acall(answer, "ok") == "ok"
        assert (runtime.pending, len(cache.ops)) == (11, ops)  # counted in memory only
        with pytest.raises(ZeroDivisionError):
            await guarded.acall(answer, "boom")  # ignored: not counted, the error raised
        assert runtime.pending == 11
        for _ in range(2):
            assert await guarded.acall(answer, "bad") == "bad"  # recorded, returned

    async_to_sync(scenario)()
    assert cache.on_loop == []
    assert breaker("payments").state is State.OPEN


def test_decorated_coroutine_first_use_creates_the_circuit_off_the_loop(watched):
    _, cache = watched

    @breaker("inventory")
    async def reserve(item: str) -> str:
        return f"reserved {item}"

    assert async_to_sync(reserve)("book") == "reserved book"
    assert Circuit.objects.filter(name="inventory").exists()  # AUTO_CREATE, from a coroutine
    assert cache.on_loop == []
    assert cache.ops


def test_stale_snapshot_after_a_slow_call_is_refreshed_off_the_loop(watched):
    fake, cache = watched
    breaker("payments").call(lambda: None)  # loaded, fresh

    async def scenario() -> None:
        async def slow_and_ignored() -> None:
            fake.advance(2)  # longer than STATE_TTL
            raise KeyError("ignored by this handle")

        ops = len(cache.ops)
        with pytest.raises(KeyError):
            await breaker("payments", ignore=KeyError).acall(slow_and_ignored)
        assert len(cache.ops) > ops  # settling re-read the stale snapshot...

    async_to_sync(scenario)()
    assert cache.on_loop == []  # ...in a thread


def test_async_successes_take_the_hot_path_and_are_flushed_off_the_loop(watched):
    """A closed success in ``acall`` is one count in memory, like ``call``'s: no permit, no
    I/O; the counts reach the shared window with the next refresh, off the event loop."""
    fake, cache = watched
    Circuit.objects.create(name="quotes", window_size=100, minimum_calls=10)
    guarded = breaker("quotes")

    async def scenario() -> list[int]:
        await guarded.acall(ok)  # first use: loads the circuit (off the loop)
        ops = len(cache.ops)
        for _ in range(50):
            await guarded.acall(ok)
        seen = [len(cache.ops) - ops]  # 50 successes, not one cache operation
        fake.advance(5)  # past STATE_TTL: the next call refreshes and flushes, in a thread
        await guarded.acall(ok)
        seen.append(len(cache.ops) - ops)
        return seen

    quiet, after_refresh = async_to_sync(scenario)()
    assert quiet == 0 and after_refresh > 0
    assert cache.on_loop == []
    from circuitbreaker_app.store import get_store

    assert get_store().runtime("quotes").snapshot().calls == 52
