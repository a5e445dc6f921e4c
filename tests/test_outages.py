"""Redis or the database going away under load never fails a guarded call (DESIGN §4).

Each outage is real: the tests start their own ``redis-server`` on a spare port and stop
(``shutdown nosave``) or freeze (``SIGSTOP``) it, and cut PostgreSQL off with a TCP proxy
the test controls (the machine's server keeps running for everyone else). Load comes
from threads calling through the breaker; every call is timed and classified.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from django.db import connections

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import Outcome
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.store import CircuitStore, generation_prefix, get_store, state_key
from tests.conftest import services_required
from tests.loopback import TcpProxy

#: solo: every call is timed (MAX_CALL_SECONDS); not beside other tests that load the machine.
pytestmark = [pytest.mark.solo, pytest.mark.django_db(transaction=True)]

#: Generous bound on any single guarded call while a service is down or hung: one Redis
#: socket timeout (REDIS_TIMEOUT, 0.25 s) at most, plus slack for a loaded 2-core machine.
MAX_CALL_SECONDS = 0.75
FIVE_STRAIGHT = {
    "window_type": "count",
    "window_size": 5,
    "minimum_calls": 5,
    "failure_rate_threshold": 100,
    "wait_duration": 60,
}


def spare_ports() -> range:
    low, _, high = os.environ.get("CB_REDIS_TEST_PORTS", "18750-18799").partition("-")
    return range(int(low), int(high) + 1)


def free_port() -> int:
    for port in spare_ports():
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {spare_ports()}")


# -- a Redis server of our own ---------------------------------------------------------------


class PrivateRedis:
    """``redis-server`` on a spare port, no persistence, started and stopped by the test."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.pidfile = folder / "redis.pid"
        self.frozen = False

    def start(self) -> None:
        subprocess.run(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "yes",
                "--dir", str(self.folder),
                "--pidfile", str(self.pidfile),
                "--logfile", str(self.folder / "redis.log"),
            ],
            check=True,
            timeout=10,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()

    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        self.thaw()
        pid = self.pid()
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "nosave"],
            capture_output=True,
            timeout=10,
        )
        deadline = time.monotonic() + 10
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def freeze(self) -> None:
        """The server hangs: connections are accepted, nothing is answered."""
        os.kill(self.pid(), signal.SIGSTOP)  # type: ignore[arg-type]
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen and self.pid() is not None:
            os.kill(self.pid(), signal.SIGCONT)  # type: ignore[arg-type]
        self.frozen = False


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped by init does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def private_redis(tmp_path, settings):
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        message = "redis-server/redis-cli are not installed (apt-get install redis-server)"
        if services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    server = PrivateRedis(tmp_path)
    server.start()
    settings.CIRCUITBREAKER = {
        **settings.CIRCUITBREAKER,
        "REDIS_URL": server.url,
        "STATE_TTL": 0.2,
    }
    try:
        yield server
    finally:
        server.stop()


# -- load -------------------------------------------------------------------------------------


class UpstreamDown(Exception):
    """The dependency's own error (not the breaker's)."""


@dataclass
class Load:
    """Threads calling ``dependency`` through a breaker; every call timed and classified."""

    name: str
    threads: int = 4
    upstream_down: bool = False
    calls: list[tuple[float, float, str]] = field(default_factory=list)  # (at, seconds, kind)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def dependency(self) -> str:
        if self.upstream_down:
            raise UpstreamDown("503")
        return "ok"

    def _run(self) -> None:
        guarded = breaker(self.name, record=UpstreamDown)
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    guarded.call(self.dependency)
                    kind = "ok"
                except UpstreamDown:
                    kind = "upstream"
                except CircuitOpenError:
                    kind = "rejected"
                except Exception as exc:  # an infrastructure error leaking: a bug
                    kind = f"error: {exc!r}"
                elapsed = time.perf_counter() - started
                with self._lock:
                    self.calls.append((time.monotonic(), elapsed, kind))
                time.sleep(0.001)
        finally:
            connections.close_all()

    @contextlib.contextmanager
    def running(self) -> Iterator[Load]:
        self._stop.clear()
        workers = [threading.Thread(target=self._run) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(30)

    def kinds(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            for at, _, kind in self.calls:
                if since <= at < until:
                    counts[kind] = counts.get(kind, 0) + 1
        return counts

    def slowest(self, since: float = 0.0, until: float = float("inf")) -> float:
        with self._lock:
            return max((s for at, s, _ in self.calls if since <= at < until), default=0.0)

    def errors(self) -> list[str]:
        return [k for k in self.kinds() if k.startswith("error")]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def messages(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def figures(name: str, **values: object) -> None:
    import json

    line = json.dumps({"test": name, **values})
    print(line)
    path = os.environ.get("CB_FLEET_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")


# -- Redis outages ------------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_stopping_under_load_fails_no_call_and_warns_once_per_outage(private_redis, caplog):
    caplog.set_level(logging.WARNING, logger="circuitbreaker_app")
    Circuit.objects.create(name="payments", **FIVE_STRAIGHT)
    load = Load("payments")
    assert breaker("payments").state is State.CLOSED  # loaded while everything is up
    get_store().redis.retry_after = 0.2
    outages = []
    with load.running():
        time.sleep(0.5)
        for _ in range(2):
            down = time.monotonic()
            private_redis.stop()
            time.sleep(1.0)
            private_redis.start()
            up = time.monotonic()
            outages.append((down, up))
            time.sleep(1.0)
    assert load.errors() == []
    kinds = load.kinds()
    assert set(kinds) == {"ok"}, kinds  # not one call failed or was rejected
    assert all(load.kinds(down, up).get("ok", 0) > 50 for down, up in outages)
    assert load.slowest() < MAX_CALL_SECONDS
    assert len(messages(caplog, "unreachable")) == 2  # one per outage, not one per call
    assert len(messages(caplog, "reachable again")) == 2
    # Reconciled: the restarted (empty) server holds the state entry and counts calls again.
    client = redis.Redis.from_url(private_redis.url)
    store = get_store()
    entry = store.cache.get(state_key("payments"))
    assert entry["state"] == "closed"
    assert client.exists(store.redis.make_key(state_key("payments")))
    prefix = generation_prefix("payments", 0, circuit_id=Circuit.objects.get(name="payments").pk)
    window = client.get(store.redis.make_key(f"{prefix}/count"))
    assert window is not None and json.loads(window)[0] > 0  # calls recorded since
    figures(
        "redis_stopped_under_load",
        calls=sum(kinds.values()),
        failed_by_breaker=0,
        slowest_ms=round(load.slowest() * 1000, 1),
        warnings=len(messages(caplog, "unreachable")),
    )


@pytest.mark.redis
def test_with_redis_down_a_process_counts_on_its_own_and_reconciles_on_return(
    private_redis, caplog
):
    caplog.set_level(logging.WARNING, logger="circuitbreaker_app")
    Circuit.objects.create(name="payments", **FIVE_STRAIGHT)
    load = Load("payments", threads=1)
    assert breaker("payments").state is State.CLOSED  # loaded while everything is up
    get_store().redis.retry_after = 0.2
    private_redis.stop()
    load.upstream_down = True
    with load.running():
        assert wait_until(lambda: load.kinds().get("rejected", 0) > 20)
    assert load.errors() == []
    assert load.kinds()["upstream"] == 5  # this process's own count opened the circuit
    assert breaker("payments").state is State.OPEN
    assert list(CircuitEvent.objects.values_list("to_state", flat=True)) == ["open"]
    private_redis.start()  # back, empty: the database's state is published again
    other = CircuitStore()  # another process
    assert other.runtime("payments").status.state is State.OPEN
    assert other.cache.get(state_key("payments"))["generation"] == 1
    assert len(messages(caplog, "unreachable")) == 1


def waiting_episodes(intervals: list[tuple[float, float]]) -> int:
    """How many separate stretches of time the ``(start, end)`` intervals cover."""
    episodes, reach = 0, float("-inf")
    for start, end in sorted(intervals):
        if start > reach:
            episodes += 1
        reach = max(reach, end)
    return episodes


@pytest.mark.redis
def test_a_hung_redis_adds_at_most_a_short_timeout_now_and_then(private_redis, caplog):
    caplog.set_level(logging.WARNING, logger="circuitbreaker_app")
    Circuit.objects.create(name="payments", **FIVE_STRAIGHT)
    load = Load("payments")
    assert breaker("payments").state is State.CLOSED  # loaded while everything is up
    with load.running():
        time.sleep(0.3)
        frozen = time.monotonic()
        private_redis.freeze()
        time.sleep(2.0)
        load.upstream_down = True  # failures must not wait for Redis either
        time.sleep(1.0)
        private_redis.thaw()
        thawed = time.monotonic()
        time.sleep(0.5)
    assert load.errors() == []
    during = load.kinds(frozen, thawed)
    assert during.get("ok", 0) > 100
    # After thousands of successes the shared count window (blocks of window_size calls)
    # trips on the first block of failures: 5 to 9 of them (docs/architecture.md).
    assert 5 <= during.get("upstream", 0) <= 9
    assert during.get("rejected", 0) > 0  # opened on this process's own counts
    slow = [s for at, s, _ in load.calls if frozen <= at < thawed and s > 0.1]
    assert load.slowest(frozen, thawed) < MAX_CALL_SECONDS
    # The calls in flight when it hung wait for the socket timeout; after that one call per
    # retry interval (1 s) tries Redis again, not one per call or per thread. The process's
    # other threads may wait behind that one call, so waits are counted as episodes (calls
    # whose waits overlap wait on the same attempt): at most one per retry interval plus the
    # first, and no more slow calls than every thread waiting in every episode. Without the
    # retry interval every call of the three seconds would wait (hundreds).
    retries = math.ceil((thawed - frozen) / get_store().redis.retry_after)
    episodes = waiting_episodes(
        [(at - s, at) for at, s, _ in load.calls if frozen <= at < thawed and s > 0.1]
    )
    assert episodes <= 1 + retries, f"{episodes} separate waits on the hung server"
    assert len(slow) <= load.threads * (1 + retries), f"{len(slow)} calls waited"
    assert len(messages(caplog, "unreachable")) == 1
    figures(
        "redis_hung_under_load",
        calls=sum(during.values()),
        calls_slower_than_100ms=len(slow),
        slowest_ms=round(load.slowest(frozen, thawed) * 1000, 1),
    )


# -- database outage -------------------------------------------------------------------------


@pytest.fixture
def database_behind_proxy(settings):
    database = settings.DATABASES["default"]
    if not database["ENGINE"].endswith("postgresql"):
        pytest.skip("the database outage is staged with PostgreSQL (CB_DATABASE=postgres)")
    proxy = TcpProxy((database["HOST"], int(database["PORT"])))
    proxy.start()
    connection = connections["default"]
    original = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(proxy.port)
    try:
        yield proxy
    finally:
        proxy.cut()
        connection.close()
        connection.settings_dict["PORT"] = original


@pytest.mark.services
def test_with_the_database_down_calls_go_on_and_transitions_are_saved_on_return(
    database_behind_proxy, settings, caplog
):
    settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "STATE_TTL": 0.2}
    caplog.set_level(logging.INFO, logger="circuitbreaker_app")
    Circuit.objects.create(name="payments", **FIVE_STRAIGHT)
    Circuit.objects.create(name="search", **FIVE_STRAIGHT)
    payments, search = Load("payments", threads=1), Load("search", threads=2)
    for load in (payments, search):
        assert breaker(load.name).state is State.CLOSED  # known to this process
    other = CircuitStore()  # a second process, which will trip during the outage too
    other_runtime = other.runtime("payments")
    database_behind_proxy.cut()
    cut = time.monotonic()
    payments.upstream_down = True
    with search.running():  # a healthy dependency, across several refreshes
        with payments.running():
            assert wait_until(lambda: payments.kinds().get("rejected", 0) > 20)
        time.sleep(0.5)
    assert payments.errors() == [] and search.errors() == []
    assert set(search.kinds()) == {"ok"} and sum(search.kinds().values()) > 100
    assert payments.kinds()["upstream"] == 5
    assert max(payments.slowest(cut), search.slowest(cut)) < MAX_CALL_SECONDS
    assert breaker("payments").state is State.OPEN  # applied here at once...
    assert len(messages(caplog, "database unreachable")) == 1
    assert not messages(caplog, "made while the database was down is saved")
    # The other process counts in the same shared window and trips on its own as well.
    permit = other_runtime.acquire()
    other_runtime.on_result(permit, Outcome.FAILURE, 0.0)
    assert other_runtime.status.state is State.OPEN and other_runtime.unsaved

    restarted = time.time()
    database_behind_proxy.start()  # ...and written when the database returns
    with payments.running():
        assert wait_until(lambda: bool(messages(caplog, "is saved")), timeout=10)
    other_runtime.mark_stale()
    assert other_runtime.status.state is State.OPEN  # its own write lost: it re-read
    assert not other_runtime.unsaved and other_runtime.status.generation == 1
    rows = list(CircuitEvent.objects.values_list("circuit__name", "from_state", "to_state"))
    assert rows == [("payments", "closed", "open")]
    event = CircuitEvent.objects.get()
    # the time it happened, not of the save: whichever process's write won (each retries
    # in the background once the database answers), it was made before the restart (the
    # other process tripped just before it; 50 ms for the shared clock's offset)
    assert event.created_at.timestamp() < restarted + 0.05
    circuit = Circuit.objects.get(name="payments")
    assert (circuit.state, circuit.generation) == ("open", 1)
    assert CircuitStore().runtime("payments").status.state is State.OPEN  # others see it
    # once per process (the two stores), not per call or per refresh
    assert len(messages(caplog, "database unreachable")) == 2
    # each store's background retry finds the database back (on its own backoff)
    assert wait_until(lambda: len(messages(caplog, "database reachable again")) == 2)
    figures(
        "database_down_under_load",
        calls=sum(search.kinds().values()) + sum(payments.kinds().values()),
        failed_by_breaker=0,
        slowest_ms=round(max(payments.slowest(cut), search.slowest(cut)) * 1000, 1),
    )


@pytest.mark.services
def test_a_hung_database_costs_one_bounded_wait_per_outage(database_behind_proxy, settings, caplog):
    """DESIGN §4: a database that accepts connections but never answers costs a guarded
    call at most one DB_TIMEOUT wait per outage per process; transitions apply in memory
    and a background thread writes them when the database answers again."""
    if settings.CACHES["default"]["BACKEND"].endswith("DatabaseCache"):
        pytest.skip("with the database cache, the cache itself is the hung database")
    timeout = 0.5
    settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "STATE_TTL": 0.2, "DB_TIMEOUT": timeout}
    caplog.set_level(logging.INFO, logger="circuitbreaker_app")
    Circuit.objects.create(name="payments", **FIVE_STRAIGHT)
    Circuit.objects.create(name="search", **FIVE_STRAIGHT)
    for name in ("payments", "search"):
        assert breaker(name).state is State.CLOSED  # known to this process
    database_behind_proxy.stall()
    durations: list[float] = []

    def timed(fn: Callable[[], object]) -> None:
        started = time.monotonic()
        with contextlib.suppress(ConnectionError, CircuitOpenError):
            fn()
        durations.append(time.monotonic() - started)

    def down() -> None:
        raise ConnectionError("payments upstream down")

    until = time.monotonic() + 3.0  # 15 refreshes of STATE_TTL
    while time.monotonic() < until:
        timed(lambda: breaker("payments").call(down))  # trips, then rejected
        timed(lambda: breaker("search").call(lambda: "ok"))
        time.sleep(0.01)
    # a circuit first used during the hang: its row cannot be read; decided from settings
    timed(lambda: breaker("inventory").call(lambda: "ok"))
    assert breaker("payments").state is State.OPEN  # applied in memory at once
    waits = [d for d in durations if d > timeout / 2]
    figures(
        "database_hung",
        calls=len(durations),
        bounded_waits=len(waits),
        slowest_ms=round(max(durations) * 1000, 1),
    )
    assert len(waits) == 1  # the transition's write found the hang: the one bounded wait
    assert max(durations) < timeout + MAX_CALL_SECONDS
    assert len(messages(caplog, "database unreachable")) == 1

    database_behind_proxy.resume()  # no more calls: the background retry writes it
    assert wait_until(lambda: bool(messages(caplog, "is saved")), timeout=15)
    assert len(messages(caplog, "database reachable again")) == 1
    rows = list(CircuitEvent.objects.values_list("circuit_name", "from_state", "to_state"))
    assert rows == [("payments", "closed", "open")]
    assert Circuit.objects.get(name="payments").state == "open"


@pytest.mark.postgres
def test_a_slow_but_answering_database_is_not_an_outage(settings, caplog):
    """A transition's write that waits for a row lock longer than DB_TIMEOUT is slow, not
    hung: the server still answers, so the write goes on and nothing is marked down."""
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        pytest.skip("row locks held across connections: staged with PostgreSQL")
    settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "DB_TIMEOUT": 0.3}
    caplog.set_level(logging.WARNING, logger="circuitbreaker_app")
    Circuit.objects.create(name="payments", **FIVE_STRAIGHT)
    guarded = breaker("payments")
    assert guarded.state is State.CLOSED
    locked, release = threading.Event(), threading.Event()

    def hold_the_row() -> None:
        from django.db import connection, transaction

        try:
            with transaction.atomic():
                Circuit.objects.select_for_update().get(name="payments")
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    assert locked.wait(10)
    threading.Timer(1.0, release.set).start()  # three DB_TIMEOUTs of lock wait
    started = time.monotonic()
    for _ in range(5):
        with contextlib.suppress(ConnectionError):
            guarded.call(lambda: (_ for _ in ()).throw(ConnectionError("down")))
    waited = time.monotonic() - started
    holder.join(10)
    assert waited >= 0.9  # the write waited for the lock...
    assert not get_store().db.down  # ...and was not taken for an outage
    assert not messages(caplog, "unreachable")
    assert Circuit.objects.get(name="payments").state == "open"  # written on the call path
    assert list(CircuitEvent.objects.values_list("to_state", flat=True)) == ["open"]
