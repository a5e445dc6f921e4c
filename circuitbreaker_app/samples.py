"""Per-minute samples of every circuit's window, for the dashboard's sparklines.

Sampling is off the hot path: guarded calls never write samples. :func:`record_samples`
writes one ``CircuitSample`` per circuit for the current minute from the shared window
snapshots; the status endpoint calls :func:`maybe_record_samples` (which writes only when
the latest sample is a minute old, and checks the database at most once a minute per
process), and the beat task may call :func:`record_samples` too. Both are idempotent
within a minute (one row per circuit and minute).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from django.db.models import Max

from circuitbreaker_app.live import LiveStatus, live_statuses
from circuitbreaker_app.store import CircuitStore, get_store

#: Seconds between samples.
INTERVAL = 60
#: Samples older than this are deleted whenever new ones are written.
RETENTION = timedelta(hours=24)
#: What the dashboard plots.
HISTORY = timedelta(hours=1)

# store -> its clock reading before which maybe_record_samples() need not look again
_next_check: weakref.WeakKeyDictionary[CircuitStore, float] = weakref.WeakKeyDictionary()


def minute_of(epoch: float) -> datetime:
    """The start of the minute holding ``epoch`` (UTC)."""
    return datetime.fromtimestamp(math.floor(epoch / INTERVAL) * INTERVAL, tz=UTC)


def record_samples(statuses: Iterable[LiveStatus] | None = None, now: float | None = None) -> int:
    """Write this minute's sample of every circuit (or of ``statuses``); prune old ones.

    Returns the number of circuits sampled. A circuit that already has a sample for this
    minute keeps it (the insert ignores conflicts), so concurrent callers are harmless.
    """
    from circuitbreaker_app.models import Circuit, CircuitSample

    store = get_store()
    if statuses is None:
        statuses = live_statuses(Circuit.objects.using(store.db_alias).all())
    statuses = list(statuses)
    minute = minute_of(store.now() if now is None else now)
    manager = CircuitSample.objects.using(store.db_alias)
    manager.bulk_create(
        [
            CircuitSample(
                circuit_id=status.circuit.pk,
                minute=minute,
                calls=status.window.calls,
                failures=status.window.failures,
                slow=status.window.slow,
                state=status.state.value,
            )
            for status in statuses
        ],
        ignore_conflicts=True,
    )
    manager.filter(minute__lt=minute - RETENTION).delete()
    return len(statuses)


def maybe_record_samples(
    statuses: Iterable[LiveStatus] | None = None, now: float | None = None
) -> bool:
    """Record samples when the latest one is at least :data:`INTERVAL` seconds old.

    ``statuses`` must cover every circuit (or be None to read them). Costs nothing until
    the next minute starts, then one query (plus the writes when a sample is due).
    Returns True when samples were written.
    """
    from circuitbreaker_app.models import CircuitSample

    store = get_store()
    if store.clock() < _next_check.get(store, -math.inf):
        return False
    now = store.now() if now is None else now
    latest = CircuitSample.objects.using(store.db_alias).aggregate(latest=Max("minute"))["latest"]
    age = now - latest.timestamp() if latest is not None else math.inf
    if age < INTERVAL:
        _next_check[store] = store.clock() + (INTERVAL - age)
        return False
    record_samples(statuses, now)
    _next_check[store] = store.clock() + (INTERVAL - (now % INTERVAL))
    return True


def history(
    circuit_ids: Iterable[int], now: float | None = None, span: timedelta = HISTORY
) -> dict[int, list[tuple[float, float, int, str]]]:
    """``{circuit id: [(minute epoch, failure rate %, calls, state), …]}`` oldest first.

    One query. The failure rate is 0.0 for a minute whose window held no calls (e.g. open).
    """
    from circuitbreaker_app.models import CircuitSample

    store = get_store()
    ids = list(circuit_ids)
    result: dict[int, list[tuple[float, float, int, str]]] = {pk: [] for pk in ids}
    if not ids:
        return result
    since = minute_of(store.now() if now is None else now) - span
    rows = (
        CircuitSample.objects.using(store.db_alias)
        .filter(circuit_id__in=ids, minute__gt=since)
        .order_by("circuit_id", "minute")
        .values_list("circuit_id", "minute", "calls", "failures", "state")
    )
    for circuit_id, minute, calls, failures, state in rows:
        rate = round(100.0 * failures / calls, 2) if calls else 0.0
        result[circuit_id].append((minute.timestamp(), rate, calls, state))
    return result
