"""A bounded HTTP load generator in pure Python, for machines without ``wrk`` (e.g. CI).

Usage: ``python -m benchmarks.loadgen URL CONNECTIONS DURATION MAX_REQUESTS TIMEOUT``.
CONNECTIONS threads each keep one HTTP/1.1 connection open and send GET requests back
to back until DURATION seconds have passed or MAX_REQUESTS have been sent in all. Prints
one JSON object: requests, seconds, requests/s, latency percentiles (ms), non-2xx
responses and errors. It shares the GIL between its threads, so it saturates a server
less than ``wrk`` does: compare guarded with unguarded, never with ``wrk`` figures.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit

from benchmarks.common import percentile


def run(url: str, connections: int, duration: float, max_requests: int, timeout: float) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path or "/"
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"sent": 0, "non_2xx": 0, "errors": 0}
    started = time.perf_counter()
    deadline = started + duration

    def take() -> bool:
        with lock:
            if counts["sent"] >= max_requests:
                return False
            counts["sent"] += 1
            return True

    def client() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        while time.perf_counter() < deadline and take():
            t0 = time.perf_counter()
            try:
                connection.request("GET", target)
                response = connection.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
                with lock:
                    counts["errors"] += 1
                continue
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                if not 200 <= status < 300:
                    counts["non_2xx"] += 1
        connection.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + timeout + 5)
    seconds = time.perf_counter() - started
    return {
        "tool": "python",
        "requests": len(latencies),
        "seconds": seconds,
        "rps": len(latencies) / seconds if seconds else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "non_2xx": counts["non_2xx"],
        "errors": counts["errors"],
    }


def main() -> None:
    url, connections, duration, max_requests, timeout = sys.argv[1:6]
    result = run(url, int(connections), float(duration), int(max_requests), float(timeout))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
