"""Samples of every circuit's window every 10 seconds, for the dashboard's sparklines.

Sampling is off the hot path: guarded calls never write samples. :func:`record_samples`
writes one ``CircuitSample`` per circuit for the current 10-second period from the shared
window snapshots, in one transaction (a reader sees a period whole or not at all). The
beat task calls :func:`maybe_record_samples` on every run, so with a worker the samples
are :data:`INTERVAL` seconds apart whether or not anyone watches; the status endpoint
calls it too (it has just read every circuit anyway), and the dashboard does when no
worker sampled for :data:`STALE_AFTER` seconds. Writes are idempotent within a period
(one row per circuit and period); rows older than :data:`RETENTION` are deleted as new
ones are written, so the table holds at most ``RETENTION / INTERVAL`` rows a circuit.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Max

from circuitbreaker_app.live import LiveStatus, live_statuses
from circuitbreaker_app.store import CircuitStore, get_store

#: Seconds between samples (a sparkline point).
INTERVAL = 10
#: What the dashboard plots: 90 points.
HISTORY = timedelta(minutes=15)
#: Samples older than this are deleted whenever new ones are written.
RETENTION = HISTORY + timedelta(minutes=5)
#: The dashboard samples by itself only when nothing did for this long (no worker).
STALE_AFTER = 3 * INTERVAL

# store -> its clock reading before which maybe_record_samples() need not look again
_next_check: weakref.WeakKeyDictionary[CircuitStore, float] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Point:
    """One circuit in one period: its window totals and state when it was sampled."""

    at: float
    calls: int
    failures: int
    slow: int
    state: str
    #: Calls the fleet rejected during this period (to within ``STATE_TTL``).
    rejected: int = 0

    @property
    def failure_rate(self) -> float:
        """Failures as a percentage of calls (0.0 without calls, e.g. while open)."""
        return round(100.0 * self.failures / self.calls, 2) if self.calls else 0.0


def period_of(epoch: float) -> datetime:
    """The start of the :data:`INTERVAL`-second period holding ``epoch`` (UTC)."""
    return datetime.fromtimestamp(math.floor(epoch / INTERVAL) * INTERVAL, tz=UTC)


def record_samples(statuses: Iterable[LiveStatus] | None = None, now: float | None = None) -> int:
    """Write this period's sample of every circuit (or of ``statuses``); prune old ones.

    Returns the number of circuits sampled. A circuit that already has a sample for this
    period keeps it (the insert ignores conflicts), so concurrent callers are harmless.
    """
    from circuitbreaker_app.models import Circuit, CircuitSample

    store = get_store()
    if statuses is None:
        statuses = live_statuses(Circuit.objects.using(store.db_alias).all())
    statuses = list(statuses)
    period = period_of(store.now() if now is None else now)
    manager = CircuitSample.objects.using(store.db_alias)
    with transaction.atomic(using=store.db_alias):
        manager.bulk_create(
            [
                CircuitSample(
                    circuit_id=status.circuit.pk,
                    at=period,
                    calls=status.window.calls,
                    failures=status.window.failures,
                    slow=status.window.slow,
                    state=status.state.value,
                    rejected_total=status.rejected,
                )
                for status in statuses
            ],
            ignore_conflicts=True,
        )
        manager.filter(at__lte=period - RETENTION).delete()
    return len(statuses)


def maybe_record_samples(
    statuses: Iterable[LiveStatus] | None = None,
    now: float | None = None,
    stale_after: float = INTERVAL,
) -> bool:
    """Record samples when the latest ones are at least ``stale_after`` seconds old.

    ``statuses`` must cover every circuit (or be None to read them). Costs nothing until
    the next period is due, then one query (plus the writes when a sample is due).
    Returns True when samples were written.
    """
    from circuitbreaker_app.models import CircuitSample

    store = get_store()
    if store.clock() < _next_check.get(store, -math.inf):
        return False
    now = store.now() if now is None else now
    latest = CircuitSample.objects.using(store.db_alias).aggregate(latest=Max("at"))["latest"]
    age = now - latest.timestamp() if latest is not None else math.inf
    if age < stale_after:
        _next_check[store] = store.clock() + (stale_after - age)
        return False
    record_samples(statuses, now)
    _next_check[store] = store.clock() + (INTERVAL - (now % INTERVAL))
    return True


def history(
    circuit_ids: Iterable[int],
    now: float | None = None,
    span: timedelta = HISTORY,
    after: float | None = None,
) -> dict[int, list[Point]]:
    """``{circuit id: [Point, …]}`` oldest first, over the last ``span`` (or, with
    ``after``, only the periods that started after that epoch time). One query."""
    from circuitbreaker_app.models import CircuitSample

    store = get_store()
    ids = list(circuit_ids)
    result: dict[int, list[Point]] = {pk: [] for pk in ids}
    if not ids:
        return result
    since = period_of(store.now() if now is None else now) - span
    if after is not None:
        since = max(since, datetime.fromtimestamp(after, tz=UTC))
    # One period more than shown: its rejected total is where the first one's count starts.
    rows = (
        CircuitSample.objects.using(store.db_alias)
        .filter(circuit_id__in=ids, at__gt=since - timedelta(seconds=INTERVAL))
        .order_by("circuit_id", "at")
        .values_list("circuit_id", "at", "calls", "failures", "slow", "state", "rejected_total")
    )
    previous: dict[int, int] = {}
    for circuit_id, at, calls, failures, slow, state, rejected_total in rows:
        before = previous.get(circuit_id, rejected_total)
        previous[circuit_id] = rejected_total
        if at <= since:
            continue
        rejected = max(0, rejected_total - before)  # a total that went back: restarted
        result[circuit_id].append(Point(at.timestamp(), calls, failures, slow, state, rejected))
    return result
