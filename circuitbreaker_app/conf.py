"""The ``CIRCUITBREAKER`` setting: defaults in one place, read lazily.

Every read goes through :func:`get`, so ``override_settings(CIRCUITBREAKER=...)``
works in tests and nothing touches settings at import time.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Cache alias holding shared state and counters.
    "CACHE": "default",
    # Database alias the breaker writes transitions and events to.
    "DATABASE": "default",
    # Seconds a process trusts its in-memory snapshot (and batches successes).
    "STATE_TTL": 1.0,
    # Field defaults for circuits created on first use or from CIRCUITS.
    "DEFAULTS": {},
    # {name: {field: value}} created by migrate / `circuits sync` when missing.
    "CIRCUITS": {},
    # Seconds between runs of the beat task that drives OPEN -> HALF_OPEN probes.
    "PROBE_INTERVAL": 5.0,
    # Create a circuit from DEFAULTS when code uses an unknown name.
    "AUTO_CREATE": True,
    # Cap on circuits created on first use; past it each new name gets its own isolated
    # per-process breaker from DEFAULTS (store/overflow.py).
    "MAX_CIRCUITS": 1000,
    # Bearer token that lets monitoring read the status endpoint without a staff login
    # (None: staff only). Compared in constant time.
    "STATUS_TOKEN": None,
    # Export Prometheus metrics when prometheus_client is installed.
    "METRICS": True,
    # Redis for shared state, used through redis-py directly (Lua scripts, SET NX permits,
    # Redis TIME as the shared clock). None: the CACHE's own server when that cache is
    # Django's or django-redis's RedisCache, else the generic cache path.
    "REDIS_URL": None,
    # Seconds the breaker waits for its own database queries (and connections) before it
    # treats the database as down: at most one such wait per outage per process.
    "DB_TIMEOUT": 0.5,
    # Host names or fnmatch patterns a probe_url may point at (None: any host that is not
    # link-local or a cloud metadata service, which are always refused).
    "PROBE_HOSTS": None,
    # Socket connect and read timeout (seconds) of that Redis client: the most an outage
    # can add to a guarded call, once per second per process.
    "REDIS_TIMEOUT": 0.25,
}


def get(name: str) -> Any:
    """The effective value of one ``CIRCUITBREAKER`` key."""
    user = getattr(settings, "CIRCUITBREAKER", None) or {}
    if not isinstance(user, dict):
        return DEFAULTS[name]
    return user.get(name, DEFAULTS[name])


def user_settings() -> dict[str, Any]:
    """The raw ``CIRCUITBREAKER`` dict as the user wrote it (for system checks)."""
    value = getattr(settings, "CIRCUITBREAKER", None)
    return value if value is not None else {}
