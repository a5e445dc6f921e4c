"""Persistence: circuits in the database, their entries in the shared cache.

Loading (and creating on first use), the compare-and-set of every transition with its
event row, publishing entries to the cache on commit (never over a later generation);
the operator and task moves built on them are ``moves.py``'s. Everything here takes and returns
:class:`~circuitbreaker_app.store.entry.CircuitEntry` values and talks to a runtime through
its public methods only. Transitions made while the database was down are queued and
written later (``unsaved.py``). :class:`CircuitStore` (``registry.py``) inherits these.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from django.db import Error as DjangoDatabaseError
from django.db import connections, transaction
from django.db.models.functions import Now
from django.utils import timezone

from circuitbreaker_app import conf
from circuitbreaker_app.core import CircuitStatus, Snapshot, State
from circuitbreaker_app.store.backends.base import Counters
from circuitbreaker_app.store.entry import CircuitEntry, InvalidRow, to_datetime
from circuitbreaker_app.store.keys import state_key
from circuitbreaker_app.store.outages import Outages
from circuitbreaker_app.store.overflow import CapReached
from circuitbreaker_app.store.unsaved import UnsavedTransition, UnsavedWriter
from circuitbreaker_app.text import shorten

if TYPE_CHECKING:
    from circuitbreaker_app.store.dbguard import DatabaseGuard
    from circuitbreaker_app.store.runtime import CircuitRuntime

logger = logging.getLogger("circuitbreaker_app")

#: Set on the log record of every transition (a ``logging.Filter`` can tell it apart).
TRANSITION_RECORD = "circuit_transition"
#: An event's reason is at most this long (``CircuitEvent.reason``'s max_length).
REASON_MAX = 200


class UnknownCircuitError(LookupError):
    """Code used a circuit name that has no row, and ``AUTO_CREATE`` is off."""


class CircuitPersistence(UnsavedWriter):
    """The database side of :class:`~circuitbreaker_app.store.registry.CircuitStore` (with
    the writing of transitions saved later it inherits)."""

    db_alias: str
    cache: Any
    counters: Counters
    outages: Outages
    db: DatabaseGuard
    redis: Any
    sync_db_clock: bool
    offset: float
    ttl: float
    clock: Callable[[], float]
    wall: Callable[[], float]
    _runtimes: dict[str, CircuitRuntime]

    def now(self) -> float:
        raise NotImplementedError("CircuitStore provides now()")

    def runtime(self, name: str) -> CircuitRuntime:
        raise NotImplementedError("CircuitStore provides runtime()")

    def load_entry(self, name: str, create: bool = True, heal: bool = False) -> CircuitEntry:
        """Read a circuit from the database (creating it when allowed) and fill the cache.

        The queries are bounded by ``DB_TIMEOUT`` and fail at once while the database is
        known to be down (``dbguard.py``). ``heal``: the cache holds something malformed at
        the circuit's state key, so the entry is written over it (never over a later
        generation, on Redis) instead of only where nothing is.
        """
        row = self.db.run(self._read_row, name, create)
        entry = self.entry_of(row)
        if heal:
            self._publish_entry(state_key(name), entry)
            return entry
        try:
            if not self.cache.add(state_key(name), entry.to_json(), timeout=None):
                # Something is there: another process's entry, or a value that reads as
                # missing (a None, a foreign pickle). Only a good entry is kept.
                if CircuitEntry.from_json(self.cache.get(state_key(name))) is None:
                    self._publish_entry(state_key(name), entry)
        except Exception as exc:
            self.outages.failed("cache", exc)
        return entry

    def entry_of(self, row: Any) -> CircuitEntry:
        """The entry of a ``Circuit`` row; :class:`InvalidRow` when the row makes none (its
        definition was changed behind the model's back).

        An invalid row is logged as an error once per circuit, until a read finds it valid
        again. Callers publish nothing from it and carry on: a runtime keeps the last valid
        entry it knew (on first use, the settings' definition, as when the database cannot
        answer), the beat task's resync skips it (DESIGN §4: never an error in a guarded
        call).
        """
        topic = f"invalid row {row.name}"
        try:
            entry = CircuitEntry.from_row(row)
        except InvalidRow as exc:
            self.outages.error_once(
                topic,
                "circuitbreaker: circuit %r: its database row is not a valid definition (%s); "
                "nothing is published from it, and processes keep the last valid definition "
                "they know (or the settings') until the row is fixed",
                exc.name,
                exc.problem,
            )
            raise
        self.outages.settled(topic)
        return entry

    def _read_row(self, name: str, create: bool) -> Any:
        from circuitbreaker_app.models import Circuit

        queryset = Circuit.objects.using(self.db_alias).annotate(db_now=Now())
        started = self.wall()
        row = queryset.filter(name=name).first()
        self._observe_db_time(getattr(row, "db_now", None), started)
        if row is None:
            if not create:
                raise UnknownCircuitError(f"no circuit named {name!r}")
            row = self._create(name)
        return row

    def _observe_db_time(self, db_now: datetime | None, started: float) -> None:
        if self.redis is not None:
            return  # Redis's TIME is the one clock (RedisLink.mget)
        if not self.sync_db_clock or db_now is None or db_now.tzinfo is None:
            return
        offset = db_now.timestamp() - (started + self.wall()) / 2
        if abs(offset) < 86_400:  # ignore nonsense (a misconfigured time zone)
            self.offset = offset

    def _create(self, name: str) -> Any:
        from circuitbreaker_app.models import Circuit, validate_circuit_name

        if not conf.get("AUTO_CREATE"):
            raise UnknownCircuitError(
                f"no circuit named {name!r}: define it in CIRCUITBREAKER['CIRCUITS'] or the "
                "admin, or set CIRCUITBREAKER['AUTO_CREATE'] = True"
            )
        validate_circuit_name(name)
        manager = Circuit.objects.using(self.db_alias)
        configured = name in (conf.get("CIRCUITS") or {})
        if not configured and manager.count() >= int(conf.get("MAX_CIRCUITS")):
            # The registry gives the name an isolated breaker (overflow.py).
            raise CapReached(manager.values_list("name", flat=True))
        return self._get_or_create(name)

    def _get_or_create(self, name: str) -> Any:
        """The row of ``name``, inserted from ``DEFAULTS`` unless another process just did.

        ``INSERT … ON CONFLICT DO NOTHING`` (``bulk_create(ignore_conflicts=True)``) and a
        read: a lost race is no error, so PostgreSQL logs none (a failing INSERT logged
        one ERROR line per racing process and name).
        """
        from circuitbreaker_app.models import Circuit

        manager = Circuit.objects.using(self.db_alias)
        circuit = Circuit(name=name, **(conf.get("DEFAULTS") or {}))
        circuit.full_clean(validate_unique=False)
        manager.bulk_create([circuit], ignore_conflicts=True)
        return manager.get(name=name)

    def reload(self, runtime: CircuitRuntime) -> None:
        """Re-read a circuit from the database (after losing a compare-and-set)."""
        if runtime.unsaved:
            self.save_unsaved(runtime)  # reloads by itself when the fleet moved on
            return
        # With a cache that publishes (Redis: one script that never writes over a later
        # generation), the entry read is written in that one round trip, not by add, get
        # and get again: a process that lost a compare-and-set is back on its call sooner.
        publishes = getattr(self.cache, "publish", None) is not None
        try:
            entry = self.load_entry(runtime.name, create=False, heal=publishes)
        except UnknownCircuitError:
            # Deleted meanwhile: the next call re-reads it (and re-creates it if allowed).
            self.definition_deleted(runtime.name)
            runtime.mark_stale()
            return
        except DjangoDatabaseError as exc:
            self.outages.failed("database", exc)
            self._drop_broken_connection()
            return
        except InvalidRow:
            return  # logged: keep the last valid state
        if not publishes:
            current = CircuitEntry.from_json(self._cache_get(state_key(runtime.name)))
            if current is None or current.generation < entry.generation:
                self._cache_set(state_key(runtime.name), entry.to_json())
        runtime.adopt(entry)
        runtime.mark_fresh(self.clock() + self.ttl)

    def _cache_get(self, key: str) -> Any:
        try:
            return self.cache.get(key)
        except Exception as exc:
            self.outages.failed("cache", exc)
            return None

    def _publish_entry(self, key: str, entry: CircuitEntry) -> None:
        """Write a state entry; on Redis never over a later generation of the circuit."""
        publish = getattr(self.cache, "publish", None)
        if publish is None:
            self._cache_set(key, entry.to_json())
            return
        try:
            publish(key, entry)
        except Exception as exc:
            self.outages.failed("cache", exc)

    def _cache_set(self, key: str, value: Any) -> None:
        try:
            self.cache.set(key, value, timeout=None)
        except Exception as exc:
            self.outages.failed("cache", exc)

    # -- transitions --------------------------------------------------------------------
    def persist_transition(
        self,
        runtime: CircuitRuntime,
        new: CircuitStatus,
        reason: str,
        snapshot: Snapshot | None,
        actor: Any = None,
    ) -> bool:
        """Compare-and-set ``runtime``'s circuit to ``new``; record the event; publish.

        Returns False, and re-reads the circuit, when another process moved it first (or
        another thread of this one did: ``new`` must follow the generation we hold).
        With the database down the move is applied here at once and written when the
        database returns (:meth:`save_unsaved`).
        """
        old = runtime.entry.status
        if new.generation != old.generation + 1:
            return False
        move = UnsavedTransition(old, new, reason, snapshot, actor)
        if runtime.unsaved:  # earlier moves still wait for the database: keep the order
            runtime.unsaved.add(move)
            runtime.adopt(runtime.entry.with_status(new))
            return True
        try:
            won = self.db.run(self._write_transition, runtime, move)
        except DjangoDatabaseError as exc:
            # The database is down: this process moves on its own and says so once.
            self.outages.failed("database", exc)
            self._drop_broken_connection()
            runtime.unsaved.add(move)
            runtime.adopt(runtime.entry.with_status(new))
            return True
        self.outages.recovered("database")
        if not won:
            self._catch_up(runtime, old.generation)
            return False
        runtime.adopt(runtime.entry.with_status(new))
        if self.counters.needs_purge and new.state is not State.HALF_OPEN:
            self.outages.guard("shared counters", None, self.counters.purge_expired)
        return True

    def _catch_up(self, runtime: CircuitRuntime, lost: int) -> None:
        """After losing the compare-and-set at ``lost``: the winner published its entry as
        it committed, which is when our UPDATE stopped waiting, so a later generation of this
        circuit in the cache is taken (one round trip, no query); else :meth:`reload`."""
        shared = CircuitEntry.from_json(self._cache_get(state_key(runtime.name)))
        if shared is None or shared.circuit_id != runtime.circuit_id or shared.generation <= lost:
            self.reload(runtime)
            return
        runtime.adopt(shared)
        runtime.mark_fresh(self.clock() + self.ttl)

    def _write_transition(self, runtime: CircuitRuntime, move: UnsavedTransition) -> bool:
        """One ``UPDATE … WHERE generation = g`` and one event row; publish on commit.

        True when this write won; False when the row was at another generation.
        """
        from circuitbreaker_app.models import Circuit, CircuitEvent

        old, new, snapshot = move.old, move.new, move.snapshot
        with transaction.atomic(using=self.db_alias):
            updated = (
                Circuit.objects.using(self.db_alias)
                .filter(pk=runtime.circuit_id, generation=old.generation)
                .update(
                    state=new.state.value,
                    generation=new.generation,
                    open_count=new.open_count,
                    opened_at=to_datetime(new.opened_at),
                    retry_at=to_datetime(new.retry_at),
                    changed_at=to_datetime(new.changed_at),
                    forced_until=to_datetime(new.forced_until),
                )
            )
            if not updated:
                return False
            CircuitEvent.objects.using(self.db_alias).create(
                circuit_id=runtime.circuit_id,
                circuit_name=runtime.name,
                created_at=to_datetime(new.changed_at) or timezone.now(),  # (always has one)
                from_state=old.state.value,
                to_state=new.state.value,
                reason=shorten(move.reason, REASON_MAX),
                generation=new.generation,
                failure_rate=snapshot.failure_rate if snapshot else None,
                slow_call_rate=snapshot.slow_call_rate if snapshot else None,
                calls=snapshot.calls if snapshot else None,
                actor=move.actor,
            )
            entry = runtime.entry.with_status(new)
            transaction.on_commit(
                partial(self._published, runtime.name, entry, old, new, move.reason),
                using=self.db_alias,
            )
        return True

    def _drop_broken_connection(self) -> None:
        """After a database error, let the next query reconnect (outside transactions)."""
        connection = connections[self.db_alias]
        if connection.in_atomic_block:
            return
        try:
            connection.close_if_unusable_or_obsolete()
        except Exception:  # a dead connection may fail to close: drop it all the same
            connection.connection = None

    def _published(
        self,
        name: str,
        entry: CircuitEntry,
        old: CircuitStatus,
        new: CircuitStatus,
        reason: str,
    ) -> None:
        from circuitbreaker_app.models import Circuit
        from circuitbreaker_app.signals import state_changed

        self._publish_entry(state_key(name), entry)
        logger.info(
            "circuit %r: %s -> %s (%s)",
            name,
            old.state.value,
            new.state.value,
            reason,
            extra={TRANSITION_RECORD: True},  # the circuits command prints its own line
        )
        if old.state is new.state:
            return  # a reset of a CLOSED circuit, or a new end for a forced state: no signal
        state_changed.send(
            sender=Circuit, name=name, old_state=old.state, new_state=new.state, reason=reason
        )

    def definition_deleted(self, name: str) -> None:
        """Drop a deleted circuit's shared entry; processes re-read it on their next refresh."""
        try:
            self.cache.delete(state_key(name))
        except Exception as exc:
            self.outages.failed("cache", exc)

    def definition_saved(self, circuit: Any) -> None:
        """Publish an edited definition to every process (on commit)."""
        key = state_key(circuit.name)

        def publish() -> None:
            try:
                entry = self.load_entry(circuit.name, create=False)
            except (DjangoDatabaseError, UnknownCircuitError, InvalidRow):
                return
            self._publish_entry(key, entry)
            runtime = self._runtimes.get(circuit.name)
            if runtime is not None:
                runtime.adopt(entry)

        transaction.on_commit(publish, using=circuit._state.db or self.db_alias)
