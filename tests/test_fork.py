"""A forked worker (gunicorn, Celery prefork) never reuses its parent's per-process state.

``store.py`` registers an after-fork hook: the child starts with no store, so no
snapshot and no batched successes of the parent, and the parent's Redis connections are
abandoned (not closed: the parent keeps using them). Tested with ``multiprocessing``'s
fork start method, the way prefork servers create workers.
"""

from __future__ import annotations

import multiprocessing

import pytest

from circuitbreaker_app import breaker
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import generation_prefix, get_store
from circuitbreaker_app.store import registry as store_module
from tests.test_redis_store import redis_path  # noqa: F401 - the fixture

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


def ok() -> int:
    return 1


def child(conn, parent_store, decorated) -> None:  # type: ignore[no-untyped-def]
    """Runs in the forked child; reports what it inherited through ``conn``."""
    try:
        inherited = store_module._store
        guarded = breaker("payments")
        guarded.call(ok)  # builds a store of its own; the circuit comes from Redis
        decorated()  # its handle kept the parent's runtime, whose plan the hook retired
        store = get_store()
        runtime = store.runtime("payments")
        report = {
            "inherited_store": inherited is not None,
            "same_store": store is parent_store,
            "pending": runtime.pending,
            "client_id": store.redis.client.client_id(),
            "handle_rebound": guarded._store is store,
        }
        store.flush()  # the child's one success
        conn.send(report)
    except BaseException as exc:  # the parent reports it
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


def test_a_forked_child_has_its_own_store_snapshot_batch_and_connection(redis_path):  # noqa: F811
    Circuit.objects.create(name="payments", window_size=10, minimum_calls=5)
    guarded = breaker("payments")
    for _ in range(9):
        guarded.call(ok)  # batched in this process: not flushed for STATE_TTL
    decorated = breaker("payments")(ok)
    decorated()  # on the decorator's own hot path, which compares no stores
    parent = get_store()
    runtime = parent.runtime("payments")
    assert runtime.pending == 10
    parent_client = parent.redis.client.client_id()

    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    process = context.Process(target=child, args=(sending, parent, decorated))
    process.start()
    try:
        assert receiving.poll(30), "the child did not report"
        report = receiving.recv()
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    assert "error" not in report, report
    assert report["inherited_store"] is False  # the hook dropped it in the child
    assert report["same_store"] is False
    assert report["pending"] == 2  # its own calls only, none of the parent's ten
    assert report["handle_rebound"] is True
    assert report["client_id"] != parent_client  # a connection of its own
    assert process.exitcode == 0

    # The parent's connection survived the child (never closed by it), and its ten
    # successes reach the shared window once: 10 + the child's 2.
    assert parent.redis.client.client_id() == parent_client
    parent.flush()
    prefix = generation_prefix("payments", 0, circuit_id=Circuit.objects.get(name="payments").pk)
    window = f"{prefix}/count"
    assert parent.counters.get_many([window])[window][0] == 12  # calls recorded in all


def guard_child(conn) -> None:  # type: ignore[no-untyped-def]
    """Runs in the forked child: what does its store know of the parent's outage?"""
    try:
        inherited = store_module._store
        store = get_store()
        conn.send(
            {
                "inherited_store": inherited is not None,
                "down": store.db.down,
                "retrier": store.db._retrier is not None,
                "isolated": len(store.overflow.runtimes),
            }
        )
    except BaseException as exc:
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


def test_a_forked_child_starts_without_the_parents_outage_or_isolated_breakers(settings):
    """The database guard's retry thread and the isolated breakers are per process: a
    child forked while the parent waits out a database outage asks the database itself."""
    settings.CIRCUITBREAKER = {"MAX_CIRCUITS": 1}
    Circuit.objects.create(name="payments")
    breaker("http:new.example").call(ok)  # past the cap: isolated in the parent
    parent = get_store()
    assert len(parent.overflow.runtimes) == 1
    parent.db.mark_down()
    assert parent.db.down
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=guard_child, args=(sender,))
    process.start()
    report = receiver.recv()
    process.join(10)
    assert report == {"inherited_store": False, "down": False, "retrier": False, "isolated": 0}
