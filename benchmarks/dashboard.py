"""What one dashboard poll costs with many circuits: bytes sent and server time.

    python -m benchmarks.dashboard [--circuits 1000] [--polls 20] [--cache locmem|redis]

Builds a fresh SQLite database in a temporary folder (the test suite's settings, so the
admin is installed), defines ``--circuits`` circuits with calls in their windows and a full
sparkline history of samples, logs a staff user in with Django's test client and requests
the dashboard's poll URL the way dashboard.js does: a first poll without a cursor, then
``--polls`` polls each carrying the cursor of the answer before, with one circuit moved
between two polls (the fleet was defined two minutes before) and the samples written
between polls as the beat task would, untimed. Prints the answer sizes,
the median and worst server time (the whole request through the middleware, in this
process) and the number of database queries of one poll.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.dashboard", description=__doc__)
    parser.add_argument("--circuits", type=int, default=1000)
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--cache", choices=("locmem", "redis"), default="locmem")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    return parser.parse_args(argv)


def setup(args: argparse.Namespace, folder: Path) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["CB_DATABASE"] = "sqlite"
    os.environ["CB_SQLITE_PATH"] = str(folder / "dashboard.sqlite3")
    os.environ["CB_CACHE"] = args.cache
    os.environ["CB_REDIS_URL"] = args.redis_url
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def populate(count: int) -> None:
    """``count`` circuits: a few open and forced, the rest closed with calls and history."""
    from datetime import UTC, datetime, timedelta

    from circuitbreaker_app import samples
    from circuitbreaker_app.core import Outcome, State
    from circuitbreaker_app.models import Circuit, CircuitSample
    from circuitbreaker_app.store import get_store

    Circuit.objects.bulk_create(
        [
            Circuit(name=f"svc-{i:04d}", window_type="count", window_size=20, minimum_calls=5)
            for i in range(count)
        ]
    )
    store = get_store()
    for i in range(count):
        runtime = store.runtime(f"svc-{i:04d}")
        for n in range(10):
            permit = runtime.acquire()
            failed = n >= 10 - (i % 4)  # at most 30 %: stays closed
            runtime.on_result(permit, Outcome.FAILURE if failed else Outcome.SUCCESS, 0.01)
    store.flush()
    for i in range(0, count, max(1, count // 5)):
        store.move_to(f"svc-{i:04d}", State.FORCED_OPEN, "benchmark")
    interval = getattr(samples, "INTERVAL", 60)
    history = getattr(samples, "HISTORY", timedelta(hours=1))
    points = int(history.total_seconds() // interval)
    now = datetime.now(tz=UTC).timestamp()
    field = "at" if hasattr(CircuitSample, "at") else "minute"
    start = (now // interval) * interval
    rows = []
    for circuit_id in Circuit.objects.values_list("pk", flat=True):
        for ago in range(1, points):
            when = datetime.fromtimestamp(start - ago * interval, tz=UTC)
            rows.append(
                CircuitSample(
                    circuit_id=circuit_id,
                    **{field: when},
                    calls=10,
                    failures=ago % 3,
                    state="closed",
                )
            )
    CircuitSample.objects.bulk_create(rows, batch_size=5000)
    # A fleet in its steady state: defined and moved a while ago, not in the last seconds.
    earlier = datetime.fromtimestamp(now - 120, tz=UTC)
    Circuit.objects.update(updated_at=earlier)
    Circuit.objects.exclude(changed_at=None).update(changed_at=earlier)


def poll_url() -> tuple[str, str]:
    """The URL dashboard.js polls, and the name of its cursor parameter ('' when none)."""
    from django.urls import NoReverseMatch, reverse

    try:
        return reverse("admin:circuitbreaker_app_circuit_feed"), "cursor"
    except NoReverseMatch:  # before the feed existed the dashboard polled the status
        return reverse("admin:circuitbreaker_app_circuit_status") + "?history=1", ""


def measure(args: argparse.Namespace) -> dict[str, float]:
    import json

    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user = User.objects.create_superuser("bench", password="bench")
    client = Client()
    client.force_login(user)
    url, cursor_name = poll_url()
    response = client.get(url)  # the dashboard's first poll: everything
    first_bytes = len(response.content)
    cursor = json.loads(response.content).get("cursor") if cursor_name else None
    sizes, times, queries = [], [], []
    from circuitbreaker_app import samples
    from circuitbreaker_app.core import State
    from circuitbreaker_app.store import get_store

    for i in range(args.polls):
        time.sleep(0.2)
        # something happens between two polls: one circuit is forced open or reset
        name = f"svc-{(7 * i + 3) % args.circuits:04d}"
        get_store().move_to(name, State.FORCED_OPEN if i % 2 == 0 else State.CLOSED, "bench")
        samples.maybe_record_samples()  # what the beat task does in a worker, untimed
        if i == args.polls - 1:  # the last poll also brings a new period of every circuit
            samples.record_samples(now=get_store().now() + samples.INTERVAL)
        target = f"{url}{'&' if '?' in url else '?'}{cursor_name}={cursor}" if cursor else url
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(target)
            times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
        sizes.append(len(response.content))
        last_bytes = len(response.content)
        queries.append(len(captured.captured_queries))
        if os.environ.get("CB_BENCH_VERBOSE"):
            print(i, len(response.content), f"{times[-1]:.1f} ms", len(captured.captured_queries))
        if cursor_name:
            cursor = json.loads(response.content)["cursor"]
    return {
        "first_bytes": first_bytes,
        "poll_bytes_max": max(sizes),
        "poll_bytes_new_period": last_bytes,
        "poll_ms_median": statistics.median(times),
        "poll_ms_max": max(times),
        "poll_queries_max": max(queries),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="cb-dashboard-") as folder:
        setup(args, Path(folder))
        populate(args.circuits)
        result = measure(args)
    print(f"dashboard poll, {args.circuits} circuits, cache {args.cache}, {args.polls} polls:")
    print(f"  first answer (no cursor): {result['first_bytes'] / 1024:.1f} KiB")
    print(f"  poll answer, largest:     {result['poll_bytes_max'] / 1024:.1f} KiB")
    print(f"  poll with a new period:   {result['poll_bytes_new_period'] / 1024:.1f} KiB")
    print(f"  poll server time:         median {result['poll_ms_median']:.1f} ms, ", end="")
    print(f"max {result['poll_ms_max']:.1f} ms")
    print(f"  poll queries, most:       {result['poll_queries_max']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
