"""Where breakers keep state: the only package doing I/O.

Three layers, fastest first (DESIGN §4):

* process memory: one :class:`CircuitRuntime` per circuit (``runtime.py``), a snapshot of
  its state trusted for ``STATE_TTL`` seconds, plus successes not yet flushed and calls
  not yet in the fleet's totals (``tally.py``);
* the cache: each circuit's :class:`CircuitEntry`, its current state and definition
  (``entry.py``), window buckets (``windows.py``) and half-open trial permits
  (``trials.py``), shared by every process, through one counters backend (``backends/``:
  locmem, database or redis, chosen by one factory);
* the database: definitions, durable state and the event log (``persistence.py``); every
  transition is one ``UPDATE … WHERE generation = g`` and one event row, published to the
  cache on commit; transitions made while it is down are written later (``unsaved.py``).

``registry.py`` holds the process's :class:`CircuitStore` (``get_store()``), which keeps
the runtimes and guards every call to a backend (``outages.py``: an outage is logged once
and the process carries on); ``refresh.py`` re-reads them from the cache. The store
talks to a runtime through its public methods only. Key formats live in ``keys.py``.
See docs/architecture.md.

This module re-exports the names the rest of the app imports.
"""

from circuitbreaker_app.store.backends import backend_name
from circuitbreaker_app.store.backends.base import Counters
from circuitbreaker_app.store.backends.database import CountContention, DatabaseCounters
from circuitbreaker_app.store.backends.locmem import CacheCounters, LocMemCounters
from circuitbreaker_app.store.backends.redis import RedisCounters, RedisStateCache
from circuitbreaker_app.store.backends.redis_link import (
    RedisLink,
    RedisUnavailable,
    mask_redis_url,
    redis_url_for,
)
from circuitbreaker_app.store.entry import PROVISIONAL_ID, CircuitEntry
from circuitbreaker_app.store.keys import KEY_PREFIX, generation_prefix, state_key
from circuitbreaker_app.store.persistence import UnknownCircuitError
from circuitbreaker_app.store.registry import (
    CircuitStore,
    circuit_deleted,
    definition_saved,
    get_store,
    reset_store,
)
from circuitbreaker_app.store.runtime import CircuitRuntime
from circuitbreaker_app.store.unsaved import UnsavedTransition

__all__ = [
    "KEY_PREFIX",
    "PROVISIONAL_ID",
    "CacheCounters",
    "CircuitEntry",
    "CircuitRuntime",
    "CircuitStore",
    "CountContention",
    "Counters",
    "DatabaseCounters",
    "LocMemCounters",
    "RedisCounters",
    "RedisLink",
    "RedisStateCache",
    "RedisUnavailable",
    "UnknownCircuitError",
    "UnsavedTransition",
    "backend_name",
    "circuit_deleted",
    "definition_saved",
    "generation_prefix",
    "get_store",
    "mask_redis_url",
    "redis_url_for",
    "reset_store",
    "state_key",
]
