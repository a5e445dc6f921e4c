"""A fleet of OS processes sharing PostgreSQL and Redis behaves as one breaker (DESIGN §4).

Four processes run ``tests/fleet_worker.py`` against a loopback HTTP server that counts
the requests reaching it, per half-open period when the workers say which period a trial
belongs to. The bounds asserted are the ones docs/architecture.md promises:

* a dead dependency with "5 consecutive failures": at most 5 + W calls reach it;
* HALF_OPEN with ``half_open_max_calls = N``: exactly N trials per period, 20 periods;
* 8 threads × 4 processes failing at once: one event row and one signal per transition;
* a closed success: 0 queries and on average 0 Redis round trips, in every process.

Set ``CB_FLEET_REPORT=/path/file.jsonl`` to collect the figures of a run.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.signals import state_changed
from circuitbreaker_app.store import get_store
from tests.loopback import serving

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
PERIODS = 20
FIVE_STRAIGHT = {
    "window_type": "count",
    "window_size": 5,
    "minimum_calls": 5,
    "failure_rate_threshold": 100,
}


def report(name: str, **figures: object) -> None:
    """Print a test's figures, and append them to ``CB_FLEET_REPORT`` when set."""
    line = json.dumps({"test": name, **figures})
    print(line)
    path = os.environ.get("CB_FLEET_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")


# -- the upstream --------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: Upstream
    protocol_version = "HTTP/1.1"
    # One packet per response, sent at once (no Nagle + delayed-ACK 40 ms stalls).
    wbufsize = 65536
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        trial = self.headers.get("X-Trial") == "1"
        period = (self.headers.get("X-Circuit", ""), int(self.headers.get("X-Generation") or -1))
        self.server.arrived(period, trial)
        mode = self.server.mode
        status = 500
        if mode == "ok":
            status = 200
        elif trial and mode in ("trial_ok", "trial_fail"):
            time.sleep(self.server.trial_seconds)  # trials overlap, as slow real calls do
            status = 200 if mode == "trial_ok" else 500
        if status >= 500:
            self.server.failed()
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


class Upstream(ThreadingHTTPServer):
    """Counts requests; ``mode``: ok, fail, or trial_ok / trial_fail (trials are slow and
    succeed / fail, other requests fail)."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.mode = "fail"
        self.trial_seconds = 0.15
        self.hits = 0
        self.failed_hits = 0  # requests answered 500 (the dependency was dead)
        # (circuit, half-open generation) -> trial requests
        self.trials: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    def arrived(self, period: tuple[str, int], trial: bool) -> None:
        with self._lock:
            self.hits += 1
            if trial:
                self.trials[period] += 1

    def failed(self) -> None:
        with self._lock:
            self.failed_hits += 1

    def handle_error(self, request: object, client_address: object) -> None:
        pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


@pytest.fixture(scope="module")
def upstream():
    with serving(Upstream) as server:
        yield server


# -- the fleet -----------------------------------------------------------------------------


class Fleet:
    """W worker processes; ``ask`` sends one command to all and returns their answers."""

    def __init__(self, processes: list[subprocess.Popen[str]]) -> None:
        self.processes = processes
        self.lines: list[queue.Queue[str]] = []
        for process in processes:
            lines: queue.Queue[str] = queue.Queue()
            threading.Thread(target=self._read, args=(process, lines), daemon=True).start()
            self.lines.append(lines)
        for index in range(len(processes)):
            ready = self._answer(index, 60)
            assert ready.get("ready") is True, ready

    @staticmethod
    def _read(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put("")

    def _answer(self, index: int, timeout: float) -> dict:
        try:
            line = self.lines[index].get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker {index} did not answer in {timeout} s") from None
        if not line:
            process = self.processes[index]
            process.wait(5)
            raise AssertionError(f"worker {index} died: {process.stderr.read()}")  # type: ignore[union-attr]
        return json.loads(line)

    def send(self, command: dict) -> None:
        for process in self.processes:
            process.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]

    def collect(self, timeout: float = 60) -> list[dict]:
        return [self._answer(index, timeout) for index in range(len(self.processes))]

    def ask(self, command: dict, timeout: float = 60) -> list[dict]:
        self.send(command)
        return self.collect(timeout)

    def stop(self) -> None:
        for process in self.processes:
            try:
                process.stdin.write('{"cmd": "quit"}\n')  # type: ignore[union-attr]
                process.stdin.flush()  # type: ignore[union-attr]
            except OSError:
                pass
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def require_fleet_variant() -> None:
    database = settings.DATABASES["default"]["ENGINE"]
    cache = settings.CACHES["default"]["BACKEND"]
    if not (database.endswith("postgresql") and cache.endswith("RedisCache")):
        pytest.skip("fleet tests run in the PostgreSQL + Redis variant (make test-services)")


def worker_env(**circuitbreaker: object) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CB_DATABASE": "postgres", "CB_CACHE": "redis"}
    env["CB_POSTGRES_NAME"] = settings.DATABASES["default"]["NAME"]
    env["CB_FLEET_SETTINGS"] = json.dumps(circuitbreaker)
    return env


@pytest.fixture(scope="module")
def fleet(upstream, django_db_setup):
    """The worker processes, started once for the module (each test uses new circuits)."""
    require_fleet_variant()
    env = worker_env()
    processes = []
    try:
        for _ in range(WORKERS):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.fleet_worker", upstream.url],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        fleet = Fleet(processes)
        yield fleet
        fleet.stop()
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(5)


def make_circuit(**fields: object) -> str:
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    Circuit.objects.create(name=name, **{**FIVE_STRAIGHT, **fields})
    return name


def events(name: str) -> list[tuple[str, str, int]]:
    return list(
        CircuitEvent.objects.filter(circuit__name=name)
        .order_by("id")
        .values_list("from_state", "to_state", "generation")
    )


def assert_one_chain(rows: list[tuple[str, str, int]]) -> None:
    """Generations 1, 2, 3… each once, every event starting where the previous ended."""
    assert [generation for _, _, generation in rows] == list(range(1, len(rows) + 1))
    for (_, previous_to, _), (from_state, _, _) in zip(rows, rows[1:], strict=False):
        assert from_state == previous_to


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.services
@pytest.mark.multiprocess
@pytest.mark.django_db(transaction=True)
def test_a_dead_dependency_gets_at_most_5_plus_w_calls(fleet, upstream, tmp_path):
    upstream.mode = "fail"
    figures = []
    for repetition in range(3):
        name = make_circuit(wait_duration=60)
        assert {a["state"] for a in fleet.ask({"cmd": "load", "circuit": name})} == {"closed"}
        before = upstream.hits
        go = tmp_path / f"go-{repetition}"
        fleet.send({"cmd": "hammer", "circuit": name, "threads": 1, "go": str(go)})
        go.touch()
        answers = fleet.collect()
        hits = upstream.hits - before
        figures.append(hits)
        assert [a["unexpected"] for a in answers] == [[]] * WORKERS
        assert 5 <= hits <= 5 + WORKERS, f"{hits} calls reached the dead dependency"
        assert sum(a["failures"] for a in answers) == hits
        assert events(name) == [("closed", "open", 1)]
        assert sum(len(a["signals"]) for a in answers) == 1
    report("dead_dependency", workers=WORKERS, calls_reaching_upstream=figures)


@pytest.mark.services
@pytest.mark.multiprocess
@pytest.mark.django_db(transaction=True)
def test_a_dependency_dying_under_healthy_load_gets_at_most_5_plus_w_failing_calls(
    fleet, upstream, tmp_path
):
    """The bound again, but with every process holding a batch of successes when the
    dependency dies (each flushes ~1,000 successes per STATE_TTL)."""
    figures, successes = [], []
    try:
        for repetition in range(3):
            upstream.mode = "ok"
            name = make_circuit(wait_duration=60)
            assert {a["state"] for a in fleet.ask({"cmd": "load", "circuit": name})} == {"closed"}
            before_hits, before_failed = upstream.hits, upstream.failed_hits
            go = tmp_path / f"healthy-{repetition}"
            fleet.send({"cmd": "hammer", "circuit": name, "threads": 1, "go": str(go)})
            go.touch()
            time.sleep(2.0 + 0.3 * repetition)  # different phases against the flushes
            upstream.mode = "fail"
            answers = fleet.collect()
            failed = upstream.failed_hits - before_failed
            figures.append(failed)
            successes.append(upstream.hits - before_hits - failed)
            assert [a["unexpected"] for a in answers] == [[]] * WORKERS
            assert 5 <= failed <= 5 + WORKERS, f"{failed} calls reached the dead dependency"
            assert sum(a["failures"] for a in answers) == failed
            assert events(name) == [("closed", "open", 1)]
    finally:
        upstream.mode = "fail"
    report(
        "dead_dependency_after_healthy_load",
        workers=WORKERS,
        successes_before=successes,
        calls_reaching_dead_upstream=figures,
    )


@pytest.mark.parametrize("trial_result", ["fail", "ok"])
@pytest.mark.services
@pytest.mark.multiprocess
@pytest.mark.django_db(transaction=True)
def test_half_open_admits_exactly_n_trials_across_the_fleet(
    fleet, upstream, tmp_path, trial_result
):
    n = 3
    name = make_circuit(
        wait_duration=0.3, backoff_multiplier=1, max_wait_duration=0.3, half_open_max_calls=n
    )
    fleet.ask({"cmd": "load", "circuit": name})
    upstream.mode = f"trial_{trial_result}"
    go, stop = tmp_path / "go", tmp_path / "stop"
    started = time.monotonic()
    fleet.send({"cmd": "trials", "circuit": name, "threads": 2, "go": str(go), "stop": str(stop)})
    go.touch()
    try:
        deadline = time.monotonic() + 90
        half_open = CircuitEvent.objects.filter(circuit__name=name, to_state="half_open")
        while half_open.count() <= PERIODS and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.touch()
    answers = fleet.collect()
    seconds = time.monotonic() - started
    assert [a["unexpected"] for a in answers] == [[]] * WORKERS
    rows = events(name)
    assert_one_chain(rows)
    periods = [generation for _, to_state, generation in rows if to_state == "half_open"]
    assert len(periods) > PERIODS, f"only {len(periods)} half-open periods in {seconds:.0f} s"
    complete = periods[:PERIODS]  # the last one may have been cut short by the stop
    trials = {g: count for (circuit, g), count in upstream.trials.items() if circuit == name}
    counts = [trials.get(generation, 0) for generation in complete]
    assert counts == [n] * PERIODS, f"trials per half-open period: {counts}"
    assert set(trials) <= set(periods)  # no trial outside a half-open period
    ends = {to for (_, to, g) in rows if g - 1 in complete}
    assert ends == ({"open"} if trial_result == "fail" else {"closed"})
    assert sum(a["trials"] for a in answers) == sum(trials.values())
    assert sum(len(a["signals"]) for a in answers) == len(rows)
    report(
        f"half_open_trials_{trial_result}",
        n=n,
        periods=PERIODS,
        trials_per_period=sorted(set(counts)),
        events=len(rows),
        seconds=round(seconds, 1),
    )


@pytest.mark.services
@pytest.mark.multiprocess
@pytest.mark.django_db(transaction=True)
def test_eight_threads_in_four_processes_failing_at_once_make_one_transition(
    fleet, upstream, tmp_path
):
    upstream.mode = "fail"
    name = make_circuit(wait_duration=60)
    store = get_store()
    rounds, figures = 3, []
    for index in range(rounds):
        if index:
            assert store.move_to(name, State.CLOSED, "reset")
        assert {
            a["state"] for a in fleet.ask({"cmd": "wait_state", "circuit": name, "state": "closed"})
        } == {"closed"}
        before_hits, before_events = upstream.hits, len(events(name))
        go = tmp_path / f"go-{index}"
        fleet.send({"cmd": "hammer", "circuit": name, "threads": 8, "go": str(go)})
        go.touch()
        answers = fleet.collect()
        assert [a["unexpected"] for a in answers] == [[]] * WORKERS
        new = events(name)[before_events:]
        assert [(f, t) for f, t, _ in new] == [("closed", "open")]
        signals = [tuple(s) for a in answers for s in a["signals"]]
        assert signals == [("closed", "open")]
        figures.append(upstream.hits - before_hits)
    rows = events(name)
    assert_one_chain(rows)
    assert Circuit.objects.get(name=name).generation == len(rows) == 2 * rounds - 1
    report("contention_8x4", calls_reaching_upstream_per_trip=figures)


@pytest.mark.services
@pytest.mark.multiprocess
@pytest.mark.django_db(transaction=True)
def test_a_closed_success_costs_no_query_and_on_average_no_round_trip(fleet, upstream):
    upstream.mode = "ok"
    name = make_circuit()
    answers = fleet.ask({"cmd": "closed_costs", "circuit": name, "seconds": 2.5})
    for answer in answers:
        assert answer["queries"] == 0
        assert answer["calls"] > 300
        assert answer["round_trips"] / answer["calls"] < 0.01, answer
    report(
        "closed_success_costs",
        calls=[a["calls"] for a in answers],
        queries=[a["queries"] for a in answers],
        round_trips=[a["round_trips"] for a in answers],
    )


# -- the same races between threads of one process (any variant, no services) -------------


def fail_until_rejected(guarded, threads: int = 8) -> list[object]:
    """``threads`` threads call a failing function at once until each is rejected."""
    barrier = threading.Barrier(threads)
    errors: list[object] = []

    def boom():
        raise ConnectionError("down")

    def run():
        try:
            barrier.wait()
            for _ in range(100):
                try:
                    guarded.call(boom)
                except ConnectionError:
                    continue
                except CircuitOpenError:
                    return
                except Exception as exc:
                    errors.append(exc)
                    return
            errors.append("never rejected")
        finally:
            connections.close_all()  # this thread's own database connection

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    return errors


@pytest.mark.django_db(transaction=True)
def test_threads_of_one_process_failing_at_once_make_one_transition():
    name = make_circuit(wait_duration=60)
    received = []

    def receiver(**kwargs):
        received.append((kwargs["old_state"], kwargs["new_state"]))

    state_changed.connect(receiver)
    try:
        guarded = breaker(name)
        for round_ in range(5):
            if round_:
                assert get_store().move_to(name, State.CLOSED, "reset")
            received.clear()
            assert fail_until_rejected(guarded) == []
            assert received == [(State.CLOSED, State.OPEN)]
    finally:
        state_changed.disconnect(receiver)
    rows = events(name)
    assert_one_chain(rows)
    assert [t for _, t, _ in rows] == ["open", "closed"] * 4 + ["open"]
