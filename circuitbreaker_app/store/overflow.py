"""Names past ``MAX_CIRCUITS``: each gets its own breaker in this process (DESIGN §4b).

Circuits created on first use are capped, so a flood of attacker-chosen hosts cannot grow
the database or the cache. A name that arrives once the cap is reached is guarded by an
*isolated* breaker: built from ``DEFAULTS`` (live trials, since no probe task knows it),
counted and decided in this process only (a private LocMem cache holds its window and
trial permits), never written to the database or the shared cache. One failing name can
therefore never reject calls to another — the old shared overflow circuit could.

Costs, per process:

* the cap is checked by the first new name that finds no row: when it is reached, the
  names of every existing circuit are read (one query) and trusted for
  :data:`CAP_RECHECK` seconds; until then a new name costs no query and no cache round
  trip, and a name that has a row (created before the cap, or by an operator) still gets
  its shared circuit;
* at most :data:`ISOLATED_MAX` isolated breakers are kept, least recently used first out
  (a few kB each, see docs/security.md); an evicted name starts afresh on its next use;
* one warning per :data:`WARN_INTERVAL` seconds while names are being isolated.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from django.core.cache.backends.locmem import LocMemCache

from circuitbreaker_app import conf
from circuitbreaker_app.core import CircuitStatus, Snapshot
from circuitbreaker_app.core.config import TRIAL_LIVE
from circuitbreaker_app.store.backends.locmem import LocMemCounters
from circuitbreaker_app.store.entry import CircuitEntry
from circuitbreaker_app.store.runtime import CircuitRuntime
from circuitbreaker_app.store.windows import BucketAdd, CountAdd

if TYPE_CHECKING:
    from circuitbreaker_app.store.registry import CircuitStore

logger = logging.getLogger("circuitbreaker_app")

#: Isolated breakers one process keeps (least recently used evicted first).
ISOLATED_MAX = 1000
#: Seconds the "cap reached" verdict (and the names that have rows) is trusted.
CAP_RECHECK = 60.0
#: Seconds between two warnings about isolated names, per process.
WARN_INTERVAL = 60.0
#: The circuit id of an isolated breaker (no row has it; never written).
ISOLATED_ID = -2
#: How metrics label calls on isolated breakers (one label, however many names).
ISOLATED_LABEL = "circuitbreaker:isolated"
#: The private LocMem cache (windows and permits of isolated breakers).
CACHE_NAME = "circuitbreaker-isolated"


class CapReached(Exception):
    """Raised by the store when creating a circuit would pass ``MAX_CIRCUITS``."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__("MAX_CIRCUITS reached")
        self.names = frozenset(names)


class IsolatedStore:
    """What an isolated :class:`CircuitRuntime` talks to instead of the shared store:
    counters in a private, bounded LocMem cache; transitions applied in memory only."""

    def __init__(self, store: CircuitStore) -> None:
        self.shared = store
        self.created = store.created  # retired and revived with the shared store
        self.clock: Callable[[], float] = store.clock
        self.ttl = store.ttl
        # Bounded: windows expire with their TTL, and LocMem culls past MAX_ENTRIES.
        self.cache = LocMemCache(CACHE_NAME, {"OPTIONS": {"MAX_ENTRIES": ISOLATED_MAX * 8}})
        self.cache.clear()  # a forked child or a new store starts with nothing
        self.counters = LocMemCounters(self.cache)

    @property
    def retired(self) -> bool:
        return self.shared.retired

    def now(self) -> float:
        return self.shared.now()

    def add_outcome(
        self,
        runtime: CircuitRuntime,
        change: BucketAdd | CountAdd,
        known: bool,
        tally: Any = None,
    ) -> Any:
        value, _entry = self.counters.add(change, known, None)
        if tally:
            self.add_tally(runtime, tally)
        return value

    def counter_claim(self, key: str, ttl: float, value: int = 1) -> bool:
        return self.counters.claim(key, ttl, value)

    def counter_release(self, key: str, value: int) -> None:
        self.counters.release(key, value)

    def counter_get_many(self, keys: list[str]) -> dict[str, Any]:
        return self.counters.get_many(keys)

    def persist_transition(
        self,
        runtime: CircuitRuntime,
        new: CircuitStatus,
        reason: str,
        snapshot: Snapshot | None,
        actor: Any = None,
    ) -> bool:
        """Apply the transition here; nothing is written and no signal is sent."""
        old = runtime.entry.status
        if new.generation != old.generation + 1:
            return False
        runtime.adopt(runtime.entry.with_status(new))
        logger.debug(
            "isolated circuit %r: %s -> %s (%s)",
            runtime.name,
            old.state.value,
            new.state.value,
            reason,
        )
        return True

    def add_tally(self, runtime: CircuitRuntime, tally: Any) -> None:
        """Calls of isolated breakers join the fleet's totals under one label (their names
        are unbounded)."""
        self.shared.add_tally(runtime, tally, name=ISOLATED_LABEL)

    def refresh(self, runtime: CircuitRuntime, if_stale: bool = False) -> None:
        """Flush pending successes and re-read the window from the private cache (no
        other process moves an isolated breaker: no thread waits for another's re-read)."""
        written = runtime.flush()
        now = self.now()
        window = runtime.window
        keys = window.read_keys(now)
        runtime.mark_fresh(self.clock() + self.ttl)
        if keys:
            runtime.absorb(self.cache.get_many(keys), now)
        runtime.judge_flushed(written, window)


class Overflow:
    """This process's isolated breakers, and whether the cap is known to be reached."""

    def __init__(self, store: CircuitStore) -> None:
        self.store = store
        self.runtimes: OrderedDict[str, CircuitRuntime] = OrderedDict()
        #: Names that have rows (plus configured ones) while the cap is reached, else None.
        self.names: frozenset[str] | None = None
        self.trusted_until = 0.0
        self.warn_at = 0.0
        self.isolated_since_warning = 0
        self._isolated_store: IsolatedStore | None = None
        self._template: CircuitEntry | None = None

    def get(self, name: str) -> CircuitRuntime | None:
        """The isolated breaker of ``name`` if this process has one (marked recently used)."""
        runtime = self.runtimes.get(name)
        if runtime is not None:
            self.runtimes.move_to_end(name)
        return runtime

    def peek(self, name: str) -> CircuitRuntime | None:
        """Like :meth:`get`, without touching the order (for observers)."""
        return self.runtimes.get(name)

    def known_past_cap(self, name: str) -> bool:
        """True when the cap is known reached and ``name`` has no row (no I/O)."""
        if self.names is None:
            return False
        if self.store.clock() >= self.trusted_until:
            self.names = None  # re-check: the next new name asks the database
            return False
        return name not in self.names

    def cap_reached(self, names: Iterable[str]) -> None:
        """The store found the cap reached; ``names`` are the circuits that have rows."""
        configured = conf.get("CIRCUITS") or {}
        self.names = frozenset(names) | frozenset(n for n in configured if isinstance(n, str))
        self.trusted_until = self.store.clock() + CAP_RECHECK

    def isolate(self, name: str) -> CircuitRuntime:
        """A new isolated breaker for ``name``, from ``DEFAULTS``."""
        if self._isolated_store is None or self._template is None:
            self._isolated_store = IsolatedStore(self.store)
            # One entry for all: names past the cap are never in CIRCUITS, so DEFAULTS.
            template = CircuitEntry.provisional(ISOLATED_LABEL)
            config = replace(template.config, trial_mode=TRIAL_LIVE)
            self._template = replace(template, circuit_id=ISOLATED_ID, config=config)
        runtime = CircuitRuntime(self._isolated_store, name, self._template)  # type: ignore[arg-type]
        runtime.label = ISOLATED_LABEL
        self.runtimes[name] = runtime
        while len(self.runtimes) > ISOLATED_MAX:
            self.runtimes.popitem(last=False)
        self._warn(name)
        return runtime

    def _warn(self, name: str) -> None:
        self.isolated_since_warning += 1
        now = self.store.clock()
        if now < self.warn_at:
            return
        logger.warning(
            "circuitbreaker: MAX_CIRCUITS (%s) reached; %d new name(s) since the last warning got "
            "their own isolated breaker in this process, from DEFAULTS (not shared, not "
            "saved), e.g. %r",
            conf.get("MAX_CIRCUITS"),
            self.isolated_since_warning,
            name,
        )
        self.isolated_since_warning = 0
        self.warn_at = now + WARN_INTERVAL

    def clear(self) -> None:
        """Forget every isolated breaker and the cap verdict."""
        self.runtimes.clear()
        self.names = None
