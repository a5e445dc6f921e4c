"""The shared entry of a circuit: its durable state and its definition, as every process
reads it from the cache, in one frozen :class:`CircuitEntry` with its conversions (from a
database row, to and from the JSON-compatible dict the cache holds)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any

from circuitbreaker_app import conf
from circuitbreaker_app.core import CircuitConfig, CircuitStatus, State

#: The circuit id of an entry built from the settings because neither the cache nor the
#: database answered on first use (no row has it, so its transitions are never written).
PROVISIONAL_ID = -1

_TIMES = ("opened_at", "retry_at", "changed_at", "forced_until")
_STATES = {state.value: state for state in State}


class InvalidRow(Exception):
    """A ``Circuit`` row that makes no valid entry: changed behind the model's back (say an
    ``UPDATE`` that sets ``window_size`` to 0, or an unknown state), so nothing is published
    from it. ``name`` is the circuit, ``problem`` what is wrong with the row."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"circuit {name!r}: {problem}")
        self.name = name
        self.problem = problem


def timestamp(value: datetime | None) -> float | None:
    """Seconds since the epoch of an aware ``value`` (None stays None)."""
    return value.timestamp() if value is not None else None


def to_datetime(value: float | None) -> datetime | None:
    """The aware UTC datetime of epoch seconds ``value`` (None stays None)."""
    return datetime.fromtimestamp(value, tz=UTC) if value is not None else None


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_time(value: Any) -> bool:
    return value is None or (
        type(value) in (int, float) and math.isfinite(value) and abs(value) < 1e11
    )


@dataclass(frozen=True, slots=True)
class CircuitEntry:
    """One circuit as the fleet shares it: which row (``circuit_id``), where it is
    (``status``) and how it decides (``config``, validated once, when the entry is built).

    The cache holds :meth:`to_json` (a dict of JSON values: Redis's Lua scripts read its
    ``id`` and ``generation``); :meth:`from_json` reads it back, and anything that is not
    a well-formed entry of ours reads as None, a miss (DESIGN §4).
    """

    circuit_id: int
    status: CircuitStatus
    config: CircuitConfig

    @property
    def generation(self) -> int:
        """The status's generation (what every compare-and-set compares)."""
        return self.status.generation

    @classmethod
    def from_row(cls, row: Any) -> CircuitEntry:
        """The entry of a ``Circuit`` row (its durable state and decision settings).

        Raises :class:`InvalidRow` when the row makes no valid entry.
        """
        try:
            status = CircuitStatus(
                state=State(row.state),
                generation=row.generation,
                open_count=row.open_count,
                opened_at=timestamp(row.opened_at),
                retry_at=timestamp(row.retry_at),
                changed_at=timestamp(row.changed_at),
                forced_until=timestamp(row.forced_until),
            )
            config = CircuitConfig.from_mapping(row.definition())
        except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise InvalidRow(row.name, str(exc)) from exc
        return cls(row.pk, status, config)

    @classmethod
    def provisional(cls, name: str) -> CircuitEntry:
        """A CLOSED circuit defined by the settings alone (``CIRCUITS[name]`` over
        ``DEFAULTS`` over the model's defaults), for a first use while the cache and the
        database are down.

        The process counts and decides on its own with it; the first refresh that reaches
        either takes the stored circuit instead, which then wins over anything decided here.
        """
        from django.core.exceptions import ValidationError

        from circuitbreaker_app.models import Circuit

        fields = {**(conf.get("DEFAULTS") or {}), **((conf.get("CIRCUITS") or {}).get(name) or {})}
        try:
            config = Circuit(name=name, **fields).config()
        except (TypeError, ValueError, ValidationError):  # checks report bad settings elsewhere
            config = Circuit(name=name).config()
        return cls(PROVISIONAL_ID, CircuitStatus(), config)

    def with_status(self, status: CircuitStatus) -> CircuitEntry:
        """This circuit (same id and definition) at ``status``."""
        return replace(self, status=status)

    def to_json(self) -> dict[str, Any]:
        """What the cache stores: a dict of JSON values (the format of 0.2)."""
        status = self.status
        return {
            "id": self.circuit_id,
            "state": status.state.value,
            "generation": status.generation,
            "open_count": status.open_count,
            "opened_at": status.opened_at,
            "retry_at": status.retry_at,
            "changed_at": status.changed_at,
            "forced_until": status.forced_until,
            "config": asdict(self.config),
        }

    @classmethod
    def from_json(cls, raw: Any) -> CircuitEntry | None:
        """The entry ``raw`` holds (what the cache returned for a state key), or None when
        it is not a well-formed entry of ours: a missing, malformed or foreign value is a
        miss, reloaded from the database and rewritten, never an error in a guarded call.

        An entry written before 0.2 has no ``forced_until``: it reads as None.
        """
        if not isinstance(raw, dict):
            return None
        try:
            state = _STATES.get(raw["state"]) if isinstance(raw["state"], str) else None
            if not (
                state is not None
                and type(raw["id"]) is int
                and _is_count(raw["generation"])
                and _is_count(raw["open_count"])
                and all(_is_time(raw.get(name)) for name in _TIMES)
                and isinstance(raw["config"], dict)
            ):
                return None
            config = CircuitConfig.from_mapping(raw["config"])
        except (KeyError, TypeError, ValueError):  # ConfigError is a ValueError
            return None
        status = CircuitStatus(
            state=state,
            generation=raw["generation"],
            open_count=raw["open_count"],
            opened_at=raw.get("opened_at"),
            retry_at=raw.get("retry_at"),
            changed_at=raw.get("changed_at"),
            forced_until=raw.get("forced_until"),
        )
        return cls(raw["id"], status, config)
