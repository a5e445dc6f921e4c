"""Prometheus metrics: the fleet's call totals and the state gauge, read when scraped.

``tests/test_metrics_fleet.py`` runs two stores on real Redis and sums their calls.
"""

from __future__ import annotations

import sys
from unittest import mock

import pytest
from django.apps import apps
from django.core.checks import run_checks
from django.db import DatabaseError
from django.test import override_settings
from prometheus_client import REGISTRY, generate_latest

from circuitbreaker_app import CircuitOpenError, State, breaker, metrics
from circuitbreaker_app.core import Outcome
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import get_store
from circuitbreaker_app.store.overflow import ISOLATED_LABEL
from tests.helpers import FakeStore, scraped_calls

pytestmark = pytest.mark.django_db

TRIP_AT_TWO = {
    "window_type": "count",
    "window_size": 2,
    "minimum_calls": 2,
    "failure_rate_threshold": 100,
}


class Boom(Exception):
    pass


class NotOurs(Exception):
    pass


def calls(registry, circuit, outcome):
    """The scraped total (after this process shares what it counted since its last flush)."""
    get_store().flush()
    return scraped_calls(registry, circuit, outcome)


def fail():
    raise Boom


def test_enabled_by_default_on_the_default_registry():
    active = metrics.enabled()
    assert active is not None and active.registry is REGISTRY
    names = {metric.name for metric in REGISTRY.collect()}
    assert "circuitbreaker_state" in names
    assert {"circuitbreaker_calls", "circuitbreaker_transitions"} <= names


def test_calls_are_counted_by_outcome(registry):
    Circuit.objects.create(name="payments", **TRIP_AT_TWO)
    guarded = breaker("payments", ignore=NotOurs)
    with pytest.raises(NotOurs):
        guarded.call(lambda: (_ for _ in ()).throw(NotOurs()))
    for _ in range(2):
        with pytest.raises(Boom):
            guarded.call(fail)
    with pytest.raises(CircuitOpenError):
        guarded.call(lambda: "never")
    breaker("search").call(lambda: "ok")
    breaker("search").call(lambda: "ok")
    assert calls(registry, "payments", "ignored") == 1
    assert calls(registry, "payments", "failure") == 2
    assert calls(registry, "payments", "rejected") == 1
    assert calls(registry, "payments", "success") == 0
    assert calls(registry, "search", "success") == 2
    assert calls(registry, "payments", "slow") == calls(registry, "search", "slow") == 0


def test_slow_calls_are_counted_besides_their_outcome(registry):
    Circuit.objects.create(name="search", slow_call_duration=1.0, minimum_calls=10)
    breaker("search").call(lambda: "ok")  # loads the runtime
    runtime = get_store().runtime("search")  # what Breaker hands a timed outcome to
    runtime.on_result(runtime.acquire(), Outcome.SUCCESS, 1.5)
    runtime.on_result(runtime.acquire(), Outcome.FAILURE, 0.2)
    runtime.on_result(runtime.acquire(), Outcome.IGNORED, 2.0)
    assert calls(registry, "search", "slow") == 2
    assert calls(registry, "search", "success") == 2
    assert calls(registry, "search", "failure") == 1
    assert calls(registry, "search", "ignored") == 1


def test_metrics_on_keep_the_hot_path(registry):
    """A closed success stays ``pending += 1`` with metrics on (no Counter.inc())."""
    Circuit.objects.create(name="payments")
    guarded = breaker("payments")
    guarded.call(lambda: "ok")
    runtime = get_store().runtime("payments")
    pending = runtime.pending
    guarded.call(lambda: "ok")
    assert runtime.pending == pending + 1
    assert not runtime.has_tally()  # counted in pending only


def test_a_scrape_reads_the_shared_totals_not_this_process(registry):
    """What another process flushed counts; what this one has not flushed yet does not."""
    Circuit.objects.create(name="payments", **TRIP_AT_TWO)
    guarded = breaker("payments")
    for _ in range(3):
        guarded.call(lambda: "ok")
    get_store().flush()
    guarded.call(lambda: "ok")  # not flushed: within STATE_TTL
    value = registry.get_sample_value(
        "circuitbreaker_calls_total", {"circuit": "payments", "outcome": "success"}
    )
    assert value == 3


def test_transitions_are_counted_once_each(registry, django_capture_on_commit_callbacks):
    Circuit.objects.create(name="payments", **TRIP_AT_TWO)
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            with pytest.raises(Boom):
                breaker("payments").call(fail)
        get_store().move_to("payments", State.FORCED_CLOSED, "test")
    value = registry.get_sample_value(
        "circuitbreaker_transitions_total",
        {"circuit": "payments", "from_state": "closed", "to_state": "open"},
    )
    assert value == 1
    value = registry.get_sample_value(
        "circuitbreaker_transitions_total",
        {"circuit": "payments", "from_state": "open", "to_state": "forced_closed"},
    )
    assert value == 1


def test_a_scrape_reads_every_circuit_in_one_query(registry, django_assert_num_queries):
    Circuit.objects.create(name="payments")
    Circuit.objects.create(name="search")
    get_store().move_to("search", State.FORCED_OPEN, "test")
    # one query for the circuits, one more when the call totals live in the database
    with django_assert_num_queries(1 + int(not get_store().counters.in_cache)):
        text = generate_latest(registry).decode()
    assert 'circuitbreaker_state{circuit="payments",state="closed"} 1.0' in text
    assert 'circuitbreaker_state{circuit="payments",state="open"} 0.0' in text
    assert 'circuitbreaker_state{circuit="search",state="forced_open"} 1.0' in text
    assert text.count('circuitbreaker_state{circuit="search"') == len(State)


def test_state_gauge_survives_a_database_outage(registry, caplog):
    with mock.patch.object(Circuit.objects, "using", side_effect=DatabaseError("down")):
        text = generate_latest(registry).decode()
    assert "# TYPE circuitbreaker_state gauge" in text
    assert "circuitbreaker_state{" not in text
    assert "cannot read circuit states: down" in caplog.text


def test_counting_adds_no_io_to_the_hot_path(registry, django_assert_num_queries):
    fake = FakeStore().install()
    Circuit.objects.create(name="payments")
    guarded = breaker("payments")
    guarded.call(lambda: "ok")  # load the runtime
    fake.cache.reset()
    with django_assert_num_queries(0):
        for _ in range(50):
            guarded.call(lambda: "ok")
    assert fake.cache.total == 0
    assert calls(registry, "payments", "success") == 51


@override_settings(CIRCUITBREAKER={"MAX_CIRCUITS": 1})
def test_labels_stay_bounded_past_max_circuits(registry):
    Circuit.objects.create(name="payments")
    for i in range(5):
        breaker(f"http:host{i}.example").call(lambda: "ok")
    assert calls(registry, ISOLATED_LABEL, "success") == 5
    labels = {
        sample.labels["circuit"]
        for metric in registry.collect()
        if metric.name == "circuitbreaker_calls"
        for sample in metric.samples
    }
    assert labels == {"payments", ISOLATED_LABEL}  # every circuit, none of the 5 names


def test_enable_is_idempotent_and_disable_unregisters(registry):
    first = metrics.enabled()
    assert metrics.enable(registry) is first
    metrics.disable()
    assert metrics.enabled() is None
    assert not [m for m in registry.collect() if m.name.startswith("circuitbreaker_")]


def test_ready_respects_the_setting(registry):
    metrics.disable()
    config = apps.get_app_config("circuitbreaker_app")
    with override_settings(CIRCUITBREAKER={"METRICS": False}):
        config.ready()
    assert metrics.enabled() is None
    config.ready()  # default: on, on the default registry
    assert metrics.enabled() is not None and metrics.enabled().registry is REGISTRY


def check_ids(value):
    with override_settings(CIRCUITBREAKER=value):
        return [m.id for m in run_checks() if m.id.startswith("circuitbreaker_app")]


def test_metrics_setting_is_checked():
    assert check_ids({"METRICS": "yes"}) == ["circuitbreaker_app.E014"]
    assert check_ids({"METRICS": False}) == []
    assert check_ids({"METRICS": True}) == []
    with mock.patch.dict(sys.modules, {"prometheus_client": None}):
        assert check_ids({"METRICS": True}) == ["circuitbreaker_app.W004"]
