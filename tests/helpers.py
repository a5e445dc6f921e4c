"""Shared test helpers: a fake-clocked store and a cache that counts its operations."""

from __future__ import annotations

import os
from typing import Any

import pytest
from django.conf import settings

from circuitbreaker_app.core import FakeClock, Outcome
from circuitbreaker_app.store import CircuitStore, get_store, reset_store
from circuitbreaker_app.testing import CACHE_OPERATIONS, CountingCache

__all__ = [
    "CACHE_OPERATIONS",
    "CountingCache",
    "FakeStore",
    "fake_dns",
    "record",
    "store_queries",
]


class FakeStore:
    """A CircuitStore on a fake clock whose cache operations are counted."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock(1_000_000.0)
        self.store = CircuitStore(clock=self.clock, wall=self.clock, sync_db_clock=False)
        self.cache = CountingCache(self.store.cache)
        self.store.cache = self.cache
        # Round trips of the counters are counted with the cache's.
        self.store.counters = self.store.counters.through(self.cache)

    def install(self) -> FakeStore:
        reset_store(self.store)
        return self

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def runtime(self, name: str) -> Any:
        return self.store.runtime(name)


def record(name: str, outcomes: str) -> None:
    """Guard calls on ``name`` in this process's store: S = success, F = failure (DESIGN §3
    notation); then flush the batched successes so every process sees them."""
    runtime = get_store().runtime(name)
    for letter in outcomes:
        permit = runtime.acquire()
        runtime.on_result(permit, Outcome.FAILURE if letter == "F" else Outcome.SUCCESS, 0.0)
    get_store().flush()


def store_queries() -> int:
    """Database queries one batched live-status read costs besides the circuits query:
    the database cache is itself a table, and on caches other than Redis and LocMem the
    window counters live in the ``CircuitCounter`` table."""
    store = get_store()
    backend = settings.CACHES[store.cache_alias]["BACKEND"]
    return int(backend.endswith(".DatabaseCache")) + int(not store.counters.in_cache)


def fake_dns(monkeypatch: Any, answers: dict[str, Any]) -> list[str]:
    """Answer the probe's DNS lookups from ``answers`` ({host: [address, …]} or
    {host: callable returning that list}); other hosts do not resolve. Returns the list of
    hosts looked up, in order (so a test can count lookups)."""
    import socket

    from circuitbreaker_app import probe_targets

    asked: list[str] = []

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        asked.append(host)
        if host not in answers:
            if host[:1].isdigit() or ":" in host:
                return socket.getaddrinfo(host, port, *args, **kwargs)  # a literal address
            raise socket.gaierror(socket.EAI_NONAME, f"{host} does not resolve (fake_dns)")
        found = answers[host]
        addresses = found() if callable(found) else found
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (address, port),
            )
            for address in addresses
        ]

    monkeypatch.setattr(probe_targets, "getaddrinfo", getaddrinfo)
    return asked


# -- every counter backend, whatever CB_CACHE says --------------------------------------


def backend_settings(backend: str, tmp_path: Any) -> dict[str, Any]:
    """Settings that put the store on the counter ``backend`` (``locmem``, ``database`` or
    ``redis``, whatever ``CB_CACHE`` says), with a cache alias of its own: use them with
    ``override_settings(**backend_settings(backend, tmp_path))``."""
    caches = dict(settings.CACHES)
    breaker_settings = dict(getattr(settings, "CIRCUITBREAKER", {}))
    if backend == "locmem":
        caches["model"] = {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "model-based",
        }
    elif backend == "database":  # a cache without atomic incr: counters in the database
        caches["model"] = {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        }
    else:
        caches["model"] = {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "model-based-keys",
        }
        breaker_settings["REDIS_URL"] = os.environ.get("CB_REDIS_URL", "redis://127.0.0.1:6379/15")
    breaker_settings.update({"CACHE": "model", "STATE_TTL": 1.0, "AUTO_CREATE": False})
    return {"CACHES": caches, "CIRCUITBREAKER": breaker_settings}


#: Every counter backend, for ``@pytest.mark.parametrize("backend", BACKENDS)``.
BACKENDS = [
    "locmem",
    "database",
    pytest.param("redis", marks=pytest.mark.redis),
]
