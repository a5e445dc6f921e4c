"""Refreshing runtimes from the shared cache: a stale snapshot re-reads its circuit's entry
and window (one ``get_many``), admin pages and the status endpoint read many at once, and
a later entry learnt from any round trip is adopted. A missing, malformed or outdated
entry is reloaded from the database; with the cache or the database down, a runtime keeps
the last state it knew (outages are logged once, ``outages.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from django.db import Error as DjangoDatabaseError

from circuitbreaker_app.core import State
from circuitbreaker_app.store.backends.base import tallies_in, tally_keys
from circuitbreaker_app.store.entry import PROVISIONAL_ID, CircuitEntry, InvalidRow
from circuitbreaker_app.store.keys import state_key, tally_key
from circuitbreaker_app.store.overflow import CapReached
from circuitbreaker_app.store.persistence import CircuitPersistence
from circuitbreaker_app.store.runtime import CircuitRuntime

#: States whose calls go into the sliding window.
RECORDING_STATES = frozenset({State.CLOSED, State.FORCED_CLOSED})


class StoreRefresh(CircuitPersistence):
    """The refresh side of :class:`~circuitbreaker_app.store.registry.CircuitStore`."""

    _lock: threading.RLock

    def counter_get_many(self, keys: list[str]) -> dict[str, int]:
        raise NotImplementedError("CircuitStore provides counter_get_many()")

    def add_tally(self, runtime: CircuitRuntime, tally: Any, name: str | None = None) -> None:
        raise NotImplementedError("CircuitStore provides add_tally()")

    def adopt_later(self, runtime: CircuitRuntime, entry: CircuitEntry | None) -> None:
        """Take a shared state entry if it is later than what ``runtime`` holds (None,
        not an entry of ours, is ignored: the next refresh rewrites it)."""
        if entry is None:
            return
        held = runtime.entry
        if entry.circuit_id == held.circuit_id and entry.generation <= held.generation:
            return
        runtime.adopt(entry)
        runtime.unsaved.drop()  # the fleet moved on: our offline moves would lose
        runtime.mark_fresh(self.clock() + self.ttl)

    def read_window(self, runtime: CircuitRuntime) -> None:
        """Read the shared window of a runtime just loaded (one round trip, at load time, not
        on the hot path), so a process's first load reports and decides on what the fleet
        has written rather than an empty window until its first refresh. Only in the states
        whose window decides or is shown (the others' is empty); with the counters
        unreachable the window stays empty (logged once per outage)."""
        if runtime.entry.status.state not in RECORDING_STATES:
            return
        now = self.now()
        keys = runtime.window.read_keys(now)
        runtime.absorb(
            self.outages.guard("shared counters", None, self.counters.get_many, keys), now
        )

    def refresh(self, runtime: CircuitRuntime, if_stale: bool = False) -> None:
        """Re-read ``runtime``'s circuit (:meth:`_reread`), one thread of the process at a time.

        While a thread re-reads, the snapshot stays stale for the others: the hot path's
        plan neither admits nor rejects on it, and a thread that needs the state
        (``status``, ``acquire``; an async call's I/O, in its worker thread) comes here and
        waits for that re-read, then takes its answer: no call is admitted or rejected on
        a state older than ``STATE_TTL`` (DESIGN §3), and there is one round trip per
        process, not one per waiting thread. The wait is that one re-read's, bounded by
        the cache's and the database's timeouts. Inside the re-read, the refreshing
        thread's own reads of ``status`` (adopt, judge, transition) see the snapshot being
        re-read, with no second refresh.

        ``if_stale``: the caller found the snapshot stale (``status``); when another thread
        has re-read it meanwhile, nothing is read again. Else the re-read is forced (after
        waiting for one in flight).
        """
        me = threading.get_ident()
        if runtime._refresher == me:
            return  # a read inside this thread's own re-read: the snapshot it holds
        lock = runtime._refresh_lock
        if not lock.acquire(blocking=False):
            lock.acquire()  # another thread is re-reading: wait for its answer
            if if_stale:
                lock.release()
                return
        elif if_stale and self.clock() < runtime._fresh_until:
            lock.release()  # re-read by another thread between our look and the lock
            return
        runtime._refresher = me
        try:
            self._reread(runtime)
        except BaseException:
            # As on an outage: not one failing re-read per call (the caller gets the error).
            runtime.mark_fresh(self.clock() + self.ttl)
            raise
        finally:
            runtime._refresher = None
            lock.release()

    def _reread(self, runtime: CircuitRuntime) -> None:
        """Flush this process's pending successes (one write), then re-read the circuit's
        state entry and window (one ``get_many``).

        Transitions this process made while the database was down are written first; until
        they are, the circuit keeps its own (later) state rather than the shared one. With
        the cache or the database unreachable, the runtime keeps the state it knows for
        ``STATE_TTL`` (one failed attempt per ``STATE_TTL``, not one per call).
        """
        if runtime.unsaved:
            self.save_unsaved(runtime)
        # Breaker.call counts successes without looking at the clock: they are flushed
        # here, once per STATE_TTL, when the stale snapshot sends a call this way.
        written = runtime.flush()
        now = self.now()
        key = state_key(runtime.name)
        window = runtime.window
        window_keys: list[str] | None = window.read_keys(now) if self.counters.in_cache else []
        try:
            values = self.cache.get_many([key, *(window_keys or [])])
        except Exception as exc:
            self.outages.failed("cache", exc)
            if runtime.circuit_id != PROVISIONAL_ID:
                self._keep(runtime)  # the last known state
                return
            values, window_keys = {}, None  # a circuit built from settings: ask the database
        else:
            self.outages.recovered("cache")
        raw = values.get(key)
        entry = CircuitEntry.from_json(raw)
        outdated = entry is not None and _older(entry, runtime)
        if entry is None or outdated:
            try:
                entry = self.load_entry(runtime.name, heal=raw is not None and not outdated)
            except DjangoDatabaseError as exc:
                self.outages.failed("database", exc)
                self._drop_broken_connection()
                self._keep(runtime)
                return
            except CapReached:
                self._keep(runtime)  # deleted meanwhile, and no room to re-create it
                return
            except InvalidRow:
                self._keep(runtime)  # the row was made invalid (logged once)
                return
            if outdated:
                # An earlier generation than one this process saw written: a publish was
                # lost (Redis was down, or a Sentinel failover promoted a replica that had
                # not received it). The database is the truth: rewrite the shared entry.
                self._publish_entry(key, entry)
        if runtime.unsaved:
            self.adopt_later(runtime, entry)  # only a later state than our own offline moves
        else:
            runtime.adopt(entry)
        if (
            window_keys is not None
            and (runtime.window is not window or not window_keys)
            and runtime.entry.status.state in RECORDING_STATES
        ):
            # A new period (or definition) has a window of its own, and counters outside
            # the cache need a read of their own: one more round trip, only then, and only
            # in the states whose window decides or is shown (the others' stays empty).
            keys = runtime.window.read_keys(now)
            values = self.outages.guard("shared counters", None, self.counters.get_many, keys)
        runtime.mark_fresh(self.clock() + self.ttl)
        runtime.absorb(values if window_keys is not None else None, now)
        runtime.judge_flushed(written, window)

    def _keep(self, runtime: CircuitRuntime) -> None:
        """A re-read that got no answer: trust the state ``runtime`` knows for ``STATE_TTL``
        from now (the cache or database is retried then, not by every call meanwhile)."""
        runtime.mark_fresh(self.clock() + self.ttl)

    def refresh_rows(self, rows: Iterable[Any]) -> dict[str, CircuitRuntime]:
        """Runtimes of these ``Circuit`` rows with fresh windows, for admin pages and the
        status endpoint (never the hot path).

        A runtime this process lacks is built from its row (no read of its own); the state
        entries and window buckets of all circuits come back in one ``get_many`` (plus one
        counters query when the counters live in the database). Whichever of row and cache
        entry has the higher generation wins. The same read brings each circuit's
        fleet-wide call totals (``runtime.shared_tally``).
        """
        now = self.now()
        runtimes: dict[str, CircuitRuntime] = {}
        for row in rows:
            try:
                entry: CircuitEntry | None = self.entry_of(row)
            except InvalidRow:  # logged once: shown as this process knows it
                entry = None
            runtime = self._runtimes.get(row.name)
            if runtime is None:
                with self._lock:
                    runtime = self._runtimes.get(row.name)
                    if runtime is None:
                        first = entry or CircuitEntry.provisional(row.name)
                        runtime = CircuitRuntime(self, row.name, first)  # type: ignore[arg-type]
                        self._runtimes[row.name] = runtime
            # A runtime holding transitions not yet saved (database was down) keeps its own.
            if (
                entry is not None
                and not runtime.unsaved
                and runtime.entry.generation <= row.generation
            ):
                runtime.adopt(entry)
            runtimes[row.name] = runtime
        window_keys = {name: rt.window.read_keys(now) for name, rt in runtimes.items()}
        generations = {name: rt.entry.generation for name, rt in runtimes.items()}
        totals = {name: tally_key(name) for name in runtimes}
        counter_keys = [key for names in window_keys.values() for key in names]
        counter_keys += tally_keys(list(totals.values()))
        keys = [state_key(name) for name in runtimes]
        if self.counters.in_cache:
            keys += counter_keys
        try:
            values = dict(self.cache.get_many(keys)) if keys else {}
        except Exception as exc:
            self.outages.failed("cache", exc)
            return runtimes
        if not self.counters.in_cache:
            values.update(self.counter_get_many(counter_keys))
        tallies = tallies_in(list(totals.values()), values)
        stale_at = self.clock() + self.ttl
        for name, runtime in runtimes.items():
            shared = CircuitEntry.from_json(values.get(state_key(name)))
            if (
                shared is not None
                and not runtime.unsaved
                and shared.generation > runtime.entry.generation
            ):
                runtime.adopt(shared)
            if runtime.entry.generation == generations[name]:
                runtime.absorb(values, now)
            runtime.mark_fresh(stale_at)
            runtime.shared_tally = tallies[totals[name]]
        return runtimes


def _older(entry: CircuitEntry, runtime: CircuitRuntime) -> bool:
    """True when ``entry`` is an earlier generation of the circuit ``runtime`` holds, whose
    state is saved (a runtime with transitions not yet written keeps its own rules)."""
    held = runtime.entry
    return bool(
        entry.circuit_id == held.circuit_id
        and entry.generation < held.generation
        and not runtime.unsaved
    )
