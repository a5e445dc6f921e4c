"""The shared entry of a circuit: its durable state plus its definition, as every process
reads it from the cache (JSON-compatible dicts), and the conversions to and from it."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from circuitbreaker_app import conf
from circuitbreaker_app.core import CircuitConfig, CircuitStatus, State


def timestamp(value: datetime | None) -> float | None:
    """Seconds since the epoch of an aware ``value`` (None stays None)."""
    return value.timestamp() if value is not None else None


def to_datetime(value: float | None) -> datetime | None:
    """The aware UTC datetime of epoch seconds ``value`` (None stays None)."""
    return datetime.fromtimestamp(value, tz=UTC) if value is not None else None


def entry_from_row(row: Any) -> dict[str, Any]:
    """The cache entry every process reads: durable state plus the definition."""
    return {
        "id": row.pk,
        "state": row.state,
        "generation": row.generation,
        "open_count": row.open_count,
        "opened_at": timestamp(row.opened_at),
        "retry_at": timestamp(row.retry_at),
        "changed_at": timestamp(row.changed_at),
        "forced_until": timestamp(row.forced_until),
        "config": row.definition(),
    }


#: The circuit id of a runtime built from the settings because neither the cache nor the
#: database answered on first use (no row has it, so its transitions are never written).
PROVISIONAL_ID = -1


def provisional_entry(name: str) -> dict[str, Any]:
    """A CLOSED circuit defined by the settings alone (``CIRCUITS[name]`` over ``DEFAULTS``
    over the model's defaults), for a first use while the cache and the database are down.

    The process counts and decides on its own with it; the first refresh that reaches
    either takes the stored circuit instead, which then wins over anything decided here.
    """
    from django.core.exceptions import ValidationError

    from circuitbreaker_app.models import Circuit

    fields = {**(conf.get("DEFAULTS") or {}), **((conf.get("CIRCUITS") or {}).get(name) or {})}
    try:
        definition = Circuit(name=name, **fields).definition()
        CircuitConfig.from_mapping(definition)
    except (TypeError, ValueError, ValidationError):  # checks report bad settings elsewhere
        definition = Circuit(name=name).definition()
    return {
        "id": PROVISIONAL_ID,
        "state": State.CLOSED.value,
        "generation": 0,
        "open_count": 0,
        "opened_at": None,
        "retry_at": None,
        "changed_at": None,
        "forced_until": None,
        "config": definition,
    }


_TIMES = ("opened_at", "retry_at", "changed_at", "forced_until")
_STATES = frozenset(state.value for state in State)


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_time(value: Any) -> bool:
    return value is None or (
        type(value) in (int, float) and math.isfinite(value) and abs(value) < 1e11
    )


def parse_entry(raw: Any) -> dict[str, Any] | None:
    """``raw`` (what the cache holds at a state key) if it is a well-formed entry of ours,
    else None: a missing, malformed or foreign entry is a miss, reloaded from the database
    and rewritten (DESIGN §4), never an error in a guarded call."""
    if not isinstance(raw, dict):
        return None
    try:
        if not (
            type(raw["id"]) is int
            and raw["state"] in _STATES
            and _is_count(raw["generation"])
            and _is_count(raw["open_count"])
            and all(_is_time(raw.get(name)) for name in _TIMES)
            and isinstance(raw["config"], dict)
        ):
            return None
        CircuitConfig.from_mapping(raw["config"])
    except (KeyError, TypeError, ValueError):  # ConfigError is a ValueError
        return None
    return raw


def status_from_entry(entry: dict[str, Any]) -> CircuitStatus:
    """The core status held in a cache entry."""
    return CircuitStatus(
        state=State(entry["state"]),
        generation=entry["generation"],
        open_count=entry["open_count"],
        opened_at=entry["opened_at"],
        retry_at=entry["retry_at"],
        changed_at=entry["changed_at"],
        forced_until=entry.get("forced_until"),  # absent from entries written before 0.2
    )


def entry_with(circuit_id: int, config: CircuitConfig, status: CircuitStatus) -> dict[str, Any]:
    """The entry of circuit ``circuit_id`` with ``config`` at ``status``."""
    return {
        "id": circuit_id,
        "state": status.state.value,
        "generation": status.generation,
        "open_count": status.open_count,
        "opened_at": status.opened_at,
        "retry_at": status.retry_at,
        "changed_at": status.changed_at,
        "forced_until": status.forced_until,
        "config": asdict(config),
    }
