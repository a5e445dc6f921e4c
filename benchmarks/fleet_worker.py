"""One process of a benchmark fleet: calls the loopback upstream through a breaker, paced.

Usage: ``python -m benchmarks.fleet_worker LIBRARY CIRCUIT URL GO_FILE STOP_FILE PACE WAIT``
with LIBRARY one of :data:`LIBRARIES`. It builds its breaker, prints ``{"ready": true}``,
waits for GO_FILE (a start barrier shared by the fleet), then calls ``GET URL`` every
PACE seconds until STOP_FILE exists (or a 120 s safety limit). It prints one JSON line
each time the kind of outcome changes (``success``, ``failure``, ``rejected``, or
``error`` when the breaker itself raises something unexpected) with
``time.monotonic()`` (one clock for every process of the host), and a summary at the end.

WAIT is the seconds a circuit stays open (``wait_duration``, ``reset_timeout``,
``recovery_timeout``); every library trips on 5 consecutive failures.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable

LIBRARIES = ("cb_app", "pybreaker-memory", "pybreaker-redis", "circuitbreaker")
REQUEST_TIMEOUT = 2.0
SAFETY_LIMIT = 120.0


def _emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def build(library: str, circuit: str, url: str, wait: float) -> Callable[[], str]:
    """A function making one guarded call and naming its outcome."""
    import requests

    if library == "cb_app":
        import django

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
        django.setup()
        from circuitbreaker_app import CircuitOpenError
        from circuitbreaker_app.http import CircuitSession

        session = CircuitSession(circuit, timeout=REQUEST_TIMEOUT)

        def call() -> str:
            try:
                response = session.get(url)
            except CircuitOpenError:
                return "rejected"
            except requests.RequestException:
                return "failure"
            return "success" if response.status_code < 500 else "failure"

        _ = session.breaker_for(url).state  # load the circuit before the start barrier
        return call

    plain = requests.Session()

    def fetch() -> None:
        response = plain.get(url, timeout=REQUEST_TIMEOUT)
        response.raise_for_status()

    if library.startswith("pybreaker"):
        import pybreaker

        storage = None
        if library == "pybreaker-redis":
            import redis

            client = redis.Redis.from_url(os.environ["CB_BENCH_REDIS_URL"], socket_timeout=5)
            storage = pybreaker.CircuitRedisStorage(
                pybreaker.STATE_CLOSED, client, namespace=circuit
            )
        breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=wait, state_storage=storage)

        def call() -> str:
            try:
                breaker.call(fetch)
            except pybreaker.CircuitBreakerError:
                return "rejected"
            except requests.RequestException:
                return "failure"
            return "success"

        return call

    if library == "circuitbreaker":
        from circuitbreaker import CircuitBreaker, CircuitBreakerError

        guarded = CircuitBreaker(failure_threshold=5, recovery_timeout=wait, name=circuit)(fetch)

        def call() -> str:
            try:
                guarded()
            except CircuitBreakerError:
                return "rejected"
            except requests.RequestException:
                return "failure"
            return "success"

        return call
    raise SystemExit(f"unknown library {library!r}; known: {', '.join(LIBRARIES)}")


def main() -> None:
    library, circuit, url, go_file, stop_file, pace, wait = sys.argv[1:8]
    call = build(library, circuit, url, float(wait))
    _emit(ready=True, pid=os.getpid())
    limit = time.monotonic() + SAFETY_LIMIT
    while not os.path.exists(go_file):
        if time.monotonic() > limit:
            sys.exit("no go signal")
        time.sleep(0.001)
    interval = float(pace)
    kinds: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    last = None
    calls = 0
    while time.monotonic() < limit:
        if calls % 8 == 0 and os.path.exists(stop_file):
            break
        started = time.monotonic()
        try:
            kind = call()
        except Exception as exc:  # a breaker bug must show in the report, not end the run
            kind = "error"
            errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
        ended = time.monotonic()
        calls += 1
        kinds[kind] += 1
        if kind != last:
            _emit(kind=kind, started=started, t=ended, n=calls)
            last = kind
        pause = interval - (time.monotonic() - started)
        if pause > 0:
            time.sleep(pause)
    _emit(done=True, calls=calls, kinds=dict(kinds), errors=dict(errors))


if __name__ == "__main__":
    main()
