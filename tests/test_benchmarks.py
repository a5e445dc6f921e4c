"""The benchmark suite still runs end to end (``python -m benchmarks --smoke``).

Tiny iteration counts, so the figures mean nothing and nothing here asserts on time: the
test checks that every part ran and reported, through our own code paths (and the peers'
when they are installed), so ``make bench`` cannot rot between two real runs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import SECTIONS
from tests.conftest import is_reachable, require_service, services_required

# The smoke run starts a dozen processes (fleet workers, gunicorn, load generator): about a
# minute on a busy 2-core machine.
pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("CB_REDIS_URL", "redis://127.0.0.1:6379/15")


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    if services_required():
        require_service("redis")
    out = tmp_path_factory.mktemp("bench")
    env = {
        **os.environ,
        "CB_BENCH_REDIS_URL": REDIS_URL,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the benchmark has its own settings
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--smoke",
            "--out",
            str(out),
            "--workdir",
            str(out / "work"),
            "--json",
            str(out / "results.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out, json.loads((out / "results.json").read_text())


def test_the_report_has_every_section(smoke):
    out, _data = smoke
    report = (out / "benchmarks.md").read_text()
    for heading in SECTIONS:
        assert heading in report
    assert "Smoke run" in report
    assert "python -m benchmarks --smoke" in report


def test_overhead_covers_every_library_and_outcome(smoke):
    _out, data = smoke
    rows = {(r["library"], r["outcome"]) for r in data["overhead"]["results"]}
    libraries = ["bare", "cb_app-locmem"]
    if is_reachable("127.0.0.1", 6379):
        libraries += ["cb_app-redis"]
    if has("pybreaker"):
        libraries += ["pybreaker-memory"]
        if is_reachable("127.0.0.1", 6379):
            libraries += ["pybreaker-redis"]
    if has("circuitbreaker"):
        libraries += ["circuitbreaker"]
    for library in libraries:
        for outcome in ("success", "rejection", "failure"):
            assert (library, outcome) in rows, (library, outcome)
    for row in data["overhead"]["results"]:
        assert row["calls"] > 0 and math.isfinite(row["median_ns"])
        if (row["library"], row["outcome"]) == ("cb_app-redis", "failure"):
            # The store reads its script call's reply on its own socket: still counted.
            assert row["round_trips_per_call"] >= 1
            assert row["redis_commands"].get("EVALSHA", 0) >= 1  # per call
    assert {p["outcome"] for p in data["overhead"]["profiles"]} == {
        "success",
        "rejection",
        "failure",
    }


def test_fleet_load_memory_and_httpx_ran(smoke):
    _out, data = smoke
    fleet = {r["library"]: r for r in data["fleet"]["results"]}
    if is_reachable("127.0.0.1", 6379):
        assert "cb_app" in fleet
    if has("pybreaker"):
        assert "pybreaker-memory" in fleet
    for result in fleet.values():
        assert len(result["dead_hits"]) == 2
        assert result["calls"] > 0
    load = data["load"]
    if has("gunicorn"):
        assert set(load["healthy_rps"]) == {"guarded", "unguarded"}
        assert load["dead_guarded"]["requests"] > 0
        assert load["trip"]["tripped"]
    memory = {r["library"] for r in data["memory"]["results"]}
    assert "cb_app-locmem" in memory

    httpx_part = data["httpx"]
    if has("httpx"):  # every request sent reached the upstream, guarded or not
        assert httpx_part["requests_counted"] == httpx_part["requests_sent"] > 0
        assert httpx_part["last_good"]["pairs"] > 0


def test_plots_are_embedded_when_matplotlib_is_installed(smoke):
    out, data = smoke
    if not has("matplotlib"):
        assert "matplotlib is not installed" in (out / "benchmarks.md").read_text()
        return
    report = (out / "benchmarks.md").read_text()
    for name in data["plots"].values():
        assert (out / name).stat().st_size > 0
        assert f"]({name})" in report
    assert "overhead" in data["plots"] and "fleet" in data["plots"]


def _row(library: str, outcome: str, overhead_ns: float, round_trips: float = 0.0) -> dict:
    return {
        "library": library,
        "outcome": outcome,
        "overhead_ns": overhead_ns,
        "overhead_p99_ns": overhead_ns * 2,
        "queries_per_call": 0,
        "cache_ops_per_call": 0,
        "round_trips_per_call": round_trips,
    }


def test_the_targets_are_issue_13s_with_the_round_trip_of_the_same_run():
    from benchmarks.report import targets

    results = [
        _row("cb_app-locmem", "success", 280),
        _row("cb_app-locmem", "rejection", 510),
        _row("cb_app-locmem", "failure", 9_000),
        _row("cb_app-redis", "success", 290),
        _row("cb_app-redis", "rejection", 490),
        _row("cb_app-redis", "failure", 115_000, round_trips=1.0),
    ]
    rows = targets({"overhead": {"results": results, "redis_round_trip_ns": 70_000}})
    verdicts = {target: verdict for target, _, verdict in rows}
    assert verdicts["closed success overhead ≤ 300 ns (circuitbreaker_app, LocMem)"] == "met"
    assert verdicts["open rejection ≤ 500 ns (circuitbreaker_app, LocMem)"] == "**missed**"
    assert verdicts["open rejection ≤ 500 ns (circuitbreaker_app, Redis)"] == "met"
    assert verdicts["failure ≤ 10 µs (circuitbreaker_app, LocMem)"] == "met"
    # 115 µs > the 70 µs round trip measured in the same run + 40 µs
    redis = "failure ≤ one round trip + 40 µs (circuitbreaker_app, Redis)"
    assert verdicts[redis] == "**missed**"
    assert "round trip (redis-py PING, this run) 70.0 µs" in dict((t, f) for t, f, _ in rows)[redis]
    rows = targets({"overhead": {"results": results, "redis_round_trip_ns": None}})
    assert {t: v for t, _, v in rows}[redis] == "not measured"
