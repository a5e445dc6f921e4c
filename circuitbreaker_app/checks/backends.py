"""Checks of what the CACHE and DATABASE aliases can do for the breaker's shared state."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Warning

from circuitbreaker_app.checks.base import settings_error


def backend_checks(cache_alias: str, db_alias: str) -> list[Any]:
    from circuitbreaker_app.store import backend_name

    backend = settings.CACHES[cache_alias].get("BACKEND", "")
    engine = str(settings.DATABASES[db_alias].get("ENGINE", ""))
    found: list[Any] = []
    if backend == "django.core.cache.backends.dummy.DummyCache":
        found.append(
            settings_error(
                11,
                f"The cache {cache_alias!r} is a DummyCache: circuits cannot "
                "share state through it.",
                "Point CIRCUITBREAKER['CACHE'] at a real cache.",
            )
        )
    elif backend_name(cache_alias) == "database" and not engine.endswith(("sqlite3", "postgresql")):
        found.append(
            settings_error(
                12,
                f"The cache {cache_alias!r} ({backend}) cannot hold the shared counters "
                "(only Redis and the per-process LocMem can update them atomically), and "
                f"the database {db_alias!r} ({engine}) cannot hold them instead.",
                "Use Redis, or a SQLite/PostgreSQL database.",
            )
        )
    if backend == "django.core.cache.backends.locmem.LocMemCache" and any(
        name.startswith("CELERY_") for name in dir(settings)
    ):
        found.append(
            Warning(
                f"The cache {cache_alias!r} is a LocMemCache, which each process keeps to itself, "
                "but Celery is configured: workers and web processes will not share circuit state.",
                hint="Use Redis, or a database or file cache, for CIRCUITBREAKER['CACHE'].",
                id="circuitbreaker_app.W001",
            )
        )
    found.extend(connect_timeout_checks(db_alias))
    if settings.DATABASES[db_alias].get("ATOMIC_REQUESTS"):
        found.append(
            Warning(
                f"DATABASES[{db_alias!r}] has ATOMIC_REQUESTS: a request that fails rolls back the "
                "transition its failures caused.",
                hint="Add a second alias to the same database without ATOMIC_REQUESTS and set "
                "CIRCUITBREAKER['DATABASE'] to it.",
                id="circuitbreaker_app.W002",
            )
        )
    return found


#: Database engines whose driver waits for a connection without bound unless told, and the
#: OPTIONS key that bounds it.
CONNECT_TIMEOUT_OPTIONS = {
    "postgresql": "connect_timeout",
    "postgis": "connect_timeout",
    "mysql": "connect_timeout",
}


def connect_timeout_checks(db_alias: str) -> list[Any]:
    """W040: the breaker's database alias has no connect timeout (PostgreSQL, MySQL)."""
    database: dict[str, Any] = settings.DATABASES[db_alias]
    engine = str(database.get("ENGINE", "")).rsplit(".", 1)[-1]
    option = CONNECT_TIMEOUT_OPTIONS.get(engine)
    if option is None or (database.get("OPTIONS") or {}).get(option):
        return []
    return [
        Warning(
            f"DATABASES[{db_alias!r}] has no OPTIONS[{option!r}]: while the database accepts "
            "connections but does not answer, opening a connection waits without bound, "
            "and the breaker's first query after an outage starts with it.",
            hint=f"Set DATABASES[{db_alias!r}]['OPTIONS'][{option!r}] to a few seconds "
            "(e.g. 2), or point CIRCUITBREAKER['DATABASE'] at an alias that has it.",
            id="circuitbreaker_app.W040",
        )
    ]
