"""The admin dashboard's data: trouble first, one page of it, then only what changed.

An on-call engineer opens the dashboard to find what is wrong, so circuits come in this
order: open, half-open, forced open, forced closed, disabled, then closed ones by failure
rate (highest first), then by name. The page shows the first :data:`PAGE_SIZE` of them
(a filter, ``?q=`` and ``?state=``, narrows the set on the server so that links work).

Polls are cheap whatever the number of circuits: the page's data carries a
:class:`Cursor`, and a poll that sends it back gets only

- the circuits whose row changed since (a transition, an edit, a new circuit), read live;
- the sample periods written since (one small row per circuit every 10 seconds), from
  which the browser updates each card's figures and sparkline;
- the count of circuits in each state (one aggregate query), for the summary.

so a poll costs a handful of indexed queries and no read of every circuit's window
(``benchmarks/dashboard.py`` measures it with 1,000 circuits). Between samples a closed
circuit's figures are at most one period (:data:`~circuitbreaker_app.samples.INTERVAL`
seconds, plus the worker's delay) old; state changes arrive on the next poll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.db.models import Count, Max, Q, QuerySet
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app import samples
from circuitbreaker_app.core import State
from circuitbreaker_app.live import LiveStatus, iso, live_statuses, with_trip
from circuitbreaker_app.models import Circuit, CircuitSample
from circuitbreaker_app.store import get_store

#: Cards on the page (the rest are a filter away).
PAGE_SIZE = 100
#: Trouble first: the position of each state in the dashboard's order.
STATE_ORDER: dict[State, int] = {
    State.OPEN: 0,
    State.HALF_OPEN: 1,
    State.FORCED_OPEN: 2,
    State.FORCED_CLOSED: 3,
    State.DISABLED: 4,
    State.CLOSED: 5,
}
#: States in the order of :data:`STATE_ORDER` (sample points name theirs by index).
STATES = sorted(STATE_ORDER, key=STATE_ORDER.__getitem__)
#: Seconds of changes a poll reads again (a transition committed while the last poll ran).
OVERLAP = 5.0


class DashboardFilter(forms.Form):
    """``?q=`` (name or description contains) and ``?state=`` (repeatable)."""

    q = forms.CharField(label=_("Filter"), required=False, max_length=100, strip=True)
    state = forms.MultipleChoiceField(
        label=_("state"), required=False, choices=Circuit.StateChoices.choices
    )

    def apply(self, queryset: QuerySet[Circuit]) -> QuerySet[Circuit]:
        """``queryset`` narrowed by the valid filter (call after ``is_valid()``)."""
        text = self.cleaned_data.get("q") or ""
        if text:
            queryset = queryset.filter(Q(name__icontains=text) | Q(description__icontains=text))
        if self.cleaned_data.get("state"):
            queryset = queryset.filter(state__in=self.cleaned_data["state"])
        return queryset


@dataclass(frozen=True)
class Cursor:
    """Where a client is: changes seen up to ``changes``, samples up to ``period``."""

    changes: float
    period: float

    def __str__(self) -> str:
        return f"{self.changes:.3f}:{self.period:.0f}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """The cursor a poll sent back; ValueError when it is not one of ours."""
        changes, sep, period = text.partition(":")
        try:
            cursor = cls(float(changes), float(period))
        except ValueError:
            raise ValueError(f"not a dashboard cursor: {text[:40]!r}") from None
        if not sep or not all(map(math.isfinite, (cursor.changes, cursor.period))):
            raise ValueError(f"not a dashboard cursor: {text[:40]!r}")
        return cursor


def sort_key(status: LiveStatus) -> tuple[int, float, str]:
    """Trouble first, then the higher failure rate (at the trip, while tripped), then name."""
    rate = status.trip.failure_rate if status.trip is not None else status.failure_rate
    return (STATE_ORDER[status.state], -rate, status.name)


def entry(status: LiveStatus) -> dict[str, Any]:
    """What a card shows of one circuit (much less than the status endpoint's entry)."""
    row = status.circuit
    slow_on = row.slow_call_duration is not None
    return {
        "id": row.pk,
        "name": row.name,
        "state": status.state.value,
        "failure_rate": round(status.failure_rate, 2),
        "slow_call_rate": round(status.slow_call_rate, 2) if slow_on else None,
        "calls": status.window.calls,
        "retry_after": None if status.retry_after is None else round(status.retry_after, 1),
        "changed_at": iso(status.changed_at),
        "at_trip": status.trip.as_json() if status.trip else None,
        "threshold": row.failure_rate_threshold,
        "rejected": status.rejected,
    }


def _epoch(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, tz=UTC)


def _point(origin: float, point: samples.Point) -> list[int]:
    """``[period index from origin, calls, failures, state index, calls rejected in the
    period]``: 12 to 25 bytes."""
    return [
        round((point.at - origin) / samples.INTERVAL),
        point.calls,
        point.failures,
        STATE_ORDER[State(point.state)],
        point.rejected,
    ]


def state_counts() -> dict[str, int]:
    """How many circuits are in each state (the whole fleet, filter or not)."""
    found = (
        Circuit.objects.using(get_store().db_alias)
        .values_list("state")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return {state: n for state, n in found}


def _newest_period(found: dict[int, list[samples.Point]], default: float) -> float:
    return max((points[-1].at for points in found.values() if points), default=default)


def first_page(circuits: QuerySet[Circuit], page_size: int = PAGE_SIZE) -> dict[str, Any]:
    """The dashboard when it opens: the first ``page_size`` circuits, trouble first, with
    their sparklines, and the cursor its polls send back. Reads every matching circuit's
    window once (on opening, not on every poll)."""
    store = get_store()
    now = store.now()
    statuses = sorted(live_statuses(with_trip(circuits)), key=sort_key)
    shown = statuses[:page_size]
    origin = samples.period_of(now).timestamp() - samples.HISTORY.total_seconds()
    found = samples.history([status.circuit.pk for status in shown], now=now)
    if not shown:
        newest = CircuitSample.objects.using(store.db_alias).aggregate(at=Max("at"))["at"]
        period = newest.timestamp() if newest else origin
    else:
        period = _newest_period(found, default=origin)
    return {
        "cursor": str(Cursor(now, period)),
        "generated_at": iso(now),
        "interval": samples.INTERVAL,
        "span": samples.HISTORY.total_seconds(),
        "origin": origin,
        "states": [state.value for state in STATES],
        "total": len(statuses),
        "counts": state_counts(),
        "circuits": [
            {**entry(status), "points": [_point(origin, p) for p in found[status.circuit.pk]]}
            for status in shown
        ],
    }


def changes(circuits: QuerySet[Circuit], cursor: Cursor) -> dict[str, Any]:
    """What changed since ``cursor`` among ``circuits``: see the module docstring."""
    store = get_store()
    now = store.now()
    since = _epoch(cursor.changes - OVERLAP)
    changed = live_statuses(
        with_trip(circuits.filter(Q(changed_at__gt=since) | Q(updated_at__gt=since)))
    )
    manager = CircuitSample.objects.using(store.db_alias)
    rows = list(
        manager.filter(circuit__in=circuits.values("pk"), at__gt=_epoch(cursor.period))
        .order_by("circuit_id", "at")
        .values_list("circuit_id", "at", "calls", "failures", "slow", "state", "rejected_total")
    )
    # A period's rejected count starts from the total of the client's newest period: read
    # only for circuits that ever rejected a call (most never do; no query when none did).
    rejecting = {row[0] for row in rows if row[6]}
    before: dict[int, int] = (
        dict(
            manager.filter(circuit_id__in=rejecting, at=_epoch(cursor.period)).values_list(
                "circuit_id", "rejected_total"
            )
        )
        if rejecting
        else {}
    )
    found: dict[int, list[samples.Point]] = {}
    for circuit_id, at, calls, failures, slow, state, rejected_total in rows:
        previous = before.get(circuit_id, rejected_total)
        before[circuit_id] = rejected_total
        rejected = max(0, rejected_total - previous)  # a total that went back: restarted
        found.setdefault(circuit_id, []).append(
            samples.Point(at.timestamp(), calls, failures, slow, state, rejected)
        )
    origin = cursor.period
    return {
        "cursor": str(Cursor(now, _newest_period(found, default=cursor.period))),
        "generated_at": iso(now),
        "origin": origin,
        "counts": state_counts(),
        "changed": [entry(status) for status in changed],
        "samples": {str(pk): [_point(origin, p) for p in points] for pk, points in found.items()},
    }
