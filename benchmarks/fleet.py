"""A fleet of W processes against a dead loopback upstream, per library.

Each library gets a fresh upstream (:mod:`benchmarks.upstream`) and W fresh workers
(:mod:`benchmarks.fleet_worker`) that call it every ``pace`` seconds through their breaker
("open after 5 consecutive failures", open for ``wait`` seconds). Two cycles:

1. **Dead, then trials.** The upstream answers 200 until every worker has made a call
   (so the whole fleet is running: 16 processes on a busy 2-core machine take up to
   seconds to make their first call, and a worker still starting when the circuit
   half-opens would turn trial calls into dead hits), then 503. Measured: the requests
   it answered 503 until every worker is being rejected (*dead hits*). The upstream then
   *holds* requests (accepts and does not answer): when the circuit lets trial calls
   through, they hang there, so the requests that arrive within ``hold`` seconds are
   exactly the trial calls the fleet admits at once (*half-open trials*). Then it answers
   200 and the trials succeed: *trial ok → all* is the time from the last trial's answer
   reaching its worker until every worker admits calls again (DESIGN §3).
2. **Dead, then healed.** Once every worker passes calls again the upstream goes back to
   503 (a second *dead hits* sample); as soon as every worker is rejected it answers 200
   again (*healed*). Measured: the time from healed to the first worker's first admitted
   call (*circuit closed*) and to every worker's (*whole fleet closed*). The floor of both
   is the remaining open time (``wait``).

A call is *admitted* when it starts and the breaker lets it through: the times of
successes are those of the calls' starts, not of their answers (an upstream flooded by
the first recovered workers answers the later ones late, which is no breaker's doing).
Every wait is bounded; a phase that does not happen in time is reported as such.

Each library runs with W = 4 and W = 16 workers (``FleetOptions.worker_counts``), and
circuitbreaker_app also on a local Redis Cluster and a Sentinel group started for the run
(``FleetOptions.topologies``, with ``tests/topologies.py``; skipped with a note when
``redis-server``/``redis-sentinel`` are missing).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, child_env, stop, upstream

FLEET_LIBRARIES = {
    "cb_app": "circuitbreaker_app, Redis",
    "cb_app-cluster": "circuitbreaker_app, Redis Cluster",
    "cb_app-sentinel": "circuitbreaker_app, Redis Sentinel",
    "pybreaker-memory": "pybreaker, memory",
    "pybreaker-redis": "pybreaker, CircuitRedisStorage",
    "circuitbreaker": "circuitbreaker (@circuit), memory",
}


@dataclass
class FleetOptions:
    #: W of one run; :func:`run` sets it from ``worker_counts``.
    workers: int = 4
    worker_counts: tuple[int, ...] = (4, 16)
    #: Redis topologies circuitbreaker_app also runs on (besides the single server).
    topologies: tuple[str, ...] = ("cluster", "sentinel")
    pace: float = 0.002
    wait: float = 2.0
    hold: float = 0.8
    half_open_max_calls: int = 3
    phase_timeout: float = 15.0


class Fleet:
    """W worker processes and what they last reported."""

    def __init__(
        self,
        library: str,
        circuit: str,
        url: str,
        workdir: Path,
        options: FleetOptions,
        redis_url: str | None = None,
    ):
        self.options = options
        self.go = workdir / f"go-{circuit}"
        self.stop_file = workdir / f"stop-{circuit}"
        for path in (self.go, self.stop_file):
            path.unlink(missing_ok=True)
        extra = {"CB_BENCH_BREAKER_REDIS_URL": redis_url} if redis_url else {}
        env = child_env(CB_BENCH_CACHE="redis", **extra)
        argv = [
            sys.executable,
            "-m",
            "benchmarks.fleet_worker",
            library.partition("-")[0] if library.startswith("cb_app") else library,
            circuit,
            url,
            str(self.go),
            str(self.stop_file),
            str(options.pace),
            str(options.wait),
        ]
        self.processes = [
            subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            for _ in range(options.workers)
        ]
        self.kind: list[str | None] = [None] * options.workers
        self.since: list[float] = [0.0] * options.workers
        self.events: list[list[dict[str, Any]]] = [[] for _ in self.processes]
        self.summaries: list[dict[str, Any]] = [{} for _ in self.processes]
        self.changed = threading.Condition()
        self.threads: list[threading.Thread] = []

    def start(self) -> float:
        for index, process in enumerate(self.processes):
            line = process.stdout.readline() if process.stdout else ""
            if not json.loads(line or "{}").get("ready"):
                raise RuntimeError(f"fleet worker failed to start: {process.stderr.read()}")
            thread = threading.Thread(target=self._read, args=(index,), daemon=True)
            thread.start()
            self.threads.append(thread)
        self.go.touch()
        return time.monotonic()

    def _read(self, index: int) -> None:
        stream = self.processes[index].stdout
        assert stream is not None
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.changed:
                if event.get("done"):
                    self.summaries[index] = event
                else:
                    self.events[index].append(event)
                    self.kind[index] = event["kind"]
                    self.since[index] = _at(event)
                self.changed.notify_all()

    def wait_all(self, kind: str, after: float, timeout: float) -> float | None:
        """When every worker has been seeing ``kind`` since ``after`` (latest change), or None."""

        def ready() -> bool:
            return all(k == kind for k in self.kind) and all(s >= after for s in self.since)

        with self.changed:
            if not self.changed.wait_for(ready, timeout):
                return None
            return max(self.since)

    def first(self, kind: str, after: float, timeout: float) -> tuple[float | None, float | None]:
        """(first, last) time at which each worker first reported ``kind`` after ``after``."""

        def firsts() -> list[float | None]:
            found: list[float | None] = []
            for events in self.events:
                times = [_at(e) for e in events if e["kind"] == kind and _at(e) >= after]
                found.append(min(times) if times else None)
            return found

        with self.changed:
            self.changed.wait_for(lambda: all(t is not None for t in firsts()), timeout)
            times = [t for t in firsts() if t is not None]
        if not times:
            return None, None
        return min(times), (max(times) if len(times) == len(self.processes) else None)

    def back_after(self, trials_started_before: float, until: float) -> tuple[float, float] | None:
        """(last trial answered, every worker admitting) of a half-open period whose trials
        started before ``trials_started_before``; None when a worker never came back.

        A worker is back from the start of the success run it is in at ``until`` (a trial
        worker may be rejected again after its trial, until the circuit closes); a trial
        call that simply went on succeeding counts from the moment its answer came."""
        with self.changed:
            runs = [list(events) for events in self.events]
        trial_ok = [
            e["t"]
            for events in runs
            for e in events
            if e["kind"] == "success" and e["started"] < trials_started_before <= e["t"] <= until
        ]
        if not trial_ok:
            return None
        answered = max(trial_ok)
        back = []
        for events in runs:
            current = [e for e in events if e["t"] <= until]
            if not current or current[-1]["kind"] != "success":
                return None
            back.append(max(_at(current[-1]), answered))
        return answered, max(back)

    def finish(self) -> tuple[list[dict[str, Any]], list[str]]:
        """Stop the workers: their summaries, and what those that failed wrote to stderr
        (a worker still running 10 s after the stop file is stopped, exit status -15)."""
        self.stop_file.touch()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
            stop(process)
        for thread in self.threads:
            thread.join(5)
        errors = [
            f"exit status {process.returncode}: " + process.stderr.read().strip()[-2000:]
            for process in self.processes
            if process.returncode not in (0, None) and process.stderr
        ]
        return self.summaries, errors


def _at(event: dict[str, Any]) -> float:
    """When a worker's outcome began: a success when its call started (was admitted), a
    rejection or failure when it was answered."""
    return event["started"] if event["kind"] == "success" else event["t"]


def _make_circuit(name: str, options: FleetOptions) -> None:
    from circuitbreaker_app.models import Circuit

    Circuit.objects.update_or_create(
        name=name,
        defaults=dict(
            window_type="count",
            window_size=5,
            minimum_calls=5,
            failure_rate_threshold=100,
            wait_duration=options.wait,
            backoff_multiplier=1,
            half_open_max_calls=options.half_open_max_calls,
            trial_mode="live",
        ),
    )


def run_library(
    library: str,
    workdir: Path,
    run_id: str,
    options: FleetOptions,
    redis_url: str | None = None,
) -> dict[str, Any]:
    """One fleet of ``options.workers`` for ``library`` (``cb_app-<topology>``: on the Redis
    deployment at ``redis_url``)."""
    circuit = f"cbbench-{run_id}-fleet-{library}-w{options.workers}"
    cb_app = library.startswith("cb_app")
    if cb_app:
        _make_circuit(circuit, options)
    timeout = options.phase_timeout
    result: dict[str, Any] = {"library": library, "workers": options.workers}
    with upstream("ok") as up:
        fleet = Fleet(library, circuit, up.url, workdir, options, redis_url)
        try:
            go = fleet.start()
            # Cycle 1: every worker running, then dead, then trials held by the upstream.
            running = fleet.wait_all("success", go, timeout)
            result["start_seconds"] = None if running is None else running - go
            before = up.failed
            up.mode("fail")
            dying = time.monotonic()
            rejected_at = fleet.wait_all("rejected", dying, timeout)
            result["dead_hits"] = [up.failed - before]
            result["trip_seconds"] = [None if rejected_at is None else rejected_at - dying]
            held_from = up.hits
            up.mode("hold")
            open_from = time.monotonic()
            first_trial = _wait_hits(up, held_from + 1, options.wait + timeout)
            if first_trial is not None:
                result["open_seconds"] = first_trial - open_from
                time.sleep(options.hold)
                result["trials"] = up.hits - held_from
            else:
                result["trials"] = None
            released = time.monotonic()  # before the switch: held trials answer at once
            up.mode("ok")
            # Every worker was rejected (or holding a trial) at the release: wait until each
            # passes calls again, then read when each started to.
            fleet.wait_all("success", go, timeout)
            time.sleep(0.2)  # a trial worker rejected until the close is then back too
            back = fleet.back_after(released, time.monotonic())
            result["release_to_all_seconds"] = None if back is None else back[1] - back[0]
            # Cycle 2: dead again, then healed as soon as the whole fleet rejects.
            # Counted as 503 answers: hits between reading a count and the switch taking
            # effect in the upstream's process were answered 200 and are not dead hits.
            time.sleep(0.2)
            before = up.failed
            up.mode("fail")
            failing_from = time.monotonic()
            rejected_again = fleet.wait_all("rejected", failing_from, timeout)
            result["trip_seconds"].append(
                None if rejected_again is None else rejected_again - failing_from
            )
            result["dead_hits"].append(up.failed - before)
            healed = time.monotonic()
            up.mode("ok")
            first, last = fleet.first("success", healed, options.wait + timeout)
            result["heal_to_first_seconds"] = None if first is None else first - healed
            result["heal_to_all_seconds"] = None if last is None else last - healed
            result["second_trip_ok"] = rejected_again is not None
        finally:
            summaries, worker_errors = fleet.finish()
        result["calls"] = sum(s.get("calls", 0) for s in summaries)
        result["events"] = [
            [
                {
                    **event,
                    "t": round(event["t"] - go, 4),
                    "started": round(event["started"] - go, 4),
                }
                for event in events
            ]
            for events in fleet.events
        ]
        errors: dict[str, int] = {}
        for summary in summaries:
            for text, count in (summary.get("errors") or {}).items():
                errors[text] = errors.get(text, 0) + count
        result["breaker_errors"] = errors
        result["worker_errors"] = worker_errors
        result["upstream_hits_total"] = up.hits
    if cb_app:
        from circuitbreaker_app.models import CircuitEvent

        result["transitions"] = list(
            CircuitEvent.objects.filter(circuit__name=circuit)
            .order_by("id")
            .values_list("from_state", "to_state")
        )
    return result


def _wait_hits(up: Any, count: int, timeout: float) -> float | None:
    """The time the upstream had seen ``count`` requests (polled every 5 ms), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if up.hits >= count:
            return time.monotonic()
        time.sleep(0.005)
    return None


def run(
    options: FleetOptions, workdir: Path, run_id: str, redis_ok: bool, libraries: list[str]
) -> dict[str, Any]:
    import importlib.util

    results = []
    notes = []
    runnable = []
    # cb_app-<topology> are variants of cb_app that run() adds itself (never on its own).
    for library in [name for name in libraries if not name.startswith("cb_app-")]:
        needs_redis = library.startswith("cb_app") or library == "pybreaker-redis"
        module = {"pybreaker-memory": "pybreaker", "pybreaker-redis": "pybreaker"}.get(
            library, library if library == "circuitbreaker" else None
        )
        if needs_redis and not redis_ok:
            notes.append(f"{library}: skipped, Redis is unreachable.")
            continue
        if module and not importlib.util.find_spec(module):
            notes.append(f"{library}: skipped, {module} is not installed.")
            continue
        runnable.append(library)
    with _topologies(options.topologies if "cb_app" in runnable else (), notes) as topologies:
        for workers in options.worker_counts:
            sized = replace(options, workers=workers)
            for library in runnable:
                variants = [(library, None)]
                if library == "cb_app":
                    variants += [(f"cb_app-{kind}", url) for kind, url in topologies.items()]
                for variant, url in variants:
                    try:
                        result = run_library(variant, workdir, run_id, sized, url)
                    except RuntimeError as exc:  # one failed run must not hide the others
                        notes.append(f"{variant}, W = {workers}: {exc}")
                        continue
                    results.append(result)
                    for index, seconds in enumerate(result["trip_seconds"]):
                        if seconds is not None and seconds > options.wait:
                            notes.append(
                                f"{FLEET_LIBRARIES[variant]}, W = {workers}, outage {index + 1}: "
                                f"the last worker was rejected {seconds:.2f} s after the "
                                f"dependency died, later than the {options.wait:g} s open "
                                "wait, so its dead hits may include half-open trial calls."
                            )
    return {"options": options.__dict__, "results": results, "notes": notes}


@contextlib.contextmanager
def _topologies(kinds: tuple[str, ...], notes: list[str]) -> Iterator[dict[str, str]]:
    """``{kind: REDIS_URL}`` of a local Cluster / Sentinel group started for the run."""
    needed = {
        "cluster": ("redis-server", "redis-cli"),
        "sentinel": ("redis-server", "redis-sentinel"),
    }
    with contextlib.ExitStack() as stack:
        urls = {}
        for kind in kinds:
            missing = [name for name in needed[kind] if shutil.which(name) is None]
            if missing:
                notes.append(
                    f"circuitbreaker_app on {kind}: skipped, {', '.join(missing)} missing."
                )
                continue
            from tests.topologies import running

            urls[kind] = stack.enter_context(running(kind)).url
        yield urls
