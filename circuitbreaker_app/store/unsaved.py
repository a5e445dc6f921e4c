"""Transitions saved later: what a process decides while the database is unreachable.

The process applies such a transition to its own snapshot at once and queues it on the
circuit's runtime (:class:`UnsavedTransitions`); when the database answers again, the
store writes the queue oldest first, each a compare-and-set (:class:`UnsavedWriter`), and
drops it when another process's transition won meanwhile (one event row per real
transition, fleet-wide).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import Error as DjangoDatabaseError

from circuitbreaker_app.core import CircuitStatus, Snapshot

if TYPE_CHECKING:
    from circuitbreaker_app.store.dbguard import DatabaseGuard
    from circuitbreaker_app.store.outages import Outages
    from circuitbreaker_app.store.runtime import CircuitRuntime

logger = logging.getLogger("circuitbreaker_app")


@dataclass(frozen=True, slots=True)
class UnsavedTransition:
    """A transition waiting to be written: ``old`` → ``new`` and what the event records."""

    old: CircuitStatus
    new: CircuitStatus
    reason: str
    snapshot: Snapshot | None
    actor: Any = None


class UnsavedTransitions:
    """One runtime's transitions not yet written, oldest first (true while any wait)."""

    __slots__ = ("_moves",)

    def __init__(self) -> None:
        self._moves: deque[UnsavedTransition] = deque()

    def __bool__(self) -> bool:
        return bool(self._moves)

    def __len__(self) -> int:
        return len(self._moves)

    def add(self, move: UnsavedTransition) -> None:
        """Queue ``move`` after the others (it follows the last one's generation)."""
        self._moves.append(move)

    def oldest(self) -> UnsavedTransition | None:
        """The transition to write next, or None."""
        return self._moves[0] if self._moves else None

    def saved(self, move: UnsavedTransition) -> None:
        """``move`` (the oldest) is written: drop it from the queue."""
        if self._moves and self._moves[0] is move:
            self._moves.popleft()

    def drop(self) -> None:
        """Forget them all: the fleet moved on, so writing them would lose anyway."""
        self._moves.clear()


class UnsavedWriter:
    """The side of :class:`~circuitbreaker_app.store.registry.CircuitStore` that writes
    queued transitions when the database returns."""

    db: DatabaseGuard
    outages: Outages
    _runtimes: dict[str, CircuitRuntime]
    _saving: threading.Lock

    def _write_transition(self, runtime: CircuitRuntime, move: UnsavedTransition) -> bool:
        raise NotImplementedError("CircuitStore provides _write_transition()")

    def _drop_broken_connection(self) -> None:
        raise NotImplementedError("CircuitStore provides _drop_broken_connection()")

    def reload(self, runtime: CircuitRuntime) -> None:
        raise NotImplementedError("CircuitStore provides reload()")

    def save_unsaved(self, runtime: CircuitRuntime) -> None:
        """Write the transitions made while the database was down, oldest first.

        Each is a compare-and-set from the generation before it, so when another process
        wrote its own transition meanwhile ours lose: they are dropped and the circuit is
        re-read (one event row per real transition, fleet-wide). Stops at the first
        database error and keeps the rest for the next refresh.
        """
        if not self._saving.acquire(blocking=False):
            return  # another thread of this process is writing them
        lost = False
        try:
            while (move := runtime.unsaved.oldest()) is not None:
                try:
                    won = self.db.run(self._write_transition, runtime, move)
                except DjangoDatabaseError as exc:
                    self.outages.failed("database", exc)
                    self._drop_broken_connection()
                    return
                self.outages.recovered("database")
                if not won:
                    runtime.unsaved.drop()
                    lost = True
                    break
                runtime.unsaved.saved(move)
                logger.info(
                    "circuit %r: transition %s -> %s made while the database was down is saved",
                    runtime.name,
                    move.old.state.value,
                    move.new.state.value,
                )
        finally:
            self._saving.release()
        if lost:
            self.reload(runtime)  # another process's transition won: take what it decided

    def _after_database_outage(self) -> None:
        """The database answers again (the guard's background thread): write every
        transition this process made meanwhile, oldest first."""
        self.outages.recovered("database")
        for runtime in list(self._runtimes.values()):
            if runtime.unsaved:
                self.save_unsaved(runtime)
