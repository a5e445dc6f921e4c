"""Prometheus metrics (extra ``metrics``: ``pip install django-circuitbreaker-app[metrics]``).

Enabled by ``AppConfig.ready()`` when prometheus_client is importable and
``CIRCUITBREAKER["METRICS"]`` is true (the default). Registered with prometheus_client's
default registry, so an existing ``/metrics`` view exposes them:

* ``circuitbreaker_calls_total{circuit, outcome}``: guarded calls by outcome, ``success``,
  ``failure``, ``ignored`` or ``rejected``; a call at least ``slow_call_duration`` long is
  also counted as ``slow`` (so ``slow`` overlaps the other outcomes). **The fleet's
  counts**: every process adds its calls to the shared store (Redis, or the configured
  cache) once per ``STATE_TTL``, with the batched successes it writes anyway, and a scrape
  of any process reads the totals there, so they are exact to within ``STATE_TTL``. No
  ``PROMETHEUS_MULTIPROC_DIR`` is needed.
* ``circuitbreaker_transitions_total{circuit, from_state, to_state}``: real transitions
  made in this process (from the ``state_changed`` signal).
* ``circuitbreaker_state{circuit, state}``: 1 for each circuit's current state and 0 for
  the others, read from the database when scraped, so every process reports the same
  truth whichever process made the transition.

A scrape costs one database query (the circuits and their states) and one read of the
shared store (every circuit's totals; on the database counters, one more query). Guarded
calls pay nothing for it: they count in plain integers on the circuit's runtime, which
they touch anyway (a closed success is the ``pending += 1`` it always was), and never call
``Counter.inc()``. Circuit labels are bounded by ``MAX_CIRCUITS`` (names past the cap,
each guarded by its own isolated breaker, are counted under the one label
``circuitbreaker:isolated``). See docs/reference/metrics.md for queries to graph them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from django.db import DatabaseError
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from circuitbreaker_app.core import State
from circuitbreaker_app.signals import state_changed
from circuitbreaker_app.store import get_store
from circuitbreaker_app.store.backends.base import TALLY_FIELDS
from circuitbreaker_app.store.overflow import ISOLATED_LABEL

logger = logging.getLogger("circuitbreaker_app")

DISPATCH_UID = "circuitbreaker_app.metrics.count_transition"
STATE_HELP = "Current state of each circuit breaker (1 for its state, 0 for the others)."
CALLS_HELP = (
    "Guarded calls by outcome across every process (success, failure, ignored, rejected; "
    "slow also counted)."
)


class CircuitCollector(Collector):
    """``circuitbreaker_calls_total`` (the fleet's totals, from the shared store) and
    ``circuitbreaker_state``, read at scrape time."""

    def describe(self) -> Iterator[Any]:
        # Registering must not query the database (it happens in AppConfig.ready()).
        yield CounterMetricFamily("circuitbreaker_calls", CALLS_HELP, labels=["circuit", "outcome"])
        yield GaugeMetricFamily("circuitbreaker_state", STATE_HELP, labels=["circuit", "state"])

    def collect(self) -> Iterator[Any]:
        from circuitbreaker_app.models import Circuit

        store = get_store()
        calls = CounterMetricFamily(
            "circuitbreaker_calls", CALLS_HELP, labels=["circuit", "outcome"]
        )
        states = GaugeMetricFamily("circuitbreaker_state", STATE_HELP, labels=["circuit", "state"])
        try:
            rows = list(Circuit.objects.using(store.db_alias).values_list("name", "state"))
        except DatabaseError as exc:
            logger.warning("circuitbreaker metrics: cannot read circuit states: %s", exc)
            rows = []
        totals = store.read_tallies([*(name for name, _ in rows), ISOLATED_LABEL])
        for name, tally in sorted(totals.items()):
            if name == ISOLATED_LABEL and not any(tally.values()):
                continue
            for outcome in TALLY_FIELDS:
                calls.add_metric([name, outcome], float(tally.get(outcome, 0)))
        for name, current in rows:
            for state in State:
                states.add_metric([name, state.value], 1.0 if state.value == current else 0.0)
        yield calls
        yield states


class Metrics:
    """The collectors and the transition counter (one instance per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.transitions = Counter(
            "circuitbreaker_transitions",
            "Circuit state transitions made by this process.",
            ["circuit", "from_state", "to_state"],
            registry=registry,
        )
        self.circuits = CircuitCollector()
        registry.register(self.circuits)

    def count_transition(
        self, sender: Any, name: str, old_state: Any, new_state: Any, **kwargs: Any
    ) -> None:
        """``state_changed`` receiver."""
        self.transitions.labels(name, State(old_state).value, State(new_state).value).inc()

    def connect(self) -> None:
        state_changed.connect(self.count_transition, dispatch_uid=DISPATCH_UID)

    def disconnect(self) -> None:
        state_changed.disconnect(dispatch_uid=DISPATCH_UID)
        for collector in (self.transitions, self.circuits):
            self.registry.unregister(collector)


_metrics: Metrics | None = None
_lock = threading.Lock()


def enable(registry: CollectorRegistry | None = None) -> Metrics:
    """Register the metrics (once per process); calls are counted whether or not."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = Metrics(registry or REGISTRY)
            _metrics.connect()
        return _metrics


def disable() -> None:
    """Unregister the metrics (tests, or a setting turned off)."""
    global _metrics
    with _lock:
        if _metrics is not None:
            _metrics.disconnect()
            _metrics = None


def enabled() -> Metrics | None:
    """The active metrics, or None."""
    return _metrics


#: The 0.1 name of the collector (it read the state gauge only).
CircuitStateCollector = CircuitCollector
