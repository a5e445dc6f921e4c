"""Memory with 1,000 circuits defined, each library in a fresh process.

Each measurement runs ``python -m benchmarks.memory LIBRARY COUNT`` so that nothing
else of the benchmark run is in the heap. The child reads its resident set size
(``VmRSS`` in ``/proc/self/status``, the figure ``ps`` and psutil show), then defines
COUNT circuits and makes one successful call through each (so that every circuit is
loaded in the process, as in a long-running worker), then reads it again. ``tracemalloc``
gives the Python heap bytes allocated by that step, which RSS rounds to pages.

For circuitbreaker_app the circuits are rows created beforehand by the parent (the
definitions live in the database); the child's cache is LocMem or Redis. The
per-circuit Redis footprint (``MEMORY USAGE`` of the keys the run created) is measured
by the parent for the Redis variant.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from typing import Any

from benchmarks.common import ROOT, child_env

MEMORY_LIBRARIES = {
    "cb_app-locmem": "circuitbreaker_app, LocMem",
    "cb_app-redis": "circuitbreaker_app, Redis",
    "pybreaker-memory": "pybreaker, memory",
    "circuitbreaker": "circuitbreaker (@circuit)",
}
PREFIX = "mem."


def rss_bytes() -> int:
    """This process's resident set size, from /proc (psutil when /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return int(psutil.Process().memory_info().rss)


def ok() -> int:
    return 1


def child(library: str, count: int) -> dict[str, Any]:
    names = [f"{PREFIX}{i:05d}" for i in range(count)]
    if library.startswith("cb_app"):
        import django

        django.setup()
        from circuitbreaker_app import breaker
        from circuitbreaker_app.store import get_store

        get_store()
        breaker("mem.warmup").call(ok)  # imports and connections before the first reading

        def define() -> list[Any]:
            handles = [breaker(name) for name in names]
            for handle in handles:
                handle.call(ok)
            return handles

    elif library == "pybreaker-memory":
        import pybreaker

        pybreaker.CircuitBreaker().call(ok)

        def define() -> list[Any]:
            breakers = [pybreaker.CircuitBreaker(name=name) for name in names]
            for item in breakers:
                item.call(ok)
            return breakers

    elif library == "circuitbreaker":
        from circuitbreaker import CircuitBreaker

        CircuitBreaker(name="warmup")(ok)()

        def define() -> list[Any]:
            functions = [CircuitBreaker(name=name)(ok) for name in names]
            for function in functions:
                function()
            return functions

    else:
        raise SystemExit(f"unknown library {library!r}")
    before = rss_bytes()
    tracemalloc.start()
    kept = define()
    heap, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after = rss_bytes()
    return {
        "library": library,
        "circuits": len(kept),
        "rss_before": before,
        "rss_after": after,
        "rss_delta": after - before,
        "heap_bytes": heap,
    }


def _create_rows(count: int) -> None:
    from circuitbreaker_app.models import Circuit

    existing = set(Circuit.objects.filter(name__startswith=PREFIX).values_list("name", flat=True))
    Circuit.objects.bulk_create(
        [
            Circuit(name=f"{PREFIX}{i:05d}")
            for i in range(count)
            if f"{PREFIX}{i:05d}" not in existing
        ]
    )


def _redis_usage(url: str, run: str) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    keys = list(client.scan_iter(match=f"cbbench-{run}:*{PREFIX}*", count=1000))
    total = 0
    for key in keys:
        total += int(client.memory_usage(key) or 0)
    return {"keys": len(keys), "bytes": total}


def run(count: int, redis_ok: bool, redis_url: str, run_id: str) -> dict[str, Any]:
    import importlib.util

    _create_rows(count)
    results = []
    notes = []
    for library in MEMORY_LIBRARIES:
        module = {"pybreaker-memory": "pybreaker", "circuitbreaker": "circuitbreaker"}.get(library)
        if module and not importlib.util.find_spec(module):
            notes.append(f"{library}: skipped, {module} is not installed.")
            continue
        if library == "cb_app-redis" and not redis_ok:
            notes.append(f"{library}: skipped, Redis is unreachable.")
            continue
        cache = "redis" if library == "cb_app-redis" else "locmem"
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", library, str(count)],
            cwd=ROOT,
            env=child_env(CB_BENCH_CACHE=cache),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory benchmark of {library} failed:\n{done.stderr[-2000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        if library == "cb_app-redis":
            result["redis"] = _redis_usage(redis_url, run_id)
        results.append(result)
    return {"count": count, "results": results, "notes": notes}


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]))))
