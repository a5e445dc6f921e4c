"""HTTP load on loopback: the benchmark views under gunicorn (2 sync workers).

The views (:mod:`benchmarks.views`) call the loopback upstream, guarded by
``CircuitSession`` or not. The load comes from ``wrk`` when it is installed, otherwise
from :mod:`benchmarks.loadgen` (bounded, pure Python). Every run is bounded in time and
in requests.

* Healthy upstream: requests/s of ``/unguarded/`` and ``/guarded/``, alternated
  (unguarded, guarded, unguarded, guarded, …); the figure is the median of the ratios of
  each guarded run to the unguarded run just before it, so drift cancels out.
* Dead upstream (it accepts connections and never answers; the views' timeout is
  ``dead_timeout`` seconds): latency of ``/unguarded/`` (every request waits for the
  timeout), then ``/guarded/`` is tripped (requests until the whole fleet of gunicorn
  workers answers 503 ``consecutive`` times in a row) and measured while open, with one
  connection per worker like the unguarded case, and again with the healthy case's
  concurrency (where requests also queue in gunicorn's backlog).
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.common import ROOT, child_env, free_port, median, stop, upstream, wait_for_port

CIRCUIT = "bench-http"


@dataclass
class LoadOptions:
    tool: str = "auto"  # auto | wrk | python
    workers: int = 2
    connections: int = 8
    healthy_seconds: float = 3.0
    healthy_rounds: int = 5
    dead_timeout: float = 2.0
    dead_connections: int = 2
    dead_seconds: float = 7.0
    open_seconds: float = 4.0
    max_requests: int = 200_000
    consecutive: int = 20


def _tool(options: LoadOptions) -> str:
    if options.tool == "auto":
        return "wrk" if shutil.which("wrk") else "python"
    if options.tool == "wrk" and not shutil.which("wrk"):
        raise RuntimeError("--load-tool wrk, but wrk is not installed (apt-get install wrk)")
    return options.tool


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"cannot read a wrk duration from {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests, requests/s, p50/p99 (ms), non-2xx and socket errors from ``wrk --latency``."""
    result: dict[str, Any] = {"tool": "wrk", "non_2xx": 0, "errors": 0}
    for line in output.splitlines():
        line = line.strip()
        if match := re.match(r"(50|99)%\s+(\S+)", line):
            result[f"p{match.group(1)}_ms"] = _ms(match.group(2))
        elif match := re.match(r"(\d+) requests in ([\d.]+)(\w+)", line):
            result["requests"] = int(match.group(1))
            result["seconds"] = _ms(match.group(2) + match.group(3)) / 1000
        elif match := re.match(r"Requests/sec:\s+([\d.]+)", line):
            result["rps"] = float(match.group(1))
        elif match := re.match(r"Non-2xx or 3xx responses:\s+(\d+)", line):
            result["non_2xx"] = int(match.group(1))
        elif line.startswith("Socket errors:"):
            result["errors"] = sum(int(n) for n in re.findall(r"\d+", line))
    if "rps" not in result:
        raise ValueError(f"wrk printed no Requests/sec:\n{output}")
    return result


def measure(
    tool: str, url: str, connections: int, seconds: float, max_requests: int, timeout: float
) -> dict[str, Any]:
    """One bounded load run against ``url``."""
    if tool == "wrk":
        threads = max(1, min(2, connections))
        argv = [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={max(1, int(timeout + 0.999))}s",
            "--latency",
            url,
        ]
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + timeout + 30, check=True
        )
        return parse_wrk(done.stdout)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.loadgen",
            url,
            str(connections),
            str(seconds),
            str(max_requests),
            str(timeout),
        ],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=seconds + timeout + 30,
        check=True,
    )
    return json.loads(done.stdout)


def _get(port: int, path: str, timeout: float) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _drain(port: int, workers: int) -> None:
    """Wait until gunicorn has served what the last load run left queued.

    A load generator that stops leaves requests in the listen backlog (sync workers take
    one at a time); they would be served during the next case, with its upstream.
    Sequential requests return only once everything queued before them was accepted.
    """
    for _ in range(2 * workers):
        _get(port, "/unguarded/", 60)


def _make_circuit() -> None:
    from circuitbreaker_app.models import Circuit

    Circuit.objects.update_or_create(
        name=CIRCUIT,
        defaults=dict(
            window_type="count",
            window_size=10,
            minimum_calls=5,
            failure_rate_threshold=50,
            wait_duration=600,
            half_open_max_calls=1,
        ),
    )


def _trip(port: int, options: LoadOptions) -> dict[str, Any]:
    """Send requests to /guarded/ until ``consecutive`` 503 in a row; bounded in time."""
    started = time.monotonic()
    deadline = started + 20 * options.dead_timeout + 20
    sent = streak = 0
    first_503 = None
    while streak < options.consecutive and time.monotonic() < deadline:
        status = _get(port, "/guarded/", options.dead_timeout + 10)
        sent += 1
        if status == 503:
            streak += 1
            first_503 = first_503 or time.monotonic() - started
        else:
            streak = 0
    return {
        "requests": sent,
        "seconds": time.monotonic() - started,
        "first_503_after_s": first_503,
        "tripped": streak >= options.consecutive,
    }


def run(options: LoadOptions, redis_ok: bool) -> dict[str, Any]:
    import importlib.util

    if not importlib.util.find_spec("gunicorn"):
        return {"skipped": "gunicorn is not installed (pip install -e '.[bench]')"}
    tool = _tool(options)
    _make_circuit()
    notes = []
    cache = "redis" if redis_ok else "locmem"
    if not redis_ok:
        notes.append("Redis unreachable: each gunicorn worker kept its own LocMem state.")
    result: dict[str, Any] = {"tool": tool, "options": options.__dict__, "notes": notes}
    with upstream("ok") as up:
        port = free_port()
        env = child_env(
            CB_BENCH_CACHE=cache,
            CB_BENCH_UPSTREAM_URL=up.url,
            CB_BENCH_UPSTREAM_TIMEOUT=str(options.dead_timeout),
        )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                f"--workers={options.workers}",
                f"--bind=127.0.0.1:{port}",
                "--timeout=60",
                "--log-level=warning",
                "--no-control-socket",  # gunicorn ≥ 24 would share ~/.gunicorn/gunicorn.ctl
                "benchmarks.wsgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_port(port, 30, server)
            base = f"http://127.0.0.1:{port}"
            for path in ("/unguarded/", "/guarded/"):  # warm both workers and both paths
                for _ in range(50):
                    status = _get(port, path, 10)
                    if status != 200:
                        raise RuntimeError(f"{path} answered {status} with a healthy upstream")
            # Healthy upstream: alternate the two.
            healthy: dict[str, list[dict[str, Any]]] = {"unguarded": [], "guarded": []}
            for _ in range(options.healthy_rounds):
                for name in ("unguarded", "guarded"):
                    healthy[name].append(
                        measure(
                            tool,
                            f"{base}/{name}/",
                            options.connections,
                            options.healthy_seconds,
                            options.max_requests,
                            10.0,
                        )
                    )
                    _drain(port, options.workers)
            result["healthy"] = healthy
            rps = {name: median([r["rps"] for r in runs]) for name, runs in healthy.items()}
            result["healthy_rps"] = rps
            # Each guarded run against the unguarded run just before it: drift of a shared
            # machine cancels out of the ratio; the figure is the median of the ratios.
            ratios = [
                g["rps"] / u["rps"]
                for u, g in zip(healthy["unguarded"], healthy["guarded"], strict=True)
                if u["rps"]
            ]
            result["healthy_ratios"] = ratios
            result["healthy_ratio"] = median(ratios) if ratios else None
            # Dead upstream: it accepts and never answers.
            up.mode("hold")
            result["dead_unguarded"] = measure(
                tool,
                f"{base}/unguarded/",
                options.dead_connections,
                options.dead_seconds,
                options.max_requests,
                options.dead_timeout + 10,
            )
            result["trip"] = _trip(port, options)
            # Same concurrency as the unguarded case (one connection per worker: latency
            # without queueing in gunicorn's backlog), then the healthy case's concurrency.
            result["dead_guarded"] = measure(
                tool,
                f"{base}/guarded/",
                options.dead_connections,
                options.open_seconds,
                options.max_requests,
                options.dead_timeout + 10,
            )
            _drain(port, options.workers)
            result["dead_guarded_loaded"] = measure(
                tool,
                f"{base}/guarded/",
                options.connections,
                options.open_seconds,
                options.max_requests,
                options.dead_timeout + 10,
            )
            result["upstream_hits"] = up.hits
        finally:
            up.mode("fail")  # frees the held requests
            stop(server, 15)
            errors = server.stderr.read() if server.stderr else ""
            if errors.strip():
                result["server_log_tail"] = errors.strip()[-1500:]
    return result
