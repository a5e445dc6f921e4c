"""Past MAX_CIRCUITS every new name gets its own isolated breaker (DESIGN §4b).

The security review's findings, each a test: 30 failing attacker-chosen hosts opened the
shared overflow circuit and so rejected ``breaker("partner-api")``; every new name past the
cap cost 6 queries (one a failing INSERT) and memory never freed.
"""

from __future__ import annotations

import logging

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import overflow
from circuitbreaker_app.store.overflow import ISOLATED_ID, ISOLATED_LABEL
from tests.helpers import FakeStore

pytestmark = pytest.mark.django_db

#: "Open after 5 consecutive failures" (DESIGN §3) as everyone's DEFAULTS.
FIVE_STRAIGHT = {
    "window_type": "count",
    "window_size": 5,
    "minimum_calls": 5,
    "failure_rate_threshold": 100,
    "wait_duration": 30,
}


@pytest.fixture
def capped(settings):
    """MAX_CIRCUITS = 10, all ten taken; a fake-clocked store whose cache counts."""
    settings.CIRCUITBREAKER = {"MAX_CIRCUITS": 10, "DEFAULTS": FIVE_STRAIGHT}
    Circuit.objects.bulk_create(Circuit(name=f"known-{i}", **FIVE_STRAIGHT) for i in range(10))
    return FakeStore().install()


def boom():
    raise ConnectionError("attacker host down")


def fail(name: str, times: int = 5) -> None:
    guarded = breaker(name)
    for _ in range(times):
        try:
            guarded.call(boom)
        except (ConnectionError, CircuitOpenError):
            pass


def test_failing_attacker_hosts_never_reject_another_name(capped):
    for i in range(30):
        fail(f"http:attacker-{i}.example", 10)
    assert breaker("http:attacker-0.example").state is State.OPEN  # each opened its own
    # a name that does not exist yet, and a new partner host, are still served
    assert breaker("partner-api").call(lambda: "ok") == "ok"
    assert breaker("http:partner.example").call(lambda: "ok") == "ok"
    assert breaker("partner-api").state is State.CLOSED
    # nothing was written: ten rows, no shared overflow circuit
    assert Circuit.objects.count() == 10
    assert not Circuit.objects.filter(name__startswith="circuitbreaker:").exists()


def test_a_new_name_past_the_known_cap_costs_no_query_and_no_cache_round_trip(
    capped, django_assert_num_queries
):
    breaker("http:first.example").call(lambda: "ok")  # finds the cap: reads the names once
    capped.cache.reset()
    with django_assert_num_queries(0):
        for i in range(100):
            assert breaker(f"http:host-{i}.example").call(lambda: "ok") == "ok"
        fail("http:host-0.example")
    assert capped.cache.total == 0


def test_finding_the_cap_costs_a_few_queries_once_a_minute(capped, django_assert_num_queries):
    # cache miss, the row (none), count, the names of existing circuits
    with CaptureQueriesContext(connections["default"]) as first:
        breaker("http:first.example").call(lambda: "ok")
    assert 3 <= len(first) <= 4  # + the database cache's own query on CB_CACHE=database
    assert not [q for q in first if q["sql"].lstrip().upper().startswith("INSERT")]
    capped.advance(59)
    with django_assert_num_queries(0):
        breaker("http:second.example").call(lambda: "ok")
    capped.advance(2)  # the verdict is a minute old: the next new name checks again
    with CaptureQueriesContext(connections["default"]) as again:
        breaker("http:third.example").call(lambda: "ok")
    assert len(again) == len(first)
    with django_assert_num_queries(0):
        breaker("http:fourth.example").call(lambda: "ok")


def test_room_made_by_a_deletion_is_used_after_the_recheck(capped):
    breaker("http:first.example").call(lambda: "ok")
    Circuit.objects.filter(name="known-0").delete()
    breaker("http:second.example").call(lambda: "ok")
    assert not Circuit.objects.filter(name="http:second.example").exists()  # within the minute
    capped.advance(61)
    breaker("http:third.example").call(lambda: "ok")
    assert Circuit.objects.filter(name="http:third.example").exists()


def test_a_name_that_has_a_row_keeps_its_shared_circuit(capped):
    breaker("http:first.example").call(lambda: "ok")
    runtime = capped.store.runtime("known-3")
    assert runtime.circuit_id == Circuit.objects.get(name="known-3").pk
    assert runtime.label == "known-3"


def test_configured_circuits_are_created_past_the_cap(capped, settings):
    settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "CIRCUITS": {"payments": {}}}
    store = FakeStore().install()
    breaker("payments").call(lambda: "ok")
    assert Circuit.objects.filter(name="payments").exists()
    assert store.store.runtime("payments").circuit_id != ISOLATED_ID


def test_isolated_breakers_are_held_in_a_bounded_lru(capped, monkeypatch):
    monkeypatch.setattr(overflow, "ISOLATED_MAX", 50)
    for i in range(200):
        breaker(f"http:host-{i}.example").call(lambda: "ok")
    held = capped.store.overflow.runtimes
    assert len(held) == 50
    assert list(held)[0] == "http:host-150.example"
    breaker("http:host-150.example").call(lambda: "ok")  # used again: most recent now
    assert list(held)[-1] == "http:host-150.example"
    assert capped.store.loaded("http:host-199.example") is held["http:host-199.example"]
    assert capped.store.loaded("http:host-0.example") is None  # evicted


def test_one_warning_per_process_per_minute(capped, caplog):
    caplog.set_level(logging.WARNING, logger="circuitbreaker_app")
    for i in range(100):
        breaker(f"http:host-{i}.example").call(lambda: "ok")
    warnings = [r for r in caplog.records if "MAX_CIRCUITS" in r.getMessage()]
    assert len(warnings) == 1
    assert "http:host-0.example" in warnings[0].getMessage()
    capped.advance(61)
    for i in range(100, 150):
        breaker(f"http:host-{i}.example").call(lambda: "ok")
    warnings = [r for r in caplog.records if "MAX_CIRCUITS" in r.getMessage()]
    assert len(warnings) == 2
    # 99 more in the first minute, then this one
    assert "100 new name(s) since the last warning" in warnings[1].getMessage()


def test_an_isolated_breaker_opens_waits_and_closes_on_its_own(capped):
    fail("http:flaky.example")
    guarded = breaker("http:flaky.example")
    with pytest.raises(CircuitOpenError) as rejected:
        guarded.call(lambda: "not called")
    assert rejected.value.retry_after == pytest.approx(30)
    capped.advance(31)
    for _ in range(3):  # half_open_max_calls trials (DEFAULTS: 3)
        assert guarded.call(lambda: "ok") == "ok"
    assert guarded.state is State.CLOSED
    assert Circuit.objects.count() == 10  # and still nothing written


def test_isolated_breakers_use_live_trials_even_when_defaults_say_probe(capped, settings):
    settings.CIRCUITBREAKER = {
        "MAX_CIRCUITS": 10,
        "DEFAULTS": {**FIVE_STRAIGHT, "trial_mode": "probe"},
    }
    store = FakeStore().install()
    fail("http:flaky.example")
    store.advance(31)
    assert breaker("http:flaky.example").call(lambda: "ok") == "ok"  # no probe task knows it


def test_duplicate_creation_is_no_error(capped):
    """Two processes creating one name: INSERT … ON CONFLICT DO NOTHING, then a read."""
    Circuit.objects.filter(name="known-0").delete()
    store = capped.store
    with CaptureQueriesContext(connections["default"]) as queries:
        first = store._get_or_create("partner-api")
        second = store._get_or_create("partner-api")
    assert first.pk == second.pk
    inserts = [q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 2
    assert all("ON CONFLICT" in sql.upper() or "OR IGNORE" in sql.upper() for sql in inserts)
    assert not [q for q in queries if "SAVEPOINT" in q["sql"].upper()]


def test_metrics_label_isolated_calls_with_one_label(capped):
    runtime = capped.store.runtime("http:new.example")
    assert runtime.label == ISOLATED_LABEL
