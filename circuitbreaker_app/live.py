"""What operators see: each circuit's state and current window, read for many at once.

The admin change list, the live state panel, the status endpoint, the ``circuits`` command
and the per-minute samples all show the same numbers, built here from ``Circuit`` rows and
the store's shared windows (one cache read for every circuit on a page; never the hot path).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.db.models import Exists, OuterRef, QuerySet, Subquery

from circuitbreaker_app.core import Snapshot, State
from circuitbreaker_app.store import get_store

if TYPE_CHECKING:
    from circuitbreaker_app.models import Circuit

#: States in which calls are rejected (what ``circuits list --check`` reports).
REJECTING_STATES = frozenset({State.OPEN, State.HALF_OPEN, State.FORCED_OPEN})
#: States whose window stays empty after the trip (calls are rejected or are trials):
#: operators see the window as it was when the circuit opened instead.
TRIPPED_STATES = frozenset({State.OPEN, State.HALF_OPEN})


#: States a trip (``→ open`` from them) starts from: the window that opened the circuit.
TRIP_FROM_STATES = (State.CLOSED.value,)
#: Moves that end a run of opens (a later reopen is not a new trip).
RUN_ENDING_STATES = tuple(s.value for s in State if s not in TRIPPED_STATES)


@dataclass(frozen=True)
class Trip:
    """The window when the circuit opened: the figures of its latest CLOSED → OPEN event.

    A failed trial or probe reopens the circuit (HALF_OPEN → OPEN) with an empty window;
    the trip that started the run of opens is what operators need to see, so those
    reopen events are skipped.
    """

    failure_rate: float
    slow_call_rate: float
    calls: int

    def as_json(self) -> dict[str, Any]:
        return {
            "failure_rate": round(self.failure_rate, 2),
            "slow_call_rate": round(self.slow_call_rate, 2),
            "calls": self.calls,
        }


def with_trip(queryset: QuerySet[Circuit]) -> QuerySet[Circuit]:
    """``queryset`` annotated with the numbers of the trip that started its current run of
    opens (subqueries: no extra query).

    The trip is the latest CLOSED → OPEN event with no later event that ended the run
    (a close, a reset, a forced state): a circuit forced open that failed its trial after
    the force ended has no trip figures, rather than those of an older, unrelated trip.
    """
    from circuitbreaker_app.models import CircuitEvent

    ended_later = CircuitEvent.objects.filter(
        circuit_id=OuterRef("circuit_id"),
        generation__gt=OuterRef("generation"),
        to_state__in=RUN_ENDING_STATES,
        changes__isnull=True,  # definition edits end nothing
    )
    latest = (
        CircuitEvent.objects.filter(
            circuit=OuterRef("pk"),
            to_state=State.OPEN.value,
            from_state__in=TRIP_FROM_STATES,
            changes__isnull=True,
        )
        .filter(~Exists(ended_later))
        .order_by("-created_at", "-id")
    )
    return queryset.annotate(
        trip_failure_rate=Subquery(latest.values("failure_rate")[:1]),
        trip_slow_call_rate=Subquery(latest.values("slow_call_rate")[:1]),
        trip_calls=Subquery(latest.values("calls")[:1]),
    )


def _trip_of(row: Circuit, state: State) -> Trip | None:
    calls = getattr(row, "trip_calls", None)
    if state not in TRIPPED_STATES or calls is None:
        return None
    return Trip(
        failure_rate=getattr(row, "trip_failure_rate", None) or 0.0,
        slow_call_rate=getattr(row, "trip_slow_call_rate", None) or 0.0,
        calls=calls,
    )


def iso(epoch: float | None) -> str | None:
    """An epoch time as ISO 8601 in UTC (None stays None)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


@dataclass(frozen=True)
class LiveStatus:
    """One circuit now: durable state (row or newer cache entry) plus its window totals."""

    circuit: Circuit
    state: State
    generation: int
    open_count: int
    opened_at: float | None
    retry_at: float | None
    changed_at: float | None
    #: When an operator state ends by itself (None: until reset, or not forced).
    forced_until: float | None
    retry_after: float | None
    window: Snapshot
    #: While OPEN or HALF_OPEN (window empty), the window when it opened, if known.
    trip: Trip | None = None
    #: Calls rejected (not permitted) by the whole fleet since the circuit was created, to
    #: within ``STATE_TTL`` (other processes share theirs once per ``STATE_TTL``).
    rejected: int = 0

    @property
    def name(self) -> str:
        return self.circuit.name

    @property
    def failure_rate(self) -> float:
        return self.window.failure_rate

    @property
    def slow_call_rate(self) -> float:
        return self.window.slow_call_rate

    @property
    def rejects_calls(self) -> bool:
        return self.state in REJECTING_STATES

    def as_json(self) -> dict[str, Any]:
        """The status endpoint's entry for this circuit (probe URL credentials masked)."""
        row = self.circuit
        return {
            "id": row.pk,
            "name": row.name,
            "state": self.state.value,
            "generation": self.generation,
            "open_count": self.open_count,
            "retry_after": None if self.retry_after is None else round(self.retry_after, 3),
            "opened_at": iso(self.opened_at),
            "retry_at": iso(self.retry_at),
            "changed_at": iso(self.changed_at),
            "forced_until": iso(self.forced_until),
            "calls": self.window.calls,
            "failures": self.window.failures,
            "slow": self.window.slow,
            "failure_rate": round(self.failure_rate, 2),
            "slow_call_rate": round(self.slow_call_rate, 2),
            "at_trip": self.trip.as_json() if self.trip else None,
            "rejected": self.rejected,
            "config": {
                "window_type": row.window_type,
                "window_size": row.window_size,
                "minimum_calls": row.minimum_calls,
                "failure_rate_threshold": row.failure_rate_threshold,
                "slow_call_duration": row.slow_call_duration,
                "slow_call_rate_threshold": row.slow_call_rate_threshold,
                "wait_duration": row.wait_duration,
                "half_open_max_calls": row.half_open_max_calls,
                "trial_mode": row.trial_mode,
                "probe_url": row.masked_probe_url,
            },
        }


def live_statuses(rows: Iterable[Circuit]) -> list[LiveStatus]:
    """The live status of each row, in order: one cache round trip for all of them.

    Rows read through :func:`with_trip` also carry the numbers of their latest trip.
    """
    rows = list(rows)
    if not rows:
        return []
    store = get_store()
    runtimes = store.refresh_rows(rows)
    now = store.now()
    result = []
    for row in rows:
        runtime = runtimes[row.name]
        status = runtime.status  # fresh: refresh_rows just read it
        result.append(
            LiveStatus(
                circuit=row,
                state=status.state,
                generation=status.generation,
                open_count=status.open_count,
                opened_at=status.opened_at,
                retry_at=status.retry_at,
                changed_at=status.changed_at,
                forced_until=status.forced_until,
                retry_after=status.retry_after(now),
                window=runtime.snapshot(),
                trip=_trip_of(row, status.state),
                # the fleet's total, plus what this process has not shared yet
                rejected=runtime.shared_tally.get("rejected", 0) + int(runtime.rejected),
            )
        )
    return result
