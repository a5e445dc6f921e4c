"""One process of the fleet driven by tests/test_fleet.py (and tests/test_fork.py).

Usage: ``python -m tests.fleet_worker UPSTREAM_URL``. Settings come from the environment,
as for ``tests/mp_worker.py`` (``CB_DATABASE``/``CB_POSTGRES_NAME``, ``CB_CACHE``/
``CB_REDIS_URL``), plus ``CB_FLEET_SETTINGS``: JSON merged into ``CIRCUITBREAKER``.

The worker prints ``{"ready": true}``, then reads one JSON command per line on stdin and
answers each with one JSON line on stdout:

* ``{"cmd": "load", "circuit": C}``: load the circuit (first use reads the database);
* ``{"cmd": "wait_state", "circuit": C, "state": S}``: until this process sees state S;
* ``{"cmd": "hammer", "circuit": C, "threads": T, "go": FILE}``: after FILE exists, T
  threads call the upstream through ``breaker(C)`` until each sees a rejection;
* ``{"cmd": "trials", "circuit": C, "threads": T, "go": FILE, "stop": FILE}``: T threads
  acquire permits and call the upstream until STOP exists, sending ``X-Circuit``,
  ``X-Generation`` and ``X-Trial`` so the upstream can count each half-open period's trials;
* ``{"cmd": "closed_costs", "circuit": C, "seconds": S}``: successful calls for S seconds,
  counting database queries and Redis round trips;
* ``{"cmd": "paced", "circuit": C, "pace": P, "go": FILE, "stop": FILE, "started": DIR}``:
  one call through ``breaker(C)`` every P seconds until STOP exists (a file named by the
  process id in DIR says the first call is done), each sending ``X-Circuit``,
  ``X-Generation`` and ``X-Trial`` for the state it was admitted in; answers with the
  ``time.monotonic()`` of the first call admitted in each generation (one clock for every
  process of the machine, network namespaces included), and the breaker's warnings
  (e.g. "Redis … unreachable": the process decided on its own counts for a while);
* ``{"cmd": "quit"}``.

Every answer carries ``signals``: the ``state_changed`` signals this process has sent
since its previous answer, as ``[old, new]`` pairs.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import sys
import threading
import time
from urllib.parse import urlsplit

import django

DEADLINE = 30.0


class UpstreamError(Exception):
    """The upstream answered 5xx."""


class Upstream:
    """A keep-alive HTTP connection per thread to the test's loopback server."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.local = threading.local()

    def get(self, headers: dict[str, str] | None = None) -> int:
        for attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=10
                )
            try:
                conn.request("GET", "/", headers=headers or {})
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
                continue
            if response.status >= 500:
                raise UpstreamError(response.status)
            return response.status
        raise AssertionError("unreachable")


def wait_for(path: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no go file {path}")
        time.sleep(0.001)


class Timeline:
    """What one paced worker did and saw, for the test to explain a bound it broke.

    Lines ``[t, what, ...]`` with ``t`` the ``time.monotonic()`` (one clock for every
    process of the machine): ``call`` (admitted: state, generation, seconds since this
    process last read the shared state, and the outcome once known), ``reject`` (the
    first rejection of a run, with state and generation), ``write`` (an outcome sent to
    the shared window: seconds it took, failures/calls it returned, or ``None`` when
    Redis was unreachable and the process decided on its own counts) and ``read`` (a
    refresh of the snapshot: the state and generation it brought).
    """

    def __init__(self, store: object, runtime: object) -> None:
        self.store, self.runtime = store, runtime
        self.lines: list[list[object]] = []
        self.read_at = time.monotonic()
        self.rejecting = False
        self.call: list[object] | None = None
        self.add_outcome = store.add_outcome  # type: ignore[attr-defined]
        self.refresh = store.refresh  # type: ignore[attr-defined]
        self.persist = store.persist_transition  # type: ignore[attr-defined]
        self.reload = store.reload  # type: ignore[attr-defined]
        store.add_outcome = self._add_outcome  # type: ignore[attr-defined]
        store.refresh = self._refresh  # type: ignore[attr-defined]
        store.persist_transition = self._persist  # type: ignore[attr-defined]
        store.reload = self._reload  # type: ignore[attr-defined]

    def close(self) -> None:
        for name in ("add_outcome", "refresh", "persist_transition", "reload"):
            delattr(self.store, name)

    def admitted(self, status: object) -> None:
        now = time.monotonic()
        state, generation = status.state.value, status.generation  # type: ignore[attr-defined]
        self.call = [round(now, 4), "call", state, generation, round(now - self.read_at, 3)]
        self.lines.append(self.call)
        self.rejecting = False

    def ended(self, outcome: str) -> None:
        if self.call is not None:
            self.call.append(outcome)
            self.call = None

    def rejected(self) -> None:
        if not self.rejecting:
            status = self.runtime._status  # type: ignore[attr-defined]
            now = round(time.monotonic(), 4)
            self.lines.append([now, "reject", status.state.value, status.generation])
            self.rejecting = True

    def _add_outcome(self, runtime, change, known, tally=None):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        value = self.add_outcome(runtime, change, known, tally)
        took = time.monotonic() - started
        seen = None
        if isinstance(value, list):
            seen = [sum(value[2::3]), sum(value[1::3])]  # failures, calls in the window
        elif value is not None:
            seen = value
        self.lines.append([round(started, 4), "write", round(took, 4), seen])
        return value

    def _persist(self, runtime, new, reason, snapshot, actor=None):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        old = runtime._status
        won = self.persist(runtime, new, reason, snapshot, actor)
        took = round(time.monotonic() - started, 4)
        move = f"{old.state.value}@{old.generation}->{new.state.value}@{new.generation}"
        self.lines.append([round(started, 4), "move", took, move, won])
        return won

    def _reload(self, runtime) -> None:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        self.reload(runtime)
        self.read_at = time.monotonic()
        status = runtime._status
        took = round(self.read_at - started, 4)
        self.lines.append(
            [round(started, 4), "db-read", took, status.state.value, status.generation]
        )

    def _refresh(self, runtime, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        started = time.monotonic()
        self.refresh(runtime, *args, **kwargs)
        self.read_at = time.monotonic()
        status = runtime._status
        took = round(self.read_at - started, 4)
        self.lines.append([round(started, 4), "read", took, status.state.value, status.generation])


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    from django.conf import settings

    extra = json.loads(os.environ.get("CB_FLEET_SETTINGS", "{}"))
    settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, **extra}
    django.setup()

    from django.db import connection

    from circuitbreaker_app import CircuitOpenError, State, breaker
    from circuitbreaker_app.core import Outcome
    from circuitbreaker_app.signals import state_changed
    from circuitbreaker_app.store import get_store

    upstream = Upstream(sys.argv[1])
    signals: list[tuple[str, str]] = []
    lock = threading.Lock()

    def on_change(name: str, old_state: State, new_state: State, **kwargs: object) -> None:
        with lock:
            signals.append((str(old_state), str(new_state)))

    state_changed.connect(on_change, weak=False)

    def hammer(command: dict) -> dict:
        guarded = breaker(command["circuit"], record=(UpstreamError, OSError))
        wait_for(command["go"])
        counts = {"failures": 0, "unexpected": []}

        def run() -> None:
            deadline = time.monotonic() + DEADLINE
            while time.monotonic() < deadline:
                try:
                    guarded.call(upstream.get)
                except CircuitOpenError:
                    return
                except UpstreamError:
                    with lock:
                        counts["failures"] += 1
                except Exception as exc:  # anything else is a bug the test reports
                    with lock:
                        counts["unexpected"].append(repr(exc))
                    return
            with lock:
                counts["unexpected"].append("never rejected")

        threads = [threading.Thread(target=run) for _ in range(command["threads"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return counts

    def trials(command: dict) -> dict:
        runtime = get_store().runtime(command["circuit"])
        wait_for(command["go"])
        counts = {"trials": 0, "other": 0, "unexpected": []}

        def run() -> None:
            while not os.path.exists(command["stop"]):
                try:
                    permit = runtime.acquire()
                except CircuitOpenError:
                    time.sleep(0.002)
                    continue
                trial = permit.trial_slot is not None
                headers = {
                    "X-Circuit": command["circuit"],
                    "X-Generation": str(permit.generation),
                    "X-Trial": str(int(trial)),
                }
                started = time.perf_counter()
                try:
                    upstream.get(headers)
                except UpstreamError:
                    outcome = Outcome.FAILURE
                except Exception as exc:
                    with lock:
                        counts["unexpected"].append(repr(exc))
                    outcome = Outcome.IGNORED
                else:
                    outcome = Outcome.SUCCESS
                runtime.on_result(permit, outcome, time.perf_counter() - started)
                with lock:
                    counts["trials" if trial else "other"] += 1

        threads = [threading.Thread(target=run) for _ in range(command["threads"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return counts

    def closed_costs(command: dict) -> dict:
        guarded = breaker(command["circuit"], record=(UpstreamError, OSError))
        guarded.call(upstream.get)  # the first use loads the circuit
        store = get_store()
        queries = []

        def count_query(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
            queries.append(sql)
            return execute(sql, params, many, context)

        calls = 0
        before = store.redis.round_trips
        deadline = time.monotonic() + command["seconds"]
        with connection.execute_wrapper(count_query):
            while time.monotonic() < deadline:
                guarded.call(upstream.get)
                calls += 1
        return {
            "calls": calls,
            "queries": len(queries),
            "round_trips": store.redis.round_trips - before,
        }

    def wait_state(command: dict) -> dict:
        guarded = breaker(command["circuit"])
        deadline = time.monotonic() + DEADLINE
        while guarded.state.value != command["state"]:
            if time.monotonic() > deadline:
                return {"error": f"still {guarded.state.value}"}
            time.sleep(0.005)
        return {"state": guarded.state.value}

    def paced(command: dict) -> dict:
        name = command["circuit"]
        guarded = breaker(name, record=(UpstreamError, OSError))
        store = get_store()
        runtime = store.runtime(name)
        first: dict[str, float] = {}
        counts = {"success": 0, "failure": 0, "rejected": 0}
        unexpected: list[str] = []
        timeline = Timeline(store, runtime)

        def call() -> int:
            status = runtime.entry.status  # the state this call was admitted in
            first.setdefault(str(status.generation), time.monotonic())
            timeline.admitted(status)
            trial = status.state is State.HALF_OPEN
            headers = {
                "X-Circuit": name,
                "X-Generation": str(status.generation),
                "X-Trial": str(int(trial)),
            }
            return upstream.get(headers)

        warnings: list[str] = []
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: warnings.append(record.getMessage()[:200])  # type: ignore[method-assign]
        logging.getLogger("circuitbreaker_app").addHandler(handler)
        pace = float(command["pace"])
        wait_for(command["go"])
        deadline = time.monotonic() + 2 * DEADLINE
        calls = 0
        while not os.path.exists(command["stop"]) and time.monotonic() < deadline:
            if calls == 1:
                open(os.path.join(command["started"], str(os.getpid())), "w").close()
            calls += 1
            started = time.monotonic()
            try:
                guarded.call(call)
                counts["success"] += 1
                timeline.ended("S")
            except CircuitOpenError:
                counts["rejected"] += 1
                timeline.rejected()
            except UpstreamError:
                counts["failure"] += 1
                timeline.ended("F")
            except Exception as exc:  # anything else is a bug the test reports
                unexpected.append(repr(exc))
                break
            time.sleep(max(0.0, pace - (time.monotonic() - started)))
        logging.getLogger("circuitbreaker_app").removeHandler(handler)
        timeline.close()
        return {
            "first_admitted": first,
            "timeline": timeline.lines,
            **counts,
            "unexpected": unexpected,
            "warnings": warnings,
        }

    handlers = {
        "load": lambda c: {"state": breaker(c["circuit"]).state.value},
        "wait_state": wait_state,
        "hammer": hammer,
        "trials": trials,
        "closed_costs": closed_costs,
        "paced": paced,
    }
    print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "quit":
            break
        answer = handlers[command["cmd"]](command)
        with lock:
            answer["signals"] = list(signals)
            signals.clear()
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
