"""Helpers shared by the benchmark parts: ports, child processes, the upstream, statistics."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = "18800-18899"


def port_range() -> range:
    """Ports this run may bind on 127.0.0.1 (``CB_BENCH_PORTS``, default 18800-18899)."""
    low, _, high = os.environ.get("CB_BENCH_PORTS", DEFAULT_PORTS).partition("-")
    return range(int(low), int(high) + 1)


_handed_out: set[int] = set()


def free_port() -> int:
    """A port of our range that nothing listens on now (and that we have not handed out)."""
    for port in port_range():
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port in {port_range()} (set CB_BENCH_PORTS)")


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def wait_for_port(
    port: int, timeout: float = 30.0, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reachable("127.0.0.1", port, 0.5):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a benchmark child process: ours plus ``extra``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "benchmarks.settings"}
    env.update(extra)
    return env


def stop(process: subprocess.Popen, timeout: float = 5.0) -> None:
    """Ask a child to stop (SIGTERM), then kill it; never leaves it running."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


class UpstreamClient:
    """Steers a :mod:`benchmarks.upstream` process over its control endpoints."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"

    def _control(self, method: str, path: str) -> dict[str, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return json.loads(response.read())
        finally:
            connection.close()

    def state(self) -> dict[str, Any]:
        return self._control("GET", "/_control/state")

    @property
    def hits(self) -> int:
        return int(self.state()["hits"])

    @property
    def failed(self) -> int:
        """Requests answered 503 (a dead dependency's hits, whatever the switch's timing)."""
        return int(self.state()["failed"])

    def mode(self, mode: str) -> dict[str, Any]:
        return self._control("POST", f"/_control/mode?mode={mode}")

    def reset(self) -> None:
        self._control("POST", "/_control/reset")


@contextlib.contextmanager
def upstream(mode: str = "ok") -> Iterator[UpstreamClient]:
    """A loopback upstream in its own process, in ``mode``; stopped on exit."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.upstream", str(port)],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        if not json.loads(line or "{}").get("ready"):
            raise RuntimeError("the upstream did not start")
        client = UpstreamClient(port)
        client.mode(mode)
        yield client
    finally:
        stop(process)


# -- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def redis_available(url: str) -> bool:
    """Whether the Redis at ``url`` answers PING (with a short timeout)."""
    try:
        import redis
    except ImportError:
        return False
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        return bool(client.ping())
    except Exception:
        return False


def delete_run_keys(url: str, run: str) -> int:
    """Delete this run's keys (Django key prefix and pybreaker namespace) from Redis."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"cbbench-{run}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted
