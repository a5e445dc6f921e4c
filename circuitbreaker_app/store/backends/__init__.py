"""Counter backends: one module each, behind the contract of :mod:`.base`, chosen here.

The factory asks each module of :data:`BACKENDS`, in order, whether it ``handles`` the
configured cache, and ``connect``s the first that does. A new backend is one module with
those two functions (and a :class:`~.base.Counters` subclass) plus one line in
:data:`BACKENDS`. Nothing else in the package, in tasks, checks or tests asks which
backend runs: they use the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from circuitbreaker_app.store.backends.base import Counters

#: Backend modules, most specific first; the last one must handle every cache.
BACKENDS = (
    "circuitbreaker_app.store.backends.redis",
    "circuitbreaker_app.store.backends.locmem",
    "circuitbreaker_app.store.backends.database",
)


@dataclass
class Backend:
    """What a store runs on: where state entries live and where counters live."""

    #: Short name of the backend module (``redis``, ``locmem``, ``database``).
    name: str
    #: The state cache: Django's cache, or an object with the subset of its API the store
    #: uses (``get``, ``get_many``, ``set``, ``add``, ``delete``; optionally ``publish``).
    cache: Any
    counters: Counters
    #: How log lines name the shared layer when it fails (one outage for cache and
    #: counters when both are one server), or None when they fail separately.
    label: str | None = None
    #: The backend's own client, for tests and benchmarks that look at the server.
    client: Any = None


def backend_module(cache_alias: str) -> Any:
    """The backend module that handles the cache ``cache_alias`` (no connection made)."""
    for path in BACKENDS:
        module = import_module(path)
        if module.handles(cache_alias):
            return module
    raise LookupError(f"no counter backend handles the cache {cache_alias!r}")


def backend_name(cache_alias: str) -> str:
    """Short name of the backend for ``cache_alias`` (for checks and messages)."""
    return str(backend_module(cache_alias).__name__.rsplit(".", 1)[1])


def connect(
    cache_alias: str,
    db_alias: str,
    now: Callable[[], float],
    wall: Callable[[], float],
    clock_sink: Callable[[float], None] | None,
) -> Backend:
    """The backend for ``cache_alias``: the one factory (DESIGN §5).

    ``now`` is the store's shared clock, ``wall`` this host's clock, and ``clock_sink``
    takes the offset of a server's clock when the backend reads one (None: do not).
    """
    module = backend_module(cache_alias)
    return module.connect(cache_alias, db_alias, now=now, wall=wall, clock_sink=clock_sink)
