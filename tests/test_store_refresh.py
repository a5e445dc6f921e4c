"""While one thread of a process re-reads a stale snapshot, its other threads wait for that
re-read instead of trusting the stale snapshot (DESIGN §3: other processes see a transition
within ``STATE_TTL``), and no second re-read starts (one round trip per process per
``STATE_TTL``, DESIGN §4).

A process's cache whose ``get_many`` the test holds in flight stands for a slow cache: the
test starts calls in other threads meanwhile, sees that none is admitted or rejected on
the stale snapshot, releases the read and sees what the calls got. Run on every backend;
two ``CircuitStore`` objects on one fake clock stand for two processes. No sleeps: the
test waits on events the threads set (the timeouts only stop a broken run from hanging).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connections
from django.test import override_settings

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import FakeClock, Outcome
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import reset_store
from tests.helpers import BACKENDS, FakeStore, backend_settings

pytestmark = pytest.mark.django_db(transaction=True)

#: Only stops a broken run from hanging; nothing is timed.
HANG = 30.0
FOUR_STRAIGHT = {
    "window_type": "count",
    "window_size": 4,
    "minimum_calls": 4,
    "failure_rate_threshold": 100,
    "wait_duration": 10,
}


class HeldCache:
    """The store's cache; its next ``get_many`` after :meth:`hold` stays in flight until
    :meth:`release` (then answers, or raises ``fails``). Counts every ``get_many``."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache
        self.reads = 0
        self.fails: BaseException | None = None
        self.inside: Callable[[], None] | None = None  # run by the held read, in its thread
        self._held = False
        self.entered = threading.Event()
        self._released = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)

    def hold(self) -> None:
        self._held = True

    def release(self) -> None:
        self._released.set()

    def get_many(self, keys: Any, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        if self._held:
            self._held = False
            if self.inside is not None:
                self.inside()
            self.entered.set()
            assert self._released.wait(HANG), "the test never released the read"
        if self.fails is not None:
            raise self.fails
        return self._cache.get_many(keys, *args, **kwargs)


class Arrivals:
    """The threads that came to the store's refresh (to re-read or to wait)."""

    def __init__(self, store: Any) -> None:
        self.threads: set[int] = set()
        self.changed = threading.Condition()
        original = store.refresh

        def refresh(runtime: Any, *args: Any, **kwargs: Any) -> None:
            with self.changed:
                self.threads.add(threading.get_ident())
                self.changed.notify_all()
            original(runtime, *args, **kwargs)

        store.refresh = refresh  # the instance's: what runtime.status calls

    @property
    def count(self) -> int:
        return len(self.threads)


class Workers:
    """Threads each making one call; what each got (a result or an exception) is kept."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals
        self.results: dict[str, Any] = {}
        self.threads: list[threading.Thread] = []

    def start(self, label: str, call: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                self.results[label] = call()
            except BaseException as exc:  # what the call got is the test's to judge
                self.results[label] = exc
            finally:
                connections.close_all()  # this thread's own database connection
                with self.arrivals.changed:
                    self.arrivals.changed.notify_all()

        thread = threading.Thread(target=run, name=f"caller {label}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def wait_until_each_waits_or_ends(self, arrived: int) -> None:
        """Until ``arrived`` threads have come to the refresh or ended (with the snapshot
        trusted while it is re-read, they are admitted on it and end)."""
        with self.arrivals.changed:
            assert self.arrivals.changed.wait_for(
                lambda: self.arrivals.count + len(self.results) >= arrived, HANG
            ), f"callers neither waiting nor ended (ended: {sorted(self.results)})"

    def join(self) -> None:
        for thread in self.threads:
            thread.join(HANG)
            assert not thread.is_alive(), f"{thread.name} is still waiting"


@pytest.fixture(params=BACKENDS)
def processes(request, tmp_path):
    """This process (installed: ``breaker()`` uses it) and another one, on one clock, and
    the circuit ``name``: a name never used before (Redis keeps a circuit's entry and
    counters across runs)."""
    name = f"payments-{uuid.uuid4().hex[:12]}"
    with override_settings(**backend_settings(request.param, tmp_path)):
        Circuit.objects.create(name=name, **FOUR_STRAIGHT)
        clock = FakeClock(1_000_000.0)
        here, other = FakeStore(clock).install(), FakeStore(clock)
        yield here, other, name
        reset_store()


def ok() -> str:
    return "ok"


def trip(process: FakeStore, name: str) -> None:
    """Another process's failures open the circuit (4 straight in a window of 4)."""
    runtime = process.runtime(name)
    for _ in range(4):
        runtime.on_result(runtime.acquire(), Outcome.FAILURE, 0.0)
    assert runtime.status.state is State.OPEN


def warm_up(process: FakeStore, *calls: Callable[[], Any]) -> None:
    """Calls on the hot path while the snapshot is fresh; their successes are then written,
    so the re-read has nothing to flush (on Redis a flush's write brings the new state
    back by itself, before the re-read)."""
    for call in calls:
        assert call() == "ok"
    process.store.flush()


def test_threads_wait_for_the_refresh_in_flight_and_take_its_state(processes):
    here, other, name = processes
    calls: list[str] = []

    def ok() -> str:
        calls.append(threading.current_thread().name)
        return "ok"

    async def aok() -> str:
        return ok()

    handle = breaker(name)
    decorated = breaker(name)(ok)
    warm_up(here, lambda: handle.call(ok), decorated)  # CLOSED, fresh: on their hot paths
    runtime = here.runtime(name)
    cache = HeldCache(here.store.cache)
    here.store.cache = cache
    arrivals = Arrivals(here.store)

    trip(other, name)  # another process opens the circuit ...
    here.advance(1.2)  # ... more than STATE_TTL (1 s) ago: this process's snapshot is stale
    calls.clear()

    nested: list[State] = []
    # The refreshing thread's own read inside its re-read: the snapshot it is re-reading,
    # with no second refresh (and no deadlock).
    cache.inside = lambda: nested.append(runtime.status.state)
    cache.hold()
    workers = Workers(arrivals)
    workers.start("refreshing", lambda: handle.call(ok))
    assert cache.entered.wait(HANG)
    assert nested == [State.CLOSED]

    loop_ran = threading.Event()

    async def acall_beside_another_task() -> Any:
        async def other_task() -> None:
            await asyncio.sleep(0)  # runs while acall waits (off the loop)
            loop_ran.set()

        results = await asyncio.gather(handle.acall(aok), other_task(), return_exceptions=True)
        return results[0]

    workers.start("call", lambda: handle.call(ok))
    workers.start("another call", lambda: handle.call(ok))
    workers.start("decorated", decorated)
    workers.start("state", lambda: handle.state)
    workers.start("acall", lambda: asyncio.run(acall_beside_another_task()))
    workers.wait_until_each_waits_or_ends(arrived=1 + 5)
    assert calls == []  # none admitted on the stale CLOSED snapshot
    assert workers.results == {}  # nor rejected or answered: each waits for the re-read
    assert cache.reads == 1  # and none started a re-read of its own
    assert loop_ran.wait(HANG)  # the async call waits in its thread, not on the event loop

    cache.release()
    workers.join()
    assert calls == []
    for label in ("refreshing", "call", "another call", "decorated", "acall"):
        error = workers.results[label]
        assert isinstance(error, CircuitOpenError), (label, error)
        assert error.state is State.OPEN
        assert error.retry_after == pytest.approx(10.0 - 1.2)
    assert workers.results["state"] is State.OPEN
    assert cache.reads == 1  # one round trip for the process
    assert arrivals.count == 1 + 5  # the refreshing thread and each waiter's


def test_a_failed_refresh_keeps_the_last_known_state_for_state_ttl(processes):
    """The cache fails while threads wait: all take the last known state, and the cache is
    asked again after STATE_TTL, not by every call (DESIGN §4 outages)."""
    here, other, name = processes
    handle = breaker(name)
    warm_up(here, lambda: handle.call(ok))
    cache = HeldCache(here.store.cache)
    here.store.cache = cache
    arrivals = Arrivals(here.store)
    trip(other, name)
    here.advance(1.2)

    cache.fails = ConnectionError("cache down")
    cache.hold()
    workers = Workers(arrivals)
    # Reads of the state only: a call's own write of its outcome would bring the news.
    workers.start("refreshing", lambda: handle.state)
    assert cache.entered.wait(HANG)
    for n in range(3):
        workers.start(f"reader {n}", lambda: handle.state)
    workers.wait_until_each_waits_or_ends(arrived=1 + 3)
    assert workers.results == {}
    cache.release()
    workers.join()
    # Nothing said otherwise: the process keeps the CLOSED it knew, for STATE_TTL.
    readers = ["refreshing", "reader 0", "reader 1", "reader 2"]
    assert workers.results == dict.fromkeys(readers, State.CLOSED)
    assert cache.reads == 1
    for _ in range(5):
        assert handle.call(ok) == "ok"  # on the hot path: a success is a count
        assert handle.state is State.CLOSED
    here.advance(0.9)
    assert handle.state is State.CLOSED
    assert cache.reads == 1  # one failed attempt, not one per call
    here.advance(0.2)  # STATE_TTL after the failure: asked again
    cache.fails = None
    assert handle.state is State.OPEN
    assert cache.reads == 2


def test_a_forked_child_waits_for_no_refresh_of_its_parent(processes):
    """A refresh in flight in the parent at fork time (its lock held by a thread the child
    lacks) is not waited for in the child: the store's after-fork hook frees it."""
    here, _, name = processes
    runtime = here.runtime(name)
    assert runtime._refresh_lock.acquire(blocking=False)  # as if a thread were re-reading
    runtime._refresher = -1
    here.store.after_fork()
    assert runtime._refresher is None
    assert runtime._refresh_lock.acquire(blocking=False)
