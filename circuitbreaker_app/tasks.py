"""Celery tasks that drive open → half-open → closed when no user traffic arrives.

``probe_circuits`` (run by beat every ``PROBE_INTERVAL``) ends the forced states whose
``forced_until`` has passed (forced open → HALF_OPEN, forced closed and disabled → CLOSED),
finds the circuits whose ``retry_at`` has passed by the database's clock, moves each to
HALF_OPEN with the store's compare-and-set and sends one ``probe_circuit`` task per circuit
that has a probe, so a slow probe never delays the others. It also purges expired shared
counters and rewrites cache entries that disagree with the database.

``probe_circuit(name)`` re-checks the circuit, runs its probe (``circuitbreaker_app.probes``)
and closes it on success or reopens it (with backoff) on failure. Deliveries carry the
``generation`` they were sent for, so an early, late or duplicate delivery is a no-op;
one probe per half-open period runs at a time across all workers (a permit leased for
``probe_timeout`` + :data:`PROBE_LEASE_MARGIN` seconds).

Called without ``generation`` (the admin's "probe now", ``circuits probe``), a probe of an
OPEN circuit whose wait has not passed runs at once: success closes the circuit (OPEN →
HALF_OPEN → CLOSED, reasons ``probe_requested`` and ``probe_succeeded``); failure leaves it
OPEN with its ``retry_at`` and backoff unchanged.

Needs Celery (the ``[celery]`` extra); importing this module without it raises an
ImportError that says how to install it.
"""

from __future__ import annotations

import logging
from typing import Any

from circuitbreaker_app import extras

try:
    from celery import shared_task
except ImportError as exc:  # Celery is the [celery] extra
    raise extras.missing_celery(__name__) from exc
from django.db import DatabaseError
from django.db.models import Q
from django.db.models.functions import Now

from circuitbreaker_app import conf, probes, schedule
from circuitbreaker_app.core import State
from circuitbreaker_app.core.states import EXPIRY_TARGETS
from circuitbreaker_app.schedule import beat_schedule
from circuitbreaker_app.store import (
    KEY_PREFIX,
    CircuitStore,
    generation_prefix,
    get_store,
)

__all__ = ["beat_schedule", "probe_circuit", "probe_circuits", "resync_cache"]

logger = logging.getLogger("circuitbreaker_app")

LOCK_KEY = f"{KEY_PREFIX}/probe_circuits/lock"
#: Seconds a probe permit outlives ``probe_timeout`` (time to record the verdict).
PROBE_LEASE_MARGIN = 2.0


def _circuits(store: CircuitStore) -> Any:
    from circuitbreaker_app.models import Circuit

    return Circuit.objects.using(store.db_alias)


@shared_task(name="circuitbreaker_app.tasks.probe_circuits", ignore_result=True)
def probe_circuits() -> dict[str, int]:
    """Move due circuits to HALF_OPEN, send their probes, re-sync the cache.

    Only one run at a time across every beat and worker (a shared lock that expires
    after ``PROBE_INTERVAL``). Returns counts, for logs and tests.
    """
    store = get_store()
    interval = float(conf.get("PROBE_INTERVAL"))
    if not store.counter_claim(LOCK_KEY, interval):
        return {"locked": 1}
    try:
        return _probe_due(store, interval)
    except DatabaseError as exc:
        logger.warning("circuitbreaker: probe_circuits skipped, database unavailable (%s)", exc)
        return {"database_error": 1}
    finally:
        store.counter_delete(LOCK_KEY)


def _probe_due(store: CircuitStore, interval: float) -> dict[str, int]:
    store.counters.purge_expired()  # expired permits and buckets, where nothing expires them
    ended = end_forced_states(store)
    rows = (
        _circuits(store)
        .filter(Q(state=State.OPEN, retry_at__lte=Now()) | Q(state=State.HALF_OPEN))
        .values_list("name", "state", "generation", "trial_mode", "probe_url")
    )
    half_opened = sent = 0
    for name, state, generation, trial_mode, probe_url in list(rows):
        if state == State.OPEN:
            if not store.advance(name, State.OPEN, State.HALF_OPEN, "probe_due"):
                continue  # not due by the store's clock yet, or someone moved it first
            half_opened += 1
            generation = store.runtime(name).status.generation
        if trial_mode == "probe" or probes.has_probe(name, probe_url):
            _dispatch(name, generation)
            sent += 1
    # Per-minute samples for the dashboard's sparklines, even when nobody watches it.
    from circuitbreaker_app.samples import maybe_record_samples

    maybe_record_samples()
    return {
        "forced_ended": ended,
        "half_opened": half_opened,
        "probes": sent,
        "resynced": resync_cache(store),
    }


def end_forced_states(store: CircuitStore) -> int:
    """Move every operator state whose ``forced_until`` has passed on (one compare-and-set
    each, so a process that did it first on a call wins); returns how many moved here."""
    rows = _circuits(store).filter(
        state__in=[state.value for state in EXPIRY_TARGETS], forced_until__lte=Now()
    )
    ended = 0
    for name, state in list(rows.values_list("name", "state")):
        old = State(state)
        if store.advance(name, old, EXPIRY_TARGETS[old], "forced_until_elapsed"):
            ended += 1
    return ended


def _dispatch(name: str, generation: int) -> None:
    """Send the probe as its own task; without a broker, run it here."""
    if not schedule.send_probe(name, generation):
        probe_circuit(name, generation=generation)


@shared_task(name="circuitbreaker_app.tasks.probe_circuit", ignore_result=True)
def probe_circuit(name: str, generation: int | None = None) -> str:
    """Probe one circuit; returns what happened (``closed``, ``reopened``, ``skipped: …``).

    ``generation`` is the circuit's generation when the task was sent (beat and trips
    send it): any other generation means the delivery is stale and nothing happens.
    """
    store = get_store()
    try:
        return _probe_circuit(store, name, generation)
    except DatabaseError as exc:
        logger.warning("circuit %r: probe skipped, database unavailable (%s)", name, exc)
        return "skipped: database unavailable"


def _row(store: CircuitStore, name: str) -> Any:
    return (
        _circuits(store)
        .filter(name=name)
        .only("name", "state", "generation", "trial_mode", "probe_url", "probe_timeout")
        .first()
    )


def _probe_circuit(store: CircuitStore, name: str, generation: int | None) -> str:
    row = _row(store, name)
    if row is None:
        logger.info("circuit %r: no such circuit (deleted?), nothing to probe", name)
        return "skipped: no such circuit"
    if generation is not None and row.generation != generation:
        return "skipped: stale delivery"
    if row.state == State.OPEN:
        if store.advance(name, State.OPEN, State.HALF_OPEN, "probe_due"):
            row = _row(store, name)
            if row is None:
                return "skipped: no such circuit"
        else:
            return _probe_open(store, name, generation)
    if row.state != State.HALF_OPEN:
        return f"skipped: circuit is {row.state}"
    return _trial(store, row)


def _probe_open(store: CircuitStore, name: str, generation: int | None) -> str:
    """An OPEN circuit whose wait has not passed (by the store's clock)."""
    runtime = store.runtime(name)
    status = runtime.status
    if status.state is State.HALF_OPEN and generation is None:
        row = _row(store, name)  # a live trial moved it meanwhile: probe it all the same
        return _trial(store, row) if row is not None else "skipped: no such circuit"
    if status.state is not State.OPEN:
        return f"skipped: circuit is {status.state}"
    if generation is not None:
        # A trip's countdown task that arrived early: come back at retry_at.
        remaining = status.retry_after(store.now()) or 0.0
        if remaining > 0 and schedule.celery_app() is not None:
            schedule.send_probe(name, generation, remaining + schedule.COUNTDOWN_SLACK)
        return "skipped: not due yet"
    row = _row(store, name)
    if row is None or not probes.has_probe(name, row.probe_url):
        return "skipped: not due yet and no probe to run"
    if not _take_permit(store, row):
        return "skipped: a probe is already running"
    result = probes.run_probe(name, row.probe_url, row.probe_timeout)
    if not result.ok:
        logger.warning(
            "circuit %r: requested probe failed (%s); it stays open until its retry time",
            name,
            result.detail,
        )
        return "failed: circuit stays open"
    # Healthy now: go through HALF_OPEN like any recovery, then close.
    store.reload(runtime)
    status = runtime.status
    if status.state is not State.OPEN or status.generation != row.generation:
        return "skipped: circuit moved meanwhile"
    half_open = status.moved_to(State.HALF_OPEN, store.now(), runtime.config)
    if not store.persist_transition(runtime, half_open, "probe_requested", None):
        return "skipped: circuit moved meanwhile"
    return _verdict(store, name, result)


def _take_permit(store: CircuitStore, row: Any) -> bool:
    """One probe per circuit period across every worker; freed after its lease."""
    key = f"{generation_prefix(row.name, row.generation, circuit_id=row.pk)}/probe"
    return store.counter_claim(key, float(row.probe_timeout) + PROBE_LEASE_MARGIN)


def _trial(store: CircuitStore, row: Any) -> str:
    """Probe a HALF_OPEN circuit: the probe is the trial."""
    name = row.name
    if not probes.has_probe(name, row.probe_url):
        if row.trial_mode != "probe":
            return "half_open: live calls are the trials"
        logger.warning(
            "circuit %r uses trial_mode=probe but has no probe_url and no registered probe "
            "function: it cannot close until one is configured (reopening)",
            name,
        )
        store.advance(name, State.HALF_OPEN, State.OPEN, "probe_failed")
        return "reopened: no probe configured"
    if not _take_permit(store, row):
        return "skipped: a probe is already running"
    result = probes.run_probe(name, row.probe_url, row.probe_timeout)
    return _verdict(store, name, result)


def _verdict(store: CircuitStore, name: str, result: probes.ProbeResult) -> str:
    """Close or reopen after a probe (a circuit deleted meanwhile is left alone)."""
    if not _circuits(store).filter(name=name).exists():
        logger.info("circuit %r was deleted while its probe ran; nothing to record", name)
        return "skipped: no such circuit"
    if result.ok:
        moved = store.advance(name, State.HALF_OPEN, State.CLOSED, "probe_succeeded")
        return "closed" if moved else "skipped: circuit moved meanwhile"
    logger.warning("circuit %r: probe failed (%s)", name, result.detail)
    moved = store.advance(name, State.HALF_OPEN, State.OPEN, "probe_failed")
    return "reopened" if moved else "skipped: circuit moved meanwhile"


def resync_cache(store: CircuitStore | None = None) -> int:
    """Rewrite cache entries that are malformed or older than the database; return how
    many (see :meth:`CircuitStore.resync`)."""
    return (store or get_store()).resync()
