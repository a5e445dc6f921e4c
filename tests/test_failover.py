"""A Redis failover loses no transition and at most one ``STATE_TTL`` of counts (DESIGN §4c).

A promoted replica may lack the last writes of the primary it replaces: a state entry
published just before the crash, or the last counts. The database has every transition,
so an entry older than what a process has seen written is treated as a miss: re-read
from the database and published again. The Sentinel test kills the primary of a real
group (``tests/topologies.py``) under load.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import FakeClock, Outcome
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.store import CircuitStore, get_store, state_key
from tests.fleet import (
    Upstream,
    recovery_cycle,
    report,
    require_fleet_variant,
    running_fleet,
    worker_env,
)
from tests.helpers import FakeStore
from tests.loopback import serving
from tests.topologies import LocalRedis, LocalSentinel

#: solo: failovers under load, and a fleet; bounds that need a machine not busy with other tests.
pytestmark = [pytest.mark.solo, pytest.mark.django_db(transaction=True)]

WORKERS = 4

FIVE_STRAIGHT = {
    "window_type": "count",
    "window_size": 5,
    "minimum_calls": 5,
    "failure_rate_threshold": 100,
    "wait_duration": 60,
}


class UpstreamDown(Exception):
    """The dependency's own error."""


def test_an_outdated_shared_entry_is_rewritten_from_the_database(db):
    Circuit.objects.create(name="payments", **FIVE_STRAIGHT)
    clock = FakeClock(1_000_000.0)
    a, b = FakeStore(clock), FakeStore(clock)
    ra = a.runtime("payments")
    before = a.store.cache.get(state_key("payments"))
    for _ in range(5):
        ra.on_result(ra.acquire(), Outcome.FAILURE, 0.0)
    assert ra.status.state is State.OPEN
    # A failover promotes a replica that never received the OPEN entry.
    a.store.cache.set(state_key("payments"), before, timeout=None)
    a.advance(1.0)
    assert ra.status.state is State.OPEN  # not rolled back to the replica's CLOSED
    entry = a.store.cache.get(state_key("payments"))
    assert (entry["state"], entry["generation"]) == ("open", 1)  # published again
    assert b.runtime("payments").status.state is State.OPEN  # other processes see it too
    assert CircuitEvent.objects.count() == 1


def shared_calls(name: str) -> int:
    """The calls in ``name``'s shared window, as a process that starts now reads them."""
    store = CircuitStore()
    runtime = store.runtime(name)
    store.refresh(runtime)
    return runtime.snapshot().calls


@pytest.mark.redis_topology
@pytest.mark.services
def test_killing_the_sentinel_primary_under_load_fails_no_call_and_loses_no_transition(
    settings,
):
    require_fleet_variant()  # once per CI run, in the PostgreSQL + Redis variant
    ttl = 0.5
    with LocalSentinel() as group:
        settings.CIRCUITBREAKER = {
            **settings.CIRCUITBREAKER,
            "REDIS_URL": group.url,
            "STATE_TTL": ttl,
        }
        group.wait_agreed()
        Circuit.objects.create(
            name="counted", window_type="time", window_size=60, minimum_calls=100_000
        )
        Circuit.objects.create(name="tripped", **FIVE_STRAIGHT)
        counted, tripped = breaker("counted"), breaker("tripped")
        assert tripped.state is State.CLOSED
        outcomes: list[str] = []
        stop = threading.Event()

        def load() -> None:
            try:
                while not stop.is_set():
                    try:
                        counted.call(lambda: "ok")
                        outcomes.append("ok")
                    except Exception as exc:  # the breaker must never raise here
                        outcomes.append(repr(exc))
                    time.sleep(0.001)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=load) for _ in range(2)]
        for thread in threads:
            thread.start()
        try:
            time.sleep(1.0)
            get_store().flush()
            shared_before = shared_calls("counted")  # one STATE_TTL before the crash
            time.sleep(ttl)
            killed = group.kill_primary()
            killed_at = time.monotonic()
            # The dependency dies while Redis is failing over: the trip still happens
            # (on this process's own counts) and is written to the database.
            for _ in range(5):
                with pytest.raises(UpstreamDown):
                    tripped.call(_down)
            with pytest.raises(CircuitOpenError):
                tripped.call(_down)
            group.wait_failover(killed)
            failed_over = time.monotonic() - killed_at
            time.sleep(2 * ttl + 1.0)  # the link retries after 1 s, then refreshes
            with pytest.raises(CircuitOpenError):
                tripped.call(_down)  # its refresh republishes the entry the replica lacked
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        get_store().flush()
        assert set(outcomes) == {"ok"}, {o for o in outcomes if o != "ok"}
        events = list(
            CircuitEvent.objects.filter(circuit__name="tripped").values_list(
                "from_state", "to_state"
            )
        )
        assert events == [("closed", "open")]
        entry = CircuitStore().cache.get(state_key("tripped"))
        assert (entry["state"], entry["generation"]) == ("open", 1)
        shared_after = shared_calls("counted")
        assert shared_after >= shared_before, (shared_before, shared_after)
        print(
            f"failover: {failed_over:.1f} s, calls {len(outcomes)}, none failed; shared "
            f"window {shared_before} calls a STATE_TTL before the crash, {shared_after} after"
        )


def _down() -> None:
    raise UpstreamDown("503")


@pytest.mark.redis_topology
@pytest.mark.services
@pytest.mark.multiprocess
def test_a_redis_that_stalls_as_the_dependency_dies_costs_at_most_5_calls_per_process(
    settings, tmp_path, django_db_setup
):
    """DESIGN §4's degraded mode, in a fleet: Redis answers nothing for longer than
    ``REDIS_TIMEOUT`` (0.25 s, the default) just as the dependency dies, so the processes
    decide on their own counts: at most 5 dead calls each, one transition, no call failing
    because of Redis, and the fleet recovering together once Redis answers again."""
    require_fleet_variant()
    with LocalRedis() as server, serving(Upstream) as upstream:
        settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "REDIS_URL": server.url}
        env = worker_env(REDIS_URL=server.url, REDIS_TIMEOUT=0.25)
        with running_fleet(upstream.url, env, WORKERS) as fleet:
            figures = recovery_cycle(
                fleet, upstream, tmp_path, stall=lambda: server.server.pause(0.5)
            )
    assert figures["decided_alone"]
    report("redis_stall", **figures)
