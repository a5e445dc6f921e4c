"""Per-call overhead of a guarded call, every library side by side in one process.

Method (repeated in docs/benchmarks.md):

* Every scenario is a zero-argument function called in a tight loop: ``f()`` for a
  success, ``try: f() except Exception: pass`` for a rejection or a failure. The bare
  baselines are the same loops around the unguarded function.
* A *batch* is ``B`` consecutive calls timed with two ``time.perf_counter_ns()`` reads;
  its per-call time is the batch time divided by ``B``. ``B`` is calibrated once per
  scenario so that a batch lasts about 2 ms (between 10 and 1,000 calls: 1,000 for every
  in-memory path).
* The scenarios run interleaved in rounds (round ``r`` runs every scenario once, for at
  least ``min_seconds`` and ``min_batches``), so a noisy neighbour hurts them all alike.
* Reported: the median and the 99th percentile of the per-call batch means, and the
  overhead = median − the median of the matching bare loop. The garbage collector stays
  on (exceptions make reference cycles; collecting them is part of the cost) and is run
  before each scenario's turn.
* I/O is counted during the same timed batches: database queries with
  ``CaptureQueriesContext``, Django cache operations with a counting wrapper around the
  store's cache, Redis round trips and commands with a redis-py connection patch
  (:mod:`benchmarks.counting`). In the full run each turn lasts longer than ``STATE_TTL``
  and starts without a warm-up call, so the once-per-``STATE_TTL`` refresh and flush are
  inside the counts.
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat
from time import perf_counter, perf_counter_ns
from typing import Any

from benchmarks.common import median, percentile
from benchmarks.counting import REDIS, CountingCache, count_store_cache

OUTCOMES = ("success", "rejection", "failure")
OUTCOME_TITLES = {
    "success": "closed, success",
    "rejection": "open, rejection",
    "failure": "closed, failure",
}
TARGET_BATCH_NS = 2_000_000
MAX_BATCH = 1_000
MIN_BATCH = 10
#: Calls per turn at most for a failure scenario (stays below the window that would trip).
FAILURE_CAP = 90_000


def ok() -> int:
    return 1


def boom() -> None:
    raise ConnectionError("upstream down")


def _plain(fn: Callable[[], Any], n: int) -> None:
    for _ in repeat(None, n):
        fn()


def _catching(fn: Callable[[], Any], n: int) -> None:
    for _ in repeat(None, n):
        try:
            fn()
        except Exception:
            pass


@dataclass
class Scenario:
    library: str
    outcome: str
    fn: Callable[[], Any]
    catch: bool
    setup: Callable[[], None] = lambda: None
    teardown: Callable[[], None] = lambda: None
    cache: CountingCache | None = None
    cap: int = 10**9
    batch: int = MAX_BATCH
    samples: list[float] = field(default_factory=list)
    calls: int = 0
    queries: int = 0
    cache_ops: int = 0
    round_trips: int = 0
    commands: int = 0
    command_names: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def loop(self) -> Callable[[Callable[[], Any], int], None]:
        return _catching if self.catch else _plain

    def calibrate(self) -> None:
        self.setup()
        loop, fn = self.loop(), self.fn
        loop(fn, MIN_BATCH)  # warm up
        started = perf_counter_ns()
        loop(fn, MIN_BATCH)
        per_call = max((perf_counter_ns() - started) / MIN_BATCH, 1.0)
        self.batch = int(min(MAX_BATCH, max(MIN_BATCH, TARGET_BATCH_NS // per_call)))

    def turn(self, min_batches: int, min_seconds: float, max_batches: int) -> None:
        from django.db import connections
        from django.test.utils import CaptureQueriesContext

        self.setup()
        gc.collect()
        loop, fn, batch = self.loop(), self.fn, self.batch
        cap = min(self.cap, max_batches * batch)
        samples = self.samples
        done = 0
        ops_before = self.cache.total if self.cache is not None else 0
        REDIS.reset()
        contexts = [CaptureQueriesContext(connections[alias]) for alias in connections]
        for context in contexts:
            context.__enter__()
        started = perf_counter()
        deadline = started + min_seconds
        try:
            with REDIS.counting():
                batches = 0
                while (batches < min_batches or perf_counter() < deadline) and done + batch <= cap:
                    t0 = perf_counter_ns()
                    loop(fn, batch)
                    samples.append((perf_counter_ns() - t0) / batch)
                    done += batch
                    batches += 1
        finally:
            self.seconds += perf_counter() - started
            for context in contexts:
                context.__exit__(None, None, None)
        self.calls += done
        self.queries += sum(len(context.captured_queries) for context in contexts)
        if self.cache is not None:
            self.cache_ops += self.cache.total - ops_before
        self.round_trips += REDIS.round_trips
        self.commands += REDIS.commands
        self.command_names.update(REDIS.names)

    def result(self) -> dict[str, Any]:
        calls = max(self.calls, 1)
        return {
            "library": self.library,
            "outcome": self.outcome,
            "batch": self.batch,
            "batches": len(self.samples),
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "median_ns": median(self.samples),
            "p99_ns": percentile(self.samples, 99),
            "queries_per_call": self.queries / calls,
            "queries": self.queries,
            "cache_ops_per_call": self.cache_ops / calls if self.cache is not None else None,
            "cache_ops": self.cache_ops if self.cache is not None else None,
            "round_trips_per_call": self.round_trips / calls,
            "round_trips": self.round_trips,
            "commands_per_call": self.commands / calls,
            "redis_commands": {
                name: count / calls for name, count in self.command_names.most_common()
            },
        }


# -- the libraries -------------------------------------------------------------------------

LIBRARIES = {
    "bare": "bare call (no breaker)",
    "cb_app-locmem": "circuitbreaker_app, LocMem",
    "cb_app-redis": "circuitbreaker_app, Redis",
    "cb_app-locmem-metrics": "circuitbreaker_app, LocMem + Prometheus metrics",
    "pybreaker-memory": "pybreaker, memory",
    "pybreaker-redis": "pybreaker, CircuitRedisStorage",
    "circuitbreaker": "circuitbreaker (@circuit)",
}


def bare_scenarios() -> list[Scenario]:
    return [
        Scenario("bare", "success", ok, catch=False),
        Scenario("bare", "rejection", ok, catch=True),
        Scenario("bare", "failure", boom, catch=True),
    ]


def _circuit_rows(prefix: str) -> dict[str, str]:
    """Create the three circuits one circuitbreaker_app variant uses; their names by outcome."""
    from circuitbreaker_app.models import Circuit

    names = {outcome: f"bench.{prefix}.{outcome}" for outcome in OUTCOMES}
    week = 86_400.0
    Circuit.objects.update_or_create(
        name=names["success"],
        defaults=dict(window_type="count", window_size=100, minimum_calls=100),
    )
    # "5 consecutive failures", open for a day: every measured call is a rejection.
    Circuit.objects.update_or_create(
        name=names["rejection"],
        defaults=dict(
            window_type="count",
            window_size=5,
            minimum_calls=5,
            failure_rate_threshold=100,
            wait_duration=week,
            max_wait_duration=week,
        ),
    )
    # Failures that never trip: the window is reset before every turn.
    Circuit.objects.update_or_create(
        name=names["failure"],
        defaults=dict(
            window_type="count",
            window_size=100_000,
            minimum_calls=100_000,
            failure_rate_threshold=100,
            wait_duration=week,
            max_wait_duration=week,
        ),
    )
    return names


def cb_app_scenarios(key: str, cache_alias: str, metrics: bool = False) -> list[Scenario]:
    """circuitbreaker_app on its own store (``cache_alias``), in this process."""
    from django.conf import settings
    from django.test import override_settings

    from circuitbreaker_app import State, breaker
    from circuitbreaker_app import store as store_module

    with override_settings(CIRCUITBREAKER={**settings.CIRCUITBREAKER, "CACHE": cache_alias}):
        store = store_module.CircuitStore()
    names = _circuit_rows(key)
    counting = count_store_cache(store)

    def install() -> None:
        store_module.reset_store(store)
        if metrics:
            _metrics_on()

    def leave() -> None:
        if metrics:
            _metrics_off()

    install()
    guarded_ok = breaker(names["success"])(ok)
    guarded_open = breaker(names["rejection"])(ok)
    guarded_boom = breaker(names["failure"])(boom)
    guarded_ok()
    for _ in range(5):
        try:
            breaker(names["rejection"])(boom)()
        except Exception:
            pass
    if breaker(names["rejection"]).state is not State.OPEN:
        raise RuntimeError(
            f"{names['rejection']} did not open: {breaker(names['rejection']).state}"
        )
    leave()

    # No warm-up call after install(): the first timed call pays whatever refresh is due,
    # so the periodic I/O stays inside the counts.
    def setup_failure() -> None:
        install()
        store.move_to(names["failure"], State.CLOSED, "benchmark: empty the window")

    return [
        Scenario(key, "success", guarded_ok, False, install, leave, counting),
        Scenario(key, "rejection", guarded_open, True, install, leave, counting),
        Scenario(
            key, "failure", guarded_boom, True, setup_failure, leave, counting, cap=FAILURE_CAP
        ),
    ]


def _metrics_on() -> None:
    from prometheus_client import CollectorRegistry

    from circuitbreaker_app import metrics

    if metrics.enabled() is None:
        metrics.enable(CollectorRegistry())


def _metrics_off() -> None:
    from circuitbreaker_app import metrics

    metrics.disable()


def pybreaker_scenarios(key: str, redis_url: str | None, run: str) -> list[Scenario]:
    import pybreaker

    def storage(name: str) -> Any:
        if redis_url is None:
            return None
        import redis

        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        return pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, client, namespace=f"cbbench-{run}-{key}-{name}"
        )

    closed = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=86_400, state_storage=storage("ok"))
    opened = pybreaker.CircuitBreaker(
        fail_max=5, reset_timeout=86_400, state_storage=storage("open")
    )
    failing = pybreaker.CircuitBreaker(
        fail_max=10**9, reset_timeout=86_400, state_storage=storage("fail")
    )
    guarded_ok = closed(ok)
    guarded_open = opened(ok)
    guarded_boom = failing(boom)
    for _ in range(5):
        try:
            opened(boom)()
        except Exception:
            pass
    if opened.current_state != pybreaker.STATE_OPEN:
        raise RuntimeError(f"pybreaker did not open: {opened.current_state}")
    return [
        Scenario(key, "success", guarded_ok, False),
        Scenario(key, "rejection", guarded_open, True),
        Scenario(key, "failure", guarded_boom, True),
    ]


def circuitbreaker_scenarios() -> list[Scenario]:
    """``@circuit(...)``: ``circuit()`` builds a ``CircuitBreaker`` and decorates with it."""
    from circuitbreaker import CircuitBreaker

    closed = CircuitBreaker(failure_threshold=5, recovery_timeout=86_400, name="bench-ok")
    opened = CircuitBreaker(failure_threshold=5, recovery_timeout=86_400, name="bench-open")
    failing = CircuitBreaker(failure_threshold=10**9, recovery_timeout=86_400, name="bench-fail")
    guarded_ok = closed(ok)
    guarded_open = opened(ok)
    guarded_boom = failing(boom)
    for _ in range(5):
        try:
            opened(boom)()
        except Exception:
            pass
    if not opened.opened:
        raise RuntimeError("circuitbreaker did not open")
    return [
        Scenario("circuitbreaker", "success", guarded_ok, False),
        Scenario("circuitbreaker", "rejection", guarded_open, True),
        Scenario("circuitbreaker", "failure", guarded_boom, True),
    ]


# -- profiles --------------------------------------------------------------------------------


def profile(scenario: Scenario, calls: int, top: int = 12) -> dict[str, Any]:
    """cProfile of ``calls`` calls of one scenario: the functions each guarded call runs.

    cProfile's own cost per function call inflates sub-microsecond times several-fold, so
    what to read here is the *number of Python function calls per guarded call* and where
    the time goes relative to the rest, not the absolute times.
    """
    scenario.setup()
    loop, fn = scenario.loop(), scenario.fn
    profiler = cProfile.Profile()
    profiler.enable()
    loop(fn, calls)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    total_calls = 0
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if name in ("_plain", "_catching") or "disable" in name:
            continue
        total_calls += nc
        rows.append(
            {
                "function": f"{_short(filename)}:{line}({name})",
                "calls_per_call": nc / calls,
                "tottime_ns_per_call": tt * 1e9 / calls,
                "cumtime_ns_per_call": ct * 1e9 / calls,
            }
        )
    rows.sort(key=lambda row: row["tottime_ns_per_call"], reverse=True)
    return {
        "library": scenario.library,
        "outcome": scenario.outcome,
        "calls": calls,
        "function_calls_per_call": total_calls / calls,
        "rows": rows[:top],
    }


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- the part ---------------------------------------------------------------------------------


@dataclass
class OverheadOptions:
    rounds: int = 4
    min_batches: int = 40
    min_seconds: float = 1.1
    max_batches: int = 10_000
    profile_calls: int = 20_000


def build_scenarios(redis_url: str | None, run: str, notes: list[str]) -> list[Scenario]:
    import importlib.util

    scenarios = bare_scenarios()
    scenarios += cb_app_scenarios("cb_app-locmem", "default")
    if redis_url:
        scenarios += cb_app_scenarios("cb_app-redis", "redis")
    else:
        notes.append("Redis unreachable: the circuitbreaker_app Redis rows were skipped.")
    if importlib.util.find_spec("prometheus_client"):
        scenarios += cb_app_scenarios("cb_app-locmem-metrics", "default", metrics=True)
    else:
        notes.append("prometheus_client not installed: the metrics row was skipped.")
    if importlib.util.find_spec("pybreaker"):
        scenarios += pybreaker_scenarios("pybreaker-memory", None, run)
        if redis_url:
            scenarios += pybreaker_scenarios("pybreaker-redis", redis_url, run)
    else:
        notes.append("pybreaker not installed: its rows were skipped.")
    if importlib.util.find_spec("circuitbreaker"):
        scenarios += circuitbreaker_scenarios()
    else:
        notes.append("circuitbreaker not installed: its rows were skipped.")
    return scenarios


#: PING batches timed for the Redis round trip (before and after the rounds), calls each.
PING_BATCHES = 200
PING_BATCH = 20


def redis_round_trip(redis_url: str, batches: int = PING_BATCHES) -> list[float]:
    """Per-call ns of ``batches`` batches of ``PING_BATCH`` PINGs through redis-py: the
    loopback round trip the Redis failure's target is measured against, in this run."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        client.ping()  # connect outside the timing
        samples = []
        for _ in range(batches):
            t0 = perf_counter_ns()
            for _ in repeat(None, PING_BATCH):
                client.ping()
            samples.append((perf_counter_ns() - t0) / PING_BATCH)
        return samples
    finally:
        client.close()


def run(options: OverheadOptions, redis_url: str | None, run_id: str) -> dict[str, Any]:
    notes: list[str] = []
    scenarios = build_scenarios(redis_url, run_id, notes)
    batches = max(2, min(PING_BATCHES, options.min_batches * 5))
    pings = redis_round_trip(redis_url, batches) if redis_url else []
    for scenario in scenarios:
        scenario.calibrate()
        _teardown(scenario)
    for round_number in range(options.rounds):
        # Rotate the order so no scenario always follows the same neighbour.
        shift = round_number % len(scenarios)
        for scenario in scenarios[shift:] + scenarios[:shift]:
            scenario.turn(options.min_batches, options.min_seconds, options.max_batches)
            _teardown(scenario)
    if redis_url:
        pings += redis_round_trip(redis_url, batches)
        print(f"benchmarks: Redis round trip (PING) {median(pings) / 1000:.1f} µs", file=sys.stderr)
    results = [scenario.result() for scenario in scenarios]
    bare = {r["outcome"]: r["median_ns"] for r in results if r["library"] == "bare"}
    for result in results:
        result["overhead_ns"] = result["median_ns"] - bare[result["outcome"]]
        result["overhead_p99_ns"] = result["p99_ns"] - bare[result["outcome"]]
    profiles = [
        profile(scenario, options.profile_calls)
        for scenario in scenarios
        if scenario.library == "cb_app-locmem"
    ]
    for scenario in scenarios:
        _teardown(scenario)
    return {
        "options": options.__dict__,
        "results": results,
        "profiles": profiles,
        "notes": notes,
        # The loopback round trip (redis-py PING), median of per-call batch means.
        "redis_round_trip_ns": median(pings) if pings else None,
    }


def _teardown(scenario: Scenario) -> None:
    scenario.teardown()
