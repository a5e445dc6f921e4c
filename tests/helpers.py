"""Shared test helpers: a fake-clocked store and a cache that counts its operations, the
circuit definitions, users and circuits several test files start from."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from circuitbreaker_app.core import FakeClock, Outcome
from circuitbreaker_app.store import CircuitStore, get_store, reset_store
from circuitbreaker_app.testing import CACHE_OPERATIONS, CountingCache

__all__ = [
    "CACHE_OPERATIONS",
    "CHANGELIST",
    "FOUR_STRAIGHT",
    "TRIP_FAST",
    "TWO_STRAIGHT",
    "CountingCache",
    "FakeStore",
    "change_url",
    "empty_probe_registry",
    "fake_dns",
    "fake_store_with",
    "form_data",
    "record",
    "run_cli",
    "scraped_calls",
    "staff_user",
    "store_queries",
    "three_circuits",
    "use_demo_templates",
    "window_snapshot",
]

#: The admin's change list.
CHANGELIST = "admin:circuitbreaker_app_circuit_changelist"
#: Opens at 50 % failures over the last 10 calls (5 calls at least), then waits 30 s.
TRIP_FAST = {
    "window_type": "count",
    "window_size": 10,
    "minimum_calls": 5,
    "failure_rate_threshold": 50,
    "wait_duration": 30,
}
#: Opens at the second failure in a row (a count window of 2), then waits 30 s.
TWO_STRAIGHT = {
    "window_size": 2,
    "minimum_calls": 2,
    "failure_rate_threshold": 100,
    "wait_duration": 30,
}
#: Opens at the fourth failure in a row (a count window of 4), waits 30 s, admits 2 trials.
FOUR_STRAIGHT = {
    "window_type": "count",
    "window_size": 4,
    "minimum_calls": 4,
    "failure_rate_threshold": 100,
    "wait_duration": 30,
    "half_open_max_calls": 2,
}


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


def fake_store_with(name: str, **definition: Any) -> FakeStore:
    """Create the circuit ``name`` with ``definition``, then install a fake-clocked store."""
    from circuitbreaker_app.models import Circuit

    Circuit.objects.create(name=name, **definition)
    return FakeStore().install()


def window_snapshot(name: str) -> Any:
    """The circuit's window totals as this process's runtime sees them (a ``Snapshot``:
    calls, failures, slow)."""
    return get_store().runtime(name).snapshot()


def three_circuits() -> dict[str, Any]:
    """payments tripped (OPEN), search healthy with calls (slow calls count), mail forced
    open: one circuit in each kind of state the admin pages draw. By name."""
    from circuitbreaker_app.core import State
    from circuitbreaker_app.models import Circuit

    Circuit.objects.create(name="payments", **TRIP_FAST)
    Circuit.objects.create(name="search", slow_call_duration=2.0, **TRIP_FAST)
    Circuit.objects.create(name="mail", **TRIP_FAST)
    record("payments", "SFSFF")  # 3/5 = 60 % opens it at the fifth call
    record("search", "SSSF")
    get_store().move_to("mail", State.FORCED_OPEN, "maintenance")
    return {c.name: c for c in Circuit.objects.all()}


def staff_user(username: str, *codenames: str) -> Any:
    """A staff user (password ``pw``) with exactly these ``circuitbreaker_app`` permissions,
    read back from the database so that its permission cache is empty."""
    from django.contrib.auth.models import Permission, User

    user = User.objects.create_user(username, password="pw", is_staff=True)
    perms = Permission.objects.filter(
        content_type__app_label="circuitbreaker_app", codename__in=codenames
    )
    assert perms.count() == len(codenames)
    user.user_permissions.add(*perms)
    return User.objects.get(pk=user.pk)


def change_url(circuit: Any) -> str:
    """The admin change page of ``circuit``."""
    from django.urls import reverse

    return reverse("admin:circuitbreaker_app_circuit_change", args=[circuit.pk])


def form_data(circuit: Any, **changes: Any) -> dict[str, Any]:
    """What the admin change form of ``circuit`` posts unchanged, then ``changes``."""
    data = {
        "description": circuit.description,
        "window_type": circuit.window_type,
        "window_size": circuit.window_size,
        "minimum_calls": circuit.minimum_calls,
        "failure_rate_threshold": circuit.failure_rate_threshold,
        "slow_call_duration": circuit.slow_call_duration or "",
        "slow_call_rate_threshold": circuit.slow_call_rate_threshold,
        "wait_duration": circuit.wait_duration,
        "backoff_multiplier": circuit.backoff_multiplier,
        "max_wait_duration": circuit.max_wait_duration,
        "trial_mode": circuit.trial_mode,
        "half_open_max_calls": circuit.half_open_max_calls,
        "trial_lease": circuit.trial_lease,
        "probe_url": circuit.probe_url,
        "probe_timeout": circuit.probe_timeout,
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
        "events-MIN_NUM_FORMS": "0",
        "events-MAX_NUM_FORMS": "0",
    }
    data.update(changes)
    return data


def run_cli(*args: str) -> tuple[int, str, str]:
    """Run ``manage.py circuits`` as from a shell: exit code, stdout, stderr."""
    import io
    from contextlib import redirect_stderr, redirect_stdout
    from unittest import mock

    from django.core.management import ManagementUtility

    out, err = io.StringIO(), io.StringIO()
    code = 0
    # run_from_argv() closes the database connections when done, which would end the
    # test's transaction: keep them open.
    with (
        redirect_stdout(out),
        redirect_stderr(err),
        mock.patch("django.core.management.base.connections.close_all"),
    ):
        try:
            ManagementUtility(["manage.py", "circuits", *args]).execute()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def use_demo_templates(settings: Any) -> None:
    """Let the test render the demo's pages: search the repository's ``templates/`` too
    (``settings`` is pytest-django's fixture, so this ends with the test)."""
    from django.conf import settings as django_settings

    settings.TEMPLATES = [
        {**django_settings.TEMPLATES[0], "DIRS": [django_settings.BASE_DIR / "templates"]}
    ]


@contextlib.contextmanager
def empty_probe_registry() -> Iterator[None]:
    """No probe registered inside; the registered ones (e.g. the demo's, when a demo test
    imported them) back after."""
    from circuitbreaker_app import probes

    saved = dict(probes._registry)
    probes._registry.clear()
    try:
        yield
    finally:
        probes._registry.clear()
        probes._registry.update(saved)


def scraped_calls(registry: Any, circuit: str, outcome: str) -> int:
    """``circuitbreaker_calls_total`` for ``circuit`` and ``outcome`` as ``registry`` shows
    it now (0 when it has no such sample)."""
    value = registry.get_sample_value(
        "circuitbreaker_calls_total", {"circuit": circuit, "outcome": outcome}
    )
    return int(value or 0)


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
