"""The store: snapshots, batching, compare-and-set transitions, shared permits.

Two ``CircuitStore`` objects on one fake clock, sharing the cache and the database,
stand for two processes; ``tests/test_multiprocess.py`` repeats the key cases with
real OS processes.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext

from circuitbreaker_app import CircuitOpenError, State
from circuitbreaker_app.core import FakeClock, Outcome, Snapshot
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.signals import state_changed
from circuitbreaker_app.store import (
    PROVISIONAL_ID,
    CacheCounters,
    CircuitStore,
    state_key,
)
from circuitbreaker_app.store.runtime import RECHECK_INTERVAL
from tests.helpers import FakeStore

pytestmark = pytest.mark.django_db(transaction=True)

FIVE_STRAIGHT = {
    "window_type": "count",
    "window_size": 4,
    "minimum_calls": 4,
    "failure_rate_threshold": 100,
    "wait_duration": 10,
    "half_open_max_calls": 2,
}


@pytest.fixture
def circuit(db):
    return Circuit.objects.create(name="payments", **FIVE_STRAIGHT)


@pytest.fixture
def pair(circuit):
    clock = FakeClock(1_000_000.0)
    return FakeStore(clock), FakeStore(clock)


@pytest.fixture
def signals():
    received = []

    def receiver(**kwargs):
        received.append((kwargs["name"], kwargs["old_state"], kwargs["new_state"]))

    state_changed.connect(receiver)
    yield received
    state_changed.disconnect(receiver)


def fail(runtime, times=1):
    for _ in range(times):
        permit = runtime.acquire()
        runtime.on_result(permit, Outcome.FAILURE, 0.0)


def succeed(runtime, times=1):
    for _ in range(times):
        permit = runtime.acquire()
        runtime.on_result(permit, Outcome.SUCCESS, 0.0)


def test_a_process_sees_its_own_trip_at_once(pair):
    a, _ = pair
    fail(a.runtime("payments"), 4)
    assert a.runtime("payments").status.state is State.OPEN
    with pytest.raises(CircuitOpenError) as info:
        a.runtime("payments").acquire()
    assert info.value.retry_after == pytest.approx(10.0)


def test_other_processes_see_a_trip_within_state_ttl(pair):
    a, b = pair
    rb = b.runtime("payments")
    assert rb.status.state is State.CLOSED
    fail(a.runtime("payments"), 4)
    a.advance(0.5)
    assert rb.status.state is State.CLOSED  # its snapshot is still trusted
    a.advance(0.5)
    assert rb.status.state is State.OPEN  # refreshed once STATE_TTL (1 s) has passed


def test_failures_from_two_processes_share_one_window(pair):
    a, b = pair
    fail(a.runtime("payments"), 2)
    fail(b.runtime("payments"), 2)
    assert b.runtime("payments").status.state is State.OPEN


def test_a_trip_both_processes_see_is_one_transition(pair, signals):
    a, b = pair
    ra, rb = a.runtime("payments"), b.runtime("payments")
    permit_a = ra.acquire()
    fail(ra, 1)
    fail(rb, 2)
    fail(ra, 1)  # 4th failure: A opens the circuit
    assert ra.status.state is State.OPEN
    # B admitted a call before it could know; its failure also crosses the threshold,
    # but its compare-and-set loses: no second transition.
    permit_b = rb.acquire() if rb.status.state is State.CLOSED else None
    rb.mark_fresh(float("inf"))
    if permit_b is None:
        pytest.fail("B should still trust its CLOSED snapshot")
    rb.on_result(permit_b, Outcome.FAILURE, 0.0)
    ra.on_result(permit_a, Outcome.FAILURE, 0.0)  # an outcome from generation 0: dropped
    assert rb.status.state is State.OPEN  # B re-read the circuit after losing
    assert CircuitEvent.objects.count() == 1
    assert signals == [("payments", State.CLOSED, State.OPEN)]
    assert Circuit.objects.get().generation == 1


def lose_the_trip(a, b, published=True):
    """A trips the circuit; B, still at generation 0, then tries the same trip and loses.
    ``published=False``: B gets there before A's entry is in the cache. Returns B's
    queries (first words), cache operations and Redis round trips (None without Redis)."""
    ra, rb = a.runtime("payments"), b.runtime("payments")
    assert rb.status.state is State.CLOSED  # B holds generation 0
    fail(ra, 4)  # A trips the circuit: generation 1, published on commit
    if not published:
        a.store.cache.delete(state_key("payments"))
    opened = rb.entry.status.moved_to(State.OPEN, b.store.now(), rb.config)
    b.cache.reset()
    trips = b.store.redis.round_trips if b.store.redis is not None else None
    with CaptureQueriesContext(connection) as captured:
        assert b.store.persist_transition(rb, opened, "threshold", None) is False
    assert (rb.status.state, rb.status.generation) == (State.OPEN, 1)
    assert CircuitEvent.objects.count() == 1
    if trips is not None:
        trips = b.store.redis.round_trips - trips
    return loser_queries(captured, b.store.cache), dict(b.cache.calls), trips


def loser_queries(captured, cache) -> list[str]:
    """The first word of each captured query, leaving out the database cache's own (they
    are cache operations, counted as such) and the transactions that held only those."""
    table = getattr(cache, "_table", None)  # DatabaseCache's table; None for other caches
    words: list[str] = []
    for query in captured:
        if table is not None and table in query["sql"]:
            continue
        word = query["sql"].split()[0]
        if table is not None and word == "COMMIT" and words and words[-1] == "BEGIN":
            words.pop()  # the cache's transaction, now empty
            continue
        words.append(word)
    return words


def test_a_process_that_loses_the_compare_and_set_takes_the_winners_entry(pair, signals):
    """The loser of a trip pays its lost UPDATE and one cache read (the entry the winner
    published as it committed): no re-read of the row before it answers its call."""
    queries, calls, trips = lose_the_trip(*pair)
    assert queries == ["BEGIN", "UPDATE", "COMMIT"]
    assert calls == {"get": 1}
    assert trips in (None, 1)
    assert signals == [("payments", State.CLOSED, State.OPEN)]


def test_a_loser_ahead_of_the_winners_entry_rereads_the_row_once(pair, signals):
    """Without the winner's entry in the cache yet, the loser re-reads the row and, on
    Redis, writes it back with one script (never over a later generation): not an add, a
    get and a second get."""
    queries, calls, trips = lose_the_trip(*pair, published=False)
    assert queries == ["BEGIN", "UPDATE", "COMMIT", "SELECT"]
    if trips is not None:
        assert calls == {"get": 1}  # then the publish script
        assert trips == 2
    else:
        assert calls == {"get": 2, "add": 1}  # the entry is gone: add, then the re-check
    assert signals == [("payments", State.CLOSED, State.OPEN)]


def test_a_first_load_reads_the_shared_window_once(pair):
    """A process's first load of a circuit reports the calls the fleet has counted (what
    `circuits show`, the status endpoint and the admin show), not an empty window until its
    first refresh: one read of the window at load time, and the hot path stays I/O-free."""
    a, b = pair
    ra = a.runtime("payments")
    succeed(ra)
    fail(ra, 2)  # S F F in the shared window (the first failure carries the success)
    b.cache.reset()
    trips = b.store.redis.round_trips if b.store.redis is not None else None
    with CaptureQueriesContext(connection) as captured:
        rb = b.runtime("payments")
    assert rb.snapshot() == Snapshot(3, 2)
    # the state entry A published (a get), then the window: a get_many where the counters
    # live in the cache, else one query of the counters table
    in_cache = b.store.counters.in_cache
    assert dict(b.cache.calls) == ({"get": 1, "get_many": 1} if in_cache else {"get": 1})
    assert loser_queries(captured, b.store.cache) == ([] if in_cache else ["SELECT"])
    if trips is not None:
        assert b.store.redis.round_trips - trips == 2
    b.cache.reset()
    with CaptureQueriesContext(connection) as captured:
        succeed(rb)  # S F F S: 50 %, under the threshold
    assert rb.snapshot() == Snapshot(4, 2)
    assert b.cache.total == 0 and loser_queries(captured, b.store.cache) == []
    fail(rb)  # S F F S F: the last four hold 3 failures
    assert rb.status.state is State.CLOSED


def test_an_operator_move_in_a_process_new_to_the_circuit_records_the_fleets_window(pair):
    a, b = pair
    ra = a.runtime("payments")
    succeed(ra)
    fail(ra, 2)
    assert b.store.move_to("payments", State.FORCED_OPEN, "maintenance")  # e.g. the command
    event = CircuitEvent.objects.get()
    assert (event.calls, event.failure_rate) == (3, pytest.approx(200 / 3))


def test_successes_are_batched_and_flushed_once_per_ttl(pair):
    a, _ = pair
    ra = a.runtime("payments")
    a.cache.reset()
    succeed(ra, 100)
    assert a.cache.total == 0
    a.advance(1.0)
    succeed(ra, 1)
    assert (
        a.cache.calls
        == {
            # refresh; the flush is a get + set of this process's LocMem under a lock, and
            # the calls' tally for the fleet's totals one more write (an incr)
            "locmem": {"get_many": 1, "get": 1, "set": 1, "incr": 1},
            "redis": {"get_many": 1, "incr": 1},  # one script makes the bucket
            "database": {"get_many": 1},  # the flush goes to the database counters
        }[a.store.backend.name]
    )
    assert ra.window.estimate(a.clock()) == Snapshot(4, 0, 0)  # the newest 4 of 101 calls


def test_a_failure_carries_pending_successes_in_one_operation(pair):
    a, _ = pair
    ra = a.runtime("payments")
    succeed(ra, 2)
    fail(ra)
    a.cache.reset()
    succeed(ra, 2)
    fail(ra)
    assert (
        a.cache.calls
        == {
            "redis": {"incr": 1},  # one script call
            "locmem": {"get": 1, "set": 1},  # LocMem: process memory, one lock
            "database": {},  # the database cache has no compare-and-set: the counters table
        }[a.store.backend.name]
    )
    assert ra.window.window[1:] == [1, 1, 0, 2, 0, 0, 1, 1, 0]  # F S S F, oldest first
    assert ra.window.window[0] == 6  # calls recorded in this generation


def test_half_open_trials_are_limited_across_processes(pair, signals):
    a, b = pair
    ra, rb = a.runtime("payments"), b.runtime("payments")
    fail(ra, 4)
    a.advance(10.0)
    first = ra.acquire()  # moves the circuit to HALF_OPEN and takes trial 1 of 2
    second = rb.acquire()  # B's snapshot is stale: it loses the CAS, re-reads, takes trial 2
    with pytest.raises(CircuitOpenError):
        ra.acquire()
    with pytest.raises(CircuitOpenError):
        rb.acquire()
    ra.on_result(first, Outcome.SUCCESS, 0.0)
    assert ra.status.state is State.HALF_OPEN
    rb.on_result(second, Outcome.SUCCESS, 0.0)
    assert rb.status.state is State.CLOSED
    assert [s[2] for s in signals] == [State.OPEN, State.HALF_OPEN, State.CLOSED]
    assert CircuitEvent.objects.count() == 3


def test_a_process_that_frees_a_trial_permit_may_take_it_at_once(db):
    """An ignored trial frees its permit: the process that freed it, refused a trial a
    moment before (and so rejecting without I/O for RECHECK_INTERVAL), admits the next
    call as a trial at once, as every other process may (DESIGN §3: ignored calls are not
    trials)."""
    Circuit.objects.create(name="payments", **{**FIVE_STRAIGHT, "half_open_max_calls": 1})
    fake = FakeStore().install()
    runtime = fake.runtime("payments")
    fail(runtime, 4)
    fake.advance(10.0)
    trial = runtime.acquire()  # HALF_OPEN: the only trial
    with pytest.raises(CircuitOpenError):
        runtime.acquire()  # refused: rejects without I/O until its re-check
    runtime.on_result(trial, Outcome.IGNORED, 0.0)
    again = runtime.acquire()  # the freed permit
    assert again.state is State.HALF_OPEN
    runtime.on_result(again, Outcome.SUCCESS, 0.0)
    assert runtime.status.state is State.CLOSED


def test_a_leaked_trial_permit_is_freed_after_its_lease(pair, monkeypatch, settings):
    a, b = pair
    locmem = settings.CACHES["default"]["BACKEND"].endswith("LocMemCache")
    # Permits expire on the store's (fake) clock in the database counters, on the cache's
    # own clock otherwise: LocMem's can be faked, a real Redis server's cannot.
    real_clock = a.store.counters.in_cache and not locmem
    lease = 1.0 if real_clock else 5.0
    if locmem:
        # LocMem expires keys by time.time(): put it on the fake clock too.
        fake_time = SimpleNamespace(time=a.clock)
        monkeypatch.setattr("django.core.cache.backends.locmem.time", fake_time)
        monkeypatch.setattr("django.core.cache.backends.base.time", fake_time)
    circuit = Circuit.objects.get(name="payments")
    circuit.half_open_max_calls, circuit.trial_lease = 1, lease
    circuit.save()
    ra, rb = a.runtime("payments"), b.runtime("payments")
    fail(ra, 4)
    a.advance(10.0)
    leaked = ra.acquire()  # this "process" looks dead: it does not report in time
    with pytest.raises(CircuitOpenError):
        rb.acquire()
    if real_clock:  # a real server expires the permit on its own clock
        time.sleep(lease + 0.1)
        a.advance(RECHECK_INTERVAL)  # B, refused, tries the permits again after this
    else:
        a.advance(4.9)
        with pytest.raises(CircuitOpenError):
            rb.acquire()
        a.advance(0.1)
    permit = rb.acquire()
    ra.on_result(leaked, Outcome.IGNORED, 0.0)  # the late report frees nothing
    with pytest.raises(CircuitOpenError):
        ra.acquire()  # still one trial at a time
    rb.on_result(permit, Outcome.SUCCESS, 0.0)
    assert rb.status.state is State.CLOSED


def test_the_cache_is_written_when_the_transaction_commits(pair):
    a, _ = pair
    ra = a.runtime("payments")
    with transaction.atomic():
        fail(ra, 4)
        assert ra.status.state is State.OPEN  # this process knows at once
        assert a.store.cache.get(state_key("payments"))["state"] == "closed"
    assert a.store.cache.get(state_key("payments"))["state"] == "open"


def test_a_rolled_back_transition_is_not_published(pair, signals):
    a, _ = pair
    with pytest.raises(RuntimeError), transaction.atomic():
        fail(a.runtime("payments"), 4)
        raise RuntimeError("the view failed")
    assert signals == []
    assert a.store.cache.get(state_key("payments"))["state"] == "closed"
    assert Circuit.objects.get().state == "closed"


def test_saving_a_definition_never_rolls_the_state_back(pair):
    a, b = pair
    stale = Circuit.objects.get(name="payments")
    fail(a.runtime("payments"), 4)
    stale.description = "edited in the admin meanwhile"
    stale.wait_duration = 20
    stale.save()
    fresh = Circuit.objects.get(name="payments")
    assert (fresh.state, fresh.generation, fresh.wait_duration) == ("open", 1, 20)
    b.advance(1.0)
    assert b.runtime("payments").config.wait_duration == 20
    assert b.runtime("payments").status.state is State.OPEN


def test_operator_moves_record_the_actor(pair, django_user_model):
    a, b = pair
    user = django_user_model.objects.create_user("ops")
    assert a.store.move_to("payments", State.FORCED_OPEN, "maintenance", actor=user)
    with pytest.raises(CircuitOpenError) as info:
        a.runtime("payments").acquire()
    assert info.value.retry_after is None
    assert not a.store.move_to("payments", State.FORCED_OPEN, "again")
    assert a.store.move_to("payments", State.CLOSED, "reset", actor=user)
    events = list(CircuitEvent.objects.order_by("id").values_list("to_state", "actor__username"))
    assert events == [("forced_open", "ops"), ("closed", "ops")]
    b.advance(1.0)
    assert b.runtime("payments").status.state is State.CLOSED


def test_an_unreachable_cache_never_fails_a_call(pair, caplog):
    a, _ = pair
    ra = a.runtime("payments")

    class Down:
        def __getattr__(self, name):
            def broken(*args, **kwargs):
                raise ConnectionError("cache down")

            return broken

    a.store.cache = Down()
    a.store.counters = CacheCounters(Down())
    caplog.set_level(logging.WARNING, logger="circuitbreaker_app")
    for _ in range(3):
        a.advance(1.0)
        succeed(ra, 5)
        fail(ra)
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    # one for the state cache, one for the counters (one server on the Redis path), not per call
    assert len(warnings) == (1 if a.store.redis is not None else 2)
    fail(ra, 3)  # with the last round's failure, the last 4 calls failed
    assert ra.status.state is State.OPEN  # decided on this process's own counts


def test_unknown_names_fail_clearly_without_auto_create(settings):
    settings.CIRCUITBREAKER = {"AUTO_CREATE": False}
    from circuitbreaker_app import UnknownCircuitError, breaker

    with pytest.raises(UnknownCircuitError, match="AUTO_CREATE"):
        breaker("never-defined").call(lambda: 1)
    assert not Circuit.objects.filter(name="never-defined").exists()


def test_first_use_creates_the_circuit_from_defaults(settings):
    settings.CIRCUITBREAKER = {"DEFAULTS": {"window_size": 7, "minimum_calls": 7}}
    from circuitbreaker_app import breaker

    assert breaker("partner-api").call(lambda: 1) == 1
    assert Circuit.objects.get(name="partner-api").window_size == 7


def test_names_past_max_circuits_get_isolated_breakers(settings, caplog):
    """See tests/test_overflow.py for the costs and bounds."""
    settings.CIRCUITBREAKER = {"MAX_CIRCUITS": 2}
    from circuitbreaker_app import breaker

    caplog.set_level(logging.WARNING, logger="circuitbreaker_app")
    for index in range(6):
        assert breaker(f"http:host{index}.example").call(lambda: "ok") == "ok"
    names = set(Circuit.objects.values_list("name", flat=True))
    assert names == {"http:host0.example", "http:host1.example"}
    assert len([r for r in caplog.records if "MAX_CIRCUITS" in r.getMessage()]) == 1


def test_a_deleted_circuit_is_forgotten_and_recreated_on_next_use(pair):
    a, b = pair
    rb = b.runtime("payments")
    fail(a.runtime("payments"), 4)
    Circuit.objects.get(name="payments").delete()
    assert a.store.cache.get(state_key("payments")) is None
    b.advance(1.0)
    succeed(rb)  # B re-reads: the circuit is gone, so first use creates it afresh
    fresh = Circuit.objects.get(name="payments")
    assert (fresh.state, fresh.generation) == ("closed", 0)
    assert rb.status.state is State.CLOSED


@pytest.mark.parametrize("healthy_seconds", [0, 3])
def test_a_dead_dependency_reaches_at_most_5_plus_w_calls_after_a_healthy_period(
    db, healthy_seconds
):
    """DESIGN §4's fleet bound, deterministically: W = 4 processes on one clock, each with
    successes batched (flushed once per STATE_TTL) when the dependency dies."""
    Circuit.objects.create(
        name="payments",
        window_type="count",
        window_size=5,
        minimum_calls=5,
        failure_rate_threshold=100,
        wait_duration=60,
    )
    clock = FakeClock(1_000_000.0)
    fleet = [FakeStore(clock).runtime("payments") for _ in range(4)]
    for _ in range(healthy_seconds * 10):  # 10 rounds a second, 7 calls per process each
        clock.advance(0.1)
        for runtime in fleet:
            succeed(runtime, 7)
    clock.advance(0.05)  # mid-way between flushes: every process holds a batch
    reached = 0
    for _ in range(10):  # round-robin until every process rejects
        for runtime in fleet:
            try:
                permit = runtime.acquire()
            except CircuitOpenError:
                continue
            reached += 1
            runtime.on_result(permit, Outcome.FAILURE, 0.0)
    assert all(runtime.status.state is State.OPEN for runtime in fleet)
    # 5 failures trip it; each other process still ran the one call it had admitted.
    assert reached == 5 + 3
    assert CircuitEvent.objects.count() == 1


class Unreachable:
    """A cache or counters backend whose every operation fails."""

    def __getattr__(self, name):
        def broken(*args, **kwargs):
            raise ConnectionError("service down")

        return broken


def test_a_first_use_with_the_cache_and_the_database_down_is_guarded_by_the_settings(
    db, settings, monkeypatch, caplog
):
    """Nothing can say what the circuit is: the process guards it from CIRCUITBREAKER's
    settings on its own, and the stored circuit wins once the database answers."""
    stored = Circuit.objects.create(name="payments", **FIVE_STRAIGHT)
    settings.CIRCUITBREAKER = {
        "CIRCUITS": {
            "payments": {
                "window_size": 3,
                "minimum_calls": 3,
                "failure_rate_threshold": 100,
                "wait_duration": 60,
            }
        }
    }
    fake = FakeStore()
    fake.store.cache = Unreachable()
    fake.store.counters = CacheCounters(Unreachable())

    def database_down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(CircuitStore, "load_entry", database_down)
    monkeypatch.setattr(CircuitStore, "_write_transition", database_down)
    caplog.set_level(logging.WARNING, logger="circuitbreaker_app")
    runtime = fake.runtime("payments")  # no exception reaches the caller
    assert runtime.circuit_id == PROVISIONAL_ID
    assert (runtime.config.window_size, runtime.config.wait_duration) == (3, 60)
    succeed(runtime, 2)
    fail(runtime, 3)  # S S F F F: the last 3 calls failed
    assert runtime.status.state is State.OPEN  # decided in this process alone
    with pytest.raises(CircuitOpenError):
        runtime.acquire()
    # one warning per service: the database, and the cache and counters (one server on the
    # Redis path), not one per call
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == (2 if fake.store.redis is not None else 3)
    assert not CircuitEvent.objects.exists()

    monkeypatch.undo()  # the database answers again (the cache is still down)
    assert fake.store.db.down  # no call waits for it meanwhile (store/dbguard.py)...
    assert fake.store.db.check_now()  # ...until the background retry finds it back
    fake.advance(1.0)
    assert runtime.status.state is State.CLOSED  # the stored circuit wins
    assert runtime.circuit_id == stored.pk
    assert runtime.config.window_size == FIVE_STRAIGHT["window_size"]
    assert not CircuitEvent.objects.exists()  # the local trip is never written
