"""Prometheus metrics (extra ``metrics``: ``pip install django-circuitbreaker-app[metrics]``).

Enabled by ``AppConfig.ready()`` when prometheus_client is importable and
``CIRCUITBREAKER["METRICS"]`` is true (the default). Registered with prometheus_client's
default registry, so an existing ``/metrics`` view exposes them:

* ``circuitbreaker_calls_total{circuit, outcome}``: guarded calls by outcome, ``success``,
  ``failure``, ``ignored`` or ``rejected``; a call at least ``slow_call_duration`` long is
  also counted as ``slow`` (so ``slow`` overlaps the other outcomes).
* ``circuitbreaker_transitions_total{circuit, from_state, to_state}``: real transitions
  made in this process (from the ``state_changed`` signal).
* ``circuitbreaker_state{circuit, state}``: 1 for each circuit's current state and 0 for
  the others, read from the database when scraped (one query per scrape), so every process
  reports the same truth whichever process made the transition.

Counting happens in memory through :mod:`circuitbreaker_app.observers`: no I/O is added to
guarded calls (a microsecond or two per call, most of it ``Counter.inc()``; set
``CIRCUITBREAKER["METRICS"] = False`` to avoid even that). Circuit labels are bounded by
``MAX_CIRCUITS`` (names past the cap, each guarded by its own isolated breaker, are
counted under the one label ``circuitbreaker:isolated``).

Multiprocess servers (gunicorn, Celery prefork): set ``PROMETHEUS_MULTIPROC_DIR`` before the
processes start, as prometheus_client documents; the counters are then aggregated across
processes by ``MultiProcessCollector``. The state gauge is a custom collector, which that
mode does not pick up by itself; register it on the registry your ``/metrics`` view serves::

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(CircuitStateCollector())
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from django.db import DatabaseError
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from circuitbreaker_app import observers
from circuitbreaker_app.core import State
from circuitbreaker_app.signals import state_changed
from circuitbreaker_app.store import get_store

logger = logging.getLogger("circuitbreaker_app")

DISPATCH_UID = "circuitbreaker_app.metrics.count_transition"
STATE_HELP = "Current state of each circuit breaker (1 for its state, 0 for the others)."


class CircuitStateCollector(Collector):
    """``circuitbreaker_state{circuit, state}`` read from the database at scrape time."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Registering must not query the database (it happens in AppConfig.ready()).
        yield GaugeMetricFamily("circuitbreaker_state", STATE_HELP, labels=["circuit", "state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from circuitbreaker_app.models import Circuit

        family = GaugeMetricFamily("circuitbreaker_state", STATE_HELP, labels=["circuit", "state"])
        try:
            rows = list(Circuit.objects.using(get_store().db_alias).values_list("name", "state"))
        except DatabaseError as exc:
            logger.warning("circuitbreaker metrics: cannot read circuit states: %s", exc)
            rows = []
        for name, current in rows:
            for state in State:
                family.add_metric([name, state.value], 1.0 if state.value == current else 0.0)
        yield family


class Metrics:
    """The counters and the hooks that feed them (one instance per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.calls = Counter(
            "circuitbreaker_calls",
            "Guarded calls by outcome (success, failure, ignored, rejected; slow also counted).",
            ["circuit", "outcome"],
            registry=registry,
        )
        self.transitions = Counter(
            "circuitbreaker_transitions",
            "Circuit state transitions made by this process.",
            ["circuit", "from_state", "to_state"],
            registry=registry,
        )
        self.state = CircuitStateCollector()
        registry.register(self.state)
        # (circuit, outcome) -> counter child: labels() takes a lock and builds a tuple.
        self._children: dict[tuple[str, str], Any] = {}

    def _call_counter(self, circuit: str, outcome: str) -> Any:
        key = (circuit, outcome)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.calls.labels(circuit, outcome)
        return child

    def observe(self, circuit: str, kind: str, duration: float | None) -> None:
        """The call observer: in memory only (about a microsecond)."""
        runtime = get_store().loaded(circuit)
        label = runtime.label if runtime is not None else circuit
        self._call_counter(label, kind).inc()
        if duration is not None and runtime is not None and runtime.config.is_slow(duration):
            self._call_counter(label, "slow").inc()

    def count_transition(
        self, sender: Any, name: str, old_state: Any, new_state: Any, **kwargs: Any
    ) -> None:
        """``state_changed`` receiver."""
        self.transitions.labels(name, State(old_state).value, State(new_state).value).inc()

    def connect(self) -> None:
        observers.register(self.observe)
        state_changed.connect(self.count_transition, dispatch_uid=DISPATCH_UID)

    def disconnect(self) -> None:
        observers.unregister(self.observe)
        state_changed.disconnect(dispatch_uid=DISPATCH_UID)
        self._children.clear()
        for collector in (self.calls, self.transitions, self.state):
            self.registry.unregister(collector)


_metrics: Metrics | None = None
_lock = threading.Lock()


def enable(registry: CollectorRegistry | None = None) -> Metrics:
    """Register the metrics (once per process) and start counting."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = Metrics(registry or REGISTRY)
            _metrics.connect()
        return _metrics


def disable() -> None:
    """Stop counting and unregister the metrics (tests, or a setting turned off)."""
    global _metrics
    with _lock:
        if _metrics is not None:
            _metrics.disconnect()
            _metrics = None


def enabled() -> Metrics | None:
    """The active metrics, or None."""
    return _metrics
