"""The operator API: force a circuit open or closed, disable it, reset it, probe it.

``force_open``, ``force_closed`` and ``disable`` take ``until`` (an aware ``datetime`` or
seconds from now) to end the state by itself: a forced-open circuit then moves to
HALF_OPEN (trials or the probe decide, as after a normal wait), the others return to
CLOSED with an empty window. The first guarded call after the end moves it, or the beat
task ``probe_circuits`` when no call comes. Each function returns True when it changed the
circuit and False when it was already so, and raises :class:`UnknownCircuitError` for a
name with no circuit.

:data:`MOVES` is the one table of these moves: the ``circuits`` command's subcommands and
the admin's actions are generated from it (DESIGN §1), so the three never disagree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext_lazy as _

from circuitbreaker_app.audit import FORCE_PERMISSION
from circuitbreaker_app.core import State
from circuitbreaker_app.store import UnknownCircuitError, get_store
from circuitbreaker_app.text import shorten

if TYPE_CHECKING:  # a gettext_lazy() string (django-stubs' name for it)
    from django.utils.functional import _StrPromise as LazyText

__all__ = [
    "MOVES",
    "Move",
    "UnknownCircuitError",
    "disable",
    "force_closed",
    "force_open",
    "move",
    "parse_duration",
    "probe",
    "reset",
]


#: Durations the command accepts: a number and a unit (s, m, h, d).
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
#: The longest end an operator may set (a year): longer is "until reset".
MAX_DURATION = 366 * 86_400


@dataclass(frozen=True)
class Move:
    """One operator move, described once for the API, the command and the admin."""

    #: The function in this module, and the admin action's name.
    name: str
    #: The ``circuits`` subcommand.
    command: str
    #: The state the circuit is moved to.
    state: State
    #: Whether the move takes ``until`` (``--for`` on the command, a duration in the admin).
    takes_duration: bool
    #: The admin action's label.
    label: LazyText
    #: What the command's help and the admin's confirmation page say the move does.
    effect: LazyText
    #: The permission it needs (admin actions, status API writes).
    permission: str = FORCE_PERMISSION

    def __call__(
        self, name: str, *, until: Any = None, reason: str = "", actor: Any = None
    ) -> bool:
        """Apply this move to the circuit ``name`` (see :func:`move`)."""
        return move(self, name, until=until, reason=reason, actor=actor)


MOVES: tuple[Move, ...] = (
    Move(
        "force_open",
        "open",
        State.FORCED_OPEN,
        True,
        _("Force open (reject every call)"),
        _("Force open: reject every call until reset or the end of the chosen duration."),
    ),
    Move(
        "force_closed",
        "close",
        State.FORCED_CLOSED,
        True,
        _("Force closed (admit every call, never trip)"),
        _("Force closed: admit every call and keep counting, but never trip."),
    ),
    Move(
        "disable",
        "disable",
        State.DISABLED,
        True,
        _("Disable (admit every call, record nothing)"),
        _("Disable: admit every call and record nothing."),
    ),
    Move(
        "reset",
        "reset",
        State.CLOSED,
        False,
        _("Reset to closed with an empty window"),
        _("Reset: back to normal CLOSED with an empty window."),
    ),
)
MOVES_BY_NAME: dict[str, Move] = {m.name: m for m in MOVES}
MOVES_BY_COMMAND: dict[str, Move] = {m.command: m for m in MOVES}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``30s``, ``15m``, ``1h``, ``4h`` or ``2d``.

    Raises ValueError naming the value for anything else (no unit, zero, negative, more
    than a year).
    """
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(
            f"a duration is a number and a unit (30s, 15m, 1h, 4h, 2d), but was {text!r}"
        )
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_DURATION:
        raise ValueError(f"a duration must be more than 0 and at most 366d, but was {text!r}")
    return seconds


def deadline(until: Any, now: float) -> float | None:
    """``until`` (None, an aware datetime, a timedelta or seconds from now) as shared time.

    Raises ValueError naming ``until`` for a naive datetime, an end that is not in the
    future, a non-finite number or an end more than a year away; TypeError for other types.
    """
    if until is None:
        return None
    if isinstance(until, datetime):
        if until.tzinfo is None or until.utcoffset() is None:
            raise ValueError(f"until must be an aware datetime, but was naive: {until!r}")
        seconds = until.timestamp() - now
    elif isinstance(until, timedelta):
        seconds = until.total_seconds()
    elif isinstance(until, int | float) and not isinstance(until, bool):
        seconds = float(until)
    else:
        raise TypeError(f"until must be an aware datetime or seconds from now, but was {until!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"until must be in the future, but was {until!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"until must be at most 366 days away, but was {until!r}")
    return now + seconds


def _require(name: str) -> None:
    from circuitbreaker_app.models import Circuit

    if not Circuit.objects.using(get_store().db_alias).filter(name=name).exists():
        raise UnknownCircuitError(f"no circuit named {name!r}")


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def move(
    operator_move: Move, name: str, *, until: Any = None, reason: str = "", actor: Any = None
) -> bool:
    """Move the circuit ``name`` as ``operator_move`` says; True when it changed.

    The move is one compare-and-set and one event (naming ``actor``, a user or None, with
    ``reason`` and the end, if any); ``state_changed`` is sent when the state differs.
    """
    if until is not None and not operator_move.takes_duration:
        raise TypeError(f"{operator_move.name}() takes no until")
    store = get_store()
    end = deadline(until, store.now())
    _require(name)
    text = reason or operator_move.name
    if end is not None:  # the event says when it ends (its reason holds 200 characters)
        text = f"{shorten(text, 170)} (until {_when(end)})"
    return store.move_to(name, operator_move.state, text, actor=actor, until=end)


def force_open(name: str, *, until: Any = None, reason: str = "", actor: Any = None) -> bool:
    """FORCED_OPEN: reject every call, until ``until`` (then HALF_OPEN) or a reset."""
    return move(MOVES_BY_NAME["force_open"], name, until=until, reason=reason, actor=actor)


def force_closed(name: str, *, until: Any = None, reason: str = "", actor: Any = None) -> bool:
    """FORCED_CLOSED: admit every call and count it, never trip; until ``until`` or a reset."""
    return move(MOVES_BY_NAME["force_closed"], name, until=until, reason=reason, actor=actor)


def disable(name: str, *, until: Any = None, reason: str = "", actor: Any = None) -> bool:
    """DISABLED: admit every call and record nothing; until ``until`` or a reset."""
    return move(MOVES_BY_NAME["disable"], name, until=until, reason=reason, actor=actor)


def reset(name: str, *, reason: str = "", actor: Any = None) -> bool:
    """Back to CLOSED with an empty window and ``open_count = 0``.

    A CLOSED circuit has its window emptied and an event written, but no ``state_changed``
    signal is sent (its state did not change); this still returns True.
    """
    return move(MOVES_BY_NAME["reset"], name, reason=reason, actor=actor)


def probe(name: str) -> bool:
    """Run the circuit's probe now, in this process; True when it changed the circuit.

    An OPEN circuit whose probe succeeds closes (through HALF_OPEN); a HALF_OPEN one closes
    or reopens. A circuit in any other state, or with no probe, is left alone. Needs Celery
    installed (the probe is the task ``circuitbreaker_app.tasks.probe_circuit``, run here).
    """
    from circuitbreaker_app.models import Circuit
    from circuitbreaker_app.tasks import probe_circuit

    _require(name)
    rows = Circuit.objects.using(get_store().db_alias).filter(name=name)
    before = rows.values_list("generation", flat=True).first()
    probe_circuit(name)  # the task's body, run in this process
    return rows.values_list("generation", flat=True).first() != before
