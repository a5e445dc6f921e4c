"""Two OS processes sharing a database and a cache behave as one breaker.

The processes run ``tests/mp_worker.py`` with the same settings as this test, pointed at
the test database; the cache is server-less (database or file cache) or Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from circuitbreaker_app.models import Circuit, CircuitEvent

#: solo: the other process sees a trip within STATE_TTL + 0.25 s, on a machine not busy with
#: other tests.
pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.solo,
    pytest.mark.django_db(transaction=True),
]

ROOT = Path(__file__).resolve().parent.parent
STATE_TTL = 1.0
DB_CACHE = {
    "default": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "cb_cache",
        "OPTIONS": {"MAX_ENTRIES": 1_000_000},
    }
}


def cache_params():
    params = [pytest.param("database", id="database-cache"), pytest.param("file", id="file-cache")]
    if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        params.append(pytest.param("redis", id="redis-cache", marks=pytest.mark.redis))
    return params


@pytest.fixture(params=cache_params())
def worker_env(request, tmp_path):
    cache = request.param
    env = {**os.environ, "CB_CACHE": cache, "PYTHONPATH": str(ROOT)}
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        env.update(CB_DATABASE="sqlite", CB_SQLITE_PATH=str(database["NAME"]))
    else:
        env.update(CB_DATABASE="postgres", CB_POSTGRES_NAME=database["NAME"])
    if cache == "database":
        with override_settings(CACHES=DB_CACHE):
            call_command("createcachetable", verbosity=0)
    if cache == "file":
        env["CB_FILE_CACHE_DIR"] = str(tmp_path / "file-cache")
    return env


def start(role: str, name: str, go: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mp_worker", role, name, str(go)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    if json.loads(line or "{}").get("ready") is not True:
        process.kill()
        raise AssertionError(f"{role} worker failed to start: {process.stderr.read()}")
    return process


def finish(process: subprocess.Popen[str]) -> dict[str, float]:
    try:
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def make_circuit() -> str:
    name = f"mp-{uuid.uuid4().hex[:8]}"
    Circuit.objects.create(
        name=name,
        window_type="count",
        window_size=4,
        minimum_calls=4,
        failure_rate_threshold=100,
        wait_duration=60,
    )
    return name


def test_a_trip_in_one_process_is_seen_by_the_other_within_state_ttl(worker_env, tmp_path):
    name = make_circuit()
    go = tmp_path / "go"
    watcher = start("watch", name, go, worker_env)
    tripper = start("trip", name, go, worker_env)
    try:
        go.touch()
        tripped = finish(tripper)
        seen = finish(watcher)
    finally:
        tripper.kill()
        watcher.kill()
    assert tripped["failures"] == 4
    lag = seen["saw_open_at"] - tripped["rejected_at"]
    assert lag <= STATE_TTL + 0.25, f"the other process saw the trip {lag:.3f} s later"
    assert CircuitEvent.objects.filter(circuit__name=name).count() == 1


def test_a_trip_both_processes_cause_is_one_transition(worker_env, tmp_path):
    name = make_circuit()
    go = tmp_path / "go"
    first = start("trip", name, go, worker_env)
    second = start("trip", name, go, worker_env)
    try:
        go.touch()
        results = [finish(first), finish(second)]
    finally:
        first.kill()
        second.kill()
    events = list(
        CircuitEvent.objects.filter(circuit__name=name).values_list("from_state", "to_state")
    )
    assert events == [("closed", "open")]
    assert Circuit.objects.get(name=name).generation == 1
    # 4 shared failures open it; each process may fail once more before it sees the trip
    assert 4 <= sum(r["failures"] for r in results) <= 4 + 2
