"""Reading and repairing the shared entries outside the hot path: what the beat task and
the probe scheduling need from the cache, as store methods (they never touch the store's
cache themselves). Every write goes through the never-roll-back publish path."""

from __future__ import annotations

import logging
from typing import Any

from circuitbreaker_app.store.entry import CircuitEntry, InvalidRow
from circuitbreaker_app.store.keys import state_key
from circuitbreaker_app.store.outages import Outages

logger = logging.getLogger("circuitbreaker_app")

#: Circuits whose entries one ``get_many`` reads while re-syncing.
RESYNC_BATCH = 500


class CacheRepair:
    """The ``shared_entry``/``resync`` side of :class:`~circuitbreaker_app.store.CircuitStore`."""

    cache: Any
    db_alias: str
    outages: Outages

    def _publish_entry(self, key: str, entry: CircuitEntry) -> None:
        raise NotImplementedError("CircuitStore provides _publish_entry()")

    def entry_of(self, row: Any) -> CircuitEntry:
        raise NotImplementedError("CircuitStore provides entry_of()")

    def shared_entry(self, name: str) -> CircuitEntry | None:
        """The circuit's entry in the shared cache, or None (missing, malformed, or the
        cache is unreachable: logged once per outage)."""
        raw = self.outages.guard("cache", None, self.cache.get, state_key(name))
        return CircuitEntry.from_json(raw)

    def resync(self) -> int:
        """Rewrite shared entries that are malformed or older than the database; return
        how many. Repairs a cache that missed transitions (unreachable when they were
        published, or back with old data); missing entries are left for processes to load.
        Never writes over a later generation (on Redis). A row made invalid behind the
        model's back is skipped (logged once as an error, nothing published from it)."""
        from circuitbreaker_app.models import Circuit

        circuits = Circuit.objects.using(self.db_alias)
        generations = dict(circuits.values_list("name", "generation"))
        names = list(generations)
        stale: list[str] = []
        for start in range(0, len(names), RESYNC_BATCH):
            batch = names[start : start + RESYNC_BATCH]
            keys = [state_key(name) for name in batch]
            cached = self.outages.guard("cache", None, self.cache.get_many, keys)
            if cached is None:
                return 0  # cache down: nothing to repair now
            for name in batch:
                raw = cached.get(state_key(name))
                entry = CircuitEntry.from_json(raw)
                if raw is not None and (entry is None or entry.generation != generations[name]):
                    stale.append(name)
        repaired = 0
        for row in circuits.filter(name__in=stale):
            try:
                entry = self.entry_of(row)
            except InvalidRow:
                continue  # logged by entry_of; the other circuits are still repaired
            self._publish_entry(state_key(row.name), entry)
            logger.info("circuit %r: cache entry re-synced from the database", row.name)
            repaired += 1
        return repaired
