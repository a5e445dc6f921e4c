"""This process's store: the registry of circuit runtimes and the counters calls they make
(each guarded: an outage is logged once and the process carries on with its own counts).
Their refresh from the shared cache is ``refresh.py``'s, the database side
``persistence.py``'s, the operator and task moves ``moves.py``'s. ``get_store()``
returns the process's one store.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from django.core.signals import setting_changed
from django.db import Error as DjangoDatabaseError
from django.db import transaction

from circuitbreaker_app import conf
from circuitbreaker_app.store import backends
from circuitbreaker_app.store.answers import RememberedAnswers
from circuitbreaker_app.store.backends.base import Tally
from circuitbreaker_app.store.dbguard import DatabaseGuard
from circuitbreaker_app.store.entry import CircuitEntry, InvalidRow
from circuitbreaker_app.store.keys import state_key, tally_key
from circuitbreaker_app.store.moves import RequestedMoves
from circuitbreaker_app.store.outages import Outages
from circuitbreaker_app.store.overflow import CapReached, Overflow
from circuitbreaker_app.store.refresh import StoreRefresh
from circuitbreaker_app.store.repair import CacheRepair
from circuitbreaker_app.store.runtime import CircuitRuntime
from circuitbreaker_app.store.windows import BucketAdd, CountAdd


class CircuitStore(StoreRefresh, RequestedMoves, RememberedAnswers, CacheRepair):
    """This process's view of every circuit, and all reads and writes behind it."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sync_db_clock: bool = True,
    ) -> None:
        self.sync_db_clock = sync_db_clock
        self.clock = clock  # for snapshot age and flush timing (never compared across hosts)
        self.wall = wall
        self.offset = 0.0  # database clock minus this host's wall clock
        self.ttl = float(conf.get("STATE_TTL"))
        self.cache_alias = conf.get("CACHE")
        self.db_alias = conf.get("DATABASE")
        self.backend = backends.connect(
            self.cache_alias,
            self.db_alias,
            now=self.now,
            wall=wall,
            clock_sink=self._set_offset if sync_db_clock else None,
        )
        self.cache: Any = self.backend.cache
        self.counters = self.backend.counters
        #: The backend's own client when it reads a server's clock (Redis), else None.
        self.redis: Any = self.backend.client
        self.outages = Outages(self.backend.label)
        #: The store's own queries, each bounded by DB_TIMEOUT (``dbguard.py``).
        self.db = DatabaseGuard(
            self.db_alias, float(conf.get("DB_TIMEOUT")), self._after_database_outage
        )
        self._runtimes: dict[str, CircuitRuntime] = {}
        #: Every runtime this store made (forgotten ones too), and whether the store is
        #: no longer the process's: a replaced store's runtimes plan no fast path, so a
        #: decorated function's hot path need not compare stores (see :func:`reset_store`).
        self.created: weakref.WeakSet[CircuitRuntime] = weakref.WeakSet()
        self.retired = False
        #: Breakers of names past MAX_CIRCUITS, per process (``overflow.py``).
        self.overflow = Overflow(self)
        self._lock = threading.RLock()
        self._saving = threading.Lock()  # one thread at a time writes unsaved transitions

    def _set_offset(self, offset: float) -> None:
        self.offset = offset

    def after_fork(self) -> None:
        """Drop connections inherited from the parent process (called in a forked child),
        and the parent's refreshes in flight (their threads are not in the child)."""
        self.counters.after_fork()
        for runtime in list(self.created):
            runtime.after_fork()

    def now(self) -> float:
        """Shared time: this host's clock corrected to Redis's (on the Redis path) or the
        database's."""
        return self.wall() + self.offset

    # -- shared counters, each call guarded ----------------------------------------------
    def counter_incr(self, key: str, delta: int, ttl: float, known: bool = True) -> int | None:
        return self.outages.guard(
            "shared counters", None, self.counters.incr, key, delta, ttl, known
        )

    def add_outcome(
        self,
        runtime: CircuitRuntime,
        change: BucketAdd | CountAdd,
        known: bool,
        tally: Tally | None = None,
    ) -> Any:
        """Apply ``change`` to ``runtime``'s shared window: one round trip. Returns the
        bucket's new value or the count window, or None when the counters are unreachable.

        When the backend reads the circuit's state entry in the same round trip (Redis) and
        another process has moved the circuit on, ``runtime`` takes the new entry at once.
        ``tally`` (calls by outcome not yet shared) goes to the circuit's fleet-wide call
        totals with it; when the counters are unreachable it is handed back to ``runtime``.
        """
        totals = (runtime.totals_key, tally) if tally else None
        # outages.guard(), inlined: a failure's one write is the commonest call here.
        try:
            value, entry = self.counters.add(change, known, runtime.watch, totals)
        except Exception as exc:  # any backend error: the breaker must not fail the call
            self.outages.failed("shared counters", exc)
            if tally:
                runtime.keep_tally(tally)
            return None
        if self.outages.down:
            self.outages.recovered("shared counters")
        if entry is not None:
            self.adopt_later(runtime, entry)
        return value

    def add_tally(self, runtime: CircuitRuntime, tally: Tally, name: str | None = None) -> None:
        """Add calls by outcome to the fleet-wide totals of ``runtime``'s circuit (or of
        ``name``): one write, with nothing else to write."""
        key = tally_key(name or runtime.name)
        done = self.outages.guard("shared counters", False, self._add_tally, key, tally)
        if not done:
            runtime.keep_tally(tally)

    def _add_tally(self, key: str, tally: Tally) -> bool:
        self.counters.add_tally(key, tally)
        return True

    def read_tallies(self, names: Iterable[str]) -> dict[str, Tally]:
        """The fleet's call totals by outcome of each circuit of ``names`` (one read; empty
        when the counters are unreachable). Exact to within ``STATE_TTL``: each process
        adds its calls once per ``STATE_TTL`` while calls come."""
        keys = {tally_key(name): name for name in names}
        none: dict[str, Tally] = {}
        found = self.outages.guard("shared counters", none, self.counters.read_tallies, list(keys))
        return {keys[key]: tally for key, tally in found.items()}

    def counter_claim(self, key: str, ttl: float, value: int = 1) -> bool:
        # Unreachable store: admit the trial (per-process), rather than stick in HALF_OPEN.
        return bool(
            self.outages.guard("shared counters", True, self.counters.claim, key, ttl, value)
        )

    def counter_release(self, key: str, value: int) -> None:
        self.outages.guard("shared counters", None, self.counters.release, key, value)

    def counter_get_many(self, keys: list[str]) -> dict[str, int]:
        return self.outages.guard("shared counters", {}, self.counters.get_many, keys)

    def counter_delete(self, key: str) -> None:
        self.outages.guard("shared counters", None, self.counters.delete, key)

    # -- runtimes ---------------------------------------------------------------------
    def runtime(self, name: str) -> CircuitRuntime:
        """The runtime of ``name`` in this process (loaded, or created, on first use).

        Past ``MAX_CIRCUITS`` a name without a row gets an isolated breaker instead
        (``overflow.py``): no query and no cache round trip once the cap is known.
        """
        runtime = self._runtimes.get(name)
        if runtime is None:
            with self._lock:
                runtime = self._runtimes.get(name)
                if runtime is None:
                    runtime = self.overflow.get(name)
                    if runtime is not None:
                        return runtime
                    if self.overflow.known_past_cap(name):
                        return self.overflow.isolate(name)
                    try:
                        runtime = self._load_runtime(name)
                    except CapReached as cap:
                        self.overflow.cap_reached(cap.names)
                        return self.overflow.isolate(name)
                    self._runtimes[name] = runtime
        return runtime

    def _load_runtime(self, name: str) -> CircuitRuntime:
        cache_up = True
        try:
            raw = self.cache.get(state_key(name))
        except Exception as exc:
            self.outages.failed("cache", exc)
            raw, cache_up = None, False
        entry = CircuitEntry.from_json(raw)
        if entry is None:
            try:
                entry = self.load_entry(name, heal=raw is not None)
            except DjangoDatabaseError as exc:
                # Neither the cache nor the database can say what this circuit is: guard
                # calls with its settings in this process until one of them answers.
                self.outages.failed("database", exc)
                self._drop_broken_connection()
                return CircuitRuntime(self, name, CircuitEntry.provisional(name))
            except InvalidRow:
                # The row was made invalid behind the model's back (logged once): the
                # settings' definition decides in this process until the row is fixed.
                return CircuitRuntime(self, name, CircuitEntry.provisional(name))
        runtime = CircuitRuntime(self, name, entry)
        if cache_up:  # (a cache that just failed is not waited for twice)
            self.read_window(runtime)  # what the fleet has counted, not an empty window
        return runtime

    def loaded(self, name: str) -> CircuitRuntime | None:
        """The runtime of ``name`` if this process already has it (never any I/O)."""
        return self._runtimes.get(name) or self.overflow.peek(name)

    def forget(self, names: Iterable[str] | None = None) -> None:
        """Drop this process's snapshots (all, or of ``names``)."""
        with self._lock:
            if names is None:
                self._runtimes.clear()
                self.overflow.clear()
            else:
                for name in names:
                    self._runtimes.pop(name, None)

    def retire(self) -> None:
        """No longer the process's store: its runtimes admit and reject nothing without
        asking the registry (a handle that kept one finds the new store)."""
        self.retired = True
        for runtime in list(self.created):
            runtime.replan()

    def revive(self) -> None:
        """The process's store again: its runtimes plan as they would have (a snapshot
        still fresh is trusted, as before the store was replaced)."""
        if self.retired:
            self.retired = False
            for runtime in list(self.created):
                runtime.replan()

    def flush(self) -> None:
        """Push every pending success count to the shared window, and every call not yet in
        the fleet's totals to them, now."""
        for runtime in [*self._runtimes.values(), *self.overflow.runtimes.values()]:
            window = runtime.window
            runtime.judge_flushed(runtime.flush(), window)


# -- the process's store ------------------------------------------------------------------

_store: CircuitStore | None = None
_store_lock = threading.Lock()


def get_store() -> CircuitStore:
    """This process's store, created on first use from the current settings."""
    global _store
    store = _store
    if store is None:
        with _store_lock:
            if _store is None:
                _store = CircuitStore()
            store = _store
    return store


def reset_store(store: CircuitStore | None = None) -> None:
    """Forget this process's store (settings changed, fork, or a test installs its own).

    The store replaced retires (its runtimes plan no fast path) and ``store`` revives, so
    a runtime with a fast path always belongs to the process's store."""
    global _store
    with _store_lock:
        old, _store = _store, store
    if old is not None and old is not store:
        old.retire()
    if store is not None:
        store.revive()


def definition_saved(circuit: Any) -> None:
    """Called by ``Circuit.save()``."""
    get_store().definition_saved(circuit)


def circuit_deleted(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    """``post_delete`` receiver: forget the circuit's shared entry once the delete commits."""
    transaction.on_commit(partial(get_store().definition_deleted, instance.name), using=using)


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in {"CIRCUITBREAKER", "CACHES", "DATABASES"}:
        reset_store()


setting_changed.connect(_on_setting_changed)


def _after_fork_in_child() -> None:
    """A forked worker (gunicorn, Celery prefork) starts with no snapshots, batches or
    connections of its parent: the parent's Redis connections are abandoned, not closed
    (the parent still uses them), and the next guarded call builds a fresh store."""
    global _store
    old, _store = _store, None
    if old is not None:
        old.retire()
        old.after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
