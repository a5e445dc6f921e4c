"""Redis over real TLS (DESIGN §4c): ``rediss://``, ``rediss+cluster://`` and
``rediss+sentinel://`` against servers that speak nothing else.

Each topology (``tests/topologies.py`` with ``tls=True``: one server, a three-master
Cluster with a TLS bus, a primary + replica + three sentinels with TLS replication) gets a
CA made for it; the site is configured as a user would, with ``REDIS_URL`` and the CA as
``ssl_ca_certs``. Skipped when ``redis-server`` was built without TLS (or openssl is
missing), unless ``REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.checks import check_settings
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.store import CircuitStore, RedisLink, RedisUnavailable, get_store
from circuitbreaker_app.store.backends import redis_link
from circuitbreaker_app.store.backends.redis import RECORD
from tests.conftest import _unavailable, require_redis_binaries
from tests.topologies import (
    TOPOLOGIES,
    LocalRedis,
    LocalSentinel,
    Topology,
    binaries_missing,
    make_certificates,
    redis_tls_missing,
    start,
)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.redis_topology, pytest.mark.django_db(transaction=True)]

#: Opens at the fourth failure in a row; waits long enough for no test to see it half-open.
FOUR_STRAIGHT = {
    "window_type": "count",
    "window_size": 4,
    "minimum_calls": 4,
    "failure_rate_threshold": 100,
    "wait_duration": 300,
}


class Boom(Exception):
    """The guarded dependency's own error."""


def boom() -> None:
    raise Boom("503")


@pytest.fixture(scope="module")
def tls_topologies() -> Iterator:
    """``tls_topologies(kind)``: a TLS-only deployment of ``kind``, started on first use and
    shared by this module's tests; skipped (failed under ``REQUIRE_SERVICES=1``) when the
    installed redis-server cannot speak TLS."""
    started: dict[str, Topology] = {}

    def get(kind: str) -> Topology:
        if kind not in started:
            require_redis_binaries(*(("redis-sentinel",) if kind == "sentinel" else ()))
            if binaries_missing("openssl"):
                _unavailable("openssl not installed (it makes the test's certificates)")
            missing = redis_tls_missing()
            if missing:
                _unavailable(missing)
            started[kind] = start(kind, tls=True)
        return started[kind]

    try:
        yield get
    finally:
        for topology in started.values():
            topology.stop()


@pytest.fixture
def tls_site(tls_topologies, settings, request):
    """The site configured with the ``rediss…://`` URL of the test's topology (its
    parameter), STATE_TTL long enough that no refresh falls between two counted calls."""
    topology = tls_topologies(request.param)
    topology.flush()
    settings.CIRCUITBREAKER = {
        **settings.CIRCUITBREAKER,
        "REDIS_URL": topology.url,
        "STATE_TTL": 60.0,
    }
    yield topology
    get_store().flush()


#: A process of its own: Django on the suite's settings with ``REDIS_URL`` = argv[1], one
#: guarded call of argv[2]; prints whether it was admitted. Its database settings name the
#: suite's non-test database, so what it knows of the circuit comes from Redis.
CHILD = """
import sys

import django

django.setup()
from django.conf import settings

settings.CIRCUITBREAKER = {"REDIS_URL": sys.argv[1], "STATE_TTL": 60.0}
from circuitbreaker_app import CircuitOpenError, breaker

calls = []
try:
    breaker(sys.argv[2]).call(lambda: calls.append(1))
    print(f"admitted, {len(calls)} calls")
except CircuitOpenError:
    print(f"rejected, {len(calls)} calls")
"""


def another_process_calls(name: str, url: str) -> str:
    """What a guarded call of ``name`` does in another process configured with ``url``."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, name],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def masters(topology: Topology) -> list:
    """The servers that hold data: every cluster master, the Sentinel primary, the server."""
    if isinstance(topology, LocalSentinel):
        return [topology.current_primary()]
    return [server for server in topology.servers if server.program == "redis-server"]


class CommandLog:
    """The commands clients sent the data servers (not those a script ran), read with
    ``MONITOR`` over TLS connections of the test's own: :meth:`since` sends each server an
    ``ECHO`` mark and reads its monitor up to it, so it waits for nothing else."""

    def __init__(self, topology: Topology) -> None:
        servers = masters(topology)
        self.admins = [server.client() for server in servers]
        self.monitors = [server.client().monitor() for server in servers]
        for monitor in self.monitors:
            monitor.__enter__()
        self.marks = 0
        self.since()

    def since(self) -> dict[str, int]:
        """The commands sent since the last reading (or since this log was made)."""
        self.marks += 1
        mark = f"cb-tls-mark-{self.marks}"
        seen: Counter[str] = Counter()
        for admin, monitor in zip(self.admins, self.monitors, strict=True):
            admin.echo(mark)
            while (line := monitor.next_command())["command"] != f"ECHO {mark}":
                if line["client_type"] != "lua":
                    seen[line["command"].split(" ", 1)[0].lower()] += 1
        return dict(seen)

    def close(self) -> None:
        for monitor in self.monitors:
            monitor.__exit__()
            monitor.connection_pool.disconnect()
        for admin in self.admins:
            admin.close()


@pytest.mark.parametrize("tls_site", TOPOLOGIES, indirect=True)
def test_failures_over_tls_open_the_circuit_and_another_process_sees_it(
    tls_site, django_assert_num_queries
):
    """Every failure of a guarded call is one round trip (one EVALSHA on the servers), the
    fourth opens the circuit, and a store of its own (another process's view, on its own
    TLS connections) reads the open circuit from Redis without asking the database."""
    assert check_settings() == []  # the URL with its CA is what a site may configure
    Circuit.objects.create(name="payments", **FOUR_STRAIGHT)
    guarded = breaker("payments")
    with pytest.raises(Boom):
        guarded.call(boom)  # loads the state, caches the script
    link = get_store().redis
    assert link is not None and link.url == tls_site.url
    log = CommandLog(tls_site)
    try:
        for _ in range(2):
            before = link.round_trips
            with pytest.raises(Boom):
                guarded.call(boom)
            assert link.round_trips == before + 1
            assert log.since() == {"evalsha": 1}
    finally:
        log.close()
    if link.kind != "cluster":  # the failure path's own connection, not redis-py's pool
        assert isinstance(link._own._sock, ssl.SSLSocket)
    with pytest.raises(Boom):
        guarded.call(boom)
    assert guarded.state is State.OPEN
    with pytest.raises(CircuitOpenError):
        guarded.call(boom)

    other = CircuitStore()
    with django_assert_num_queries(0):  # read from Redis, over TLS
        runtime = other.runtime("payments")
    assert runtime.status.state is State.OPEN
    # Another OS process configured the same way rejects the call: it learns the state
    # from Redis over TLS (it cannot reach this test's database).
    assert another_process_calls("payments", tls_site.url) == "rejected, 0 calls"
    assert CircuitEvent.objects.filter(to_state="open").count() == 1


def _refused_urls(topology: Topology, wrong_ca: str) -> dict[str, str]:
    """The topology's URL with another CA, and without TLS (plain TCP to a TLS port)."""
    right = topology.url
    scheme, _, rest = right.partition("://")
    return {
        "wrong CA": right.replace(topology.tls["ca"], wrong_ca),
        "plain TCP": scheme.replace("rediss", "redis") + "://" + rest.partition("?")[0],
    }


@pytest.mark.parametrize("tls_site", TOPOLOGIES, indirect=True)
@pytest.mark.parametrize("client", ["wrong CA", "plain TCP"])
def test_a_client_without_the_right_tls_is_refused_and_guarded_calls_go_on(
    tls_site, client, settings, caplog, tmp_path
):
    """A process configured with another CA, or without TLS, is refused by the servers:
    one warning names Redis and the reason, and its guarded calls keep working on the
    last known state (the database's) and on the process's own counts (DESIGN §4)."""
    Circuit.objects.create(name="tripped", **FOUR_STRAIGHT)
    Circuit.objects.create(name="healthy", **FOUR_STRAIGHT)
    for _ in range(4):
        with pytest.raises(Boom):
            breaker("tripped").call(boom)  # over TLS, with the right CA
    assert breaker("tripped").state is State.OPEN

    wrong_ca = make_certificates(tmp_path / "other-ca")["ca"]
    url = _refused_urls(tls_site, wrong_ca)[client]
    settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "REDIS_URL": url}
    store = get_store()
    assert store.redis is not None and store.redis.url == url
    with caplog.at_level(logging.WARNING, logger="circuitbreaker_app"):
        with pytest.raises(CircuitOpenError):
            breaker("tripped").call(boom)  # the database's state: never a TLS error
        assert breaker("healthy").call(lambda: "ok") == "ok"
        for _ in range(4):
            with pytest.raises(Boom):
                breaker("healthy").call(boom)  # the user's error, not Redis's
        with pytest.raises(CircuitOpenError):
            breaker("healthy").call(boom)  # tripped on this process's own counts
    warnings = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1, warnings
    (warning,) = warnings
    assert warning.startswith("circuitbreaker: Redis (" + url.partition("?")[0])
    if client == "wrong CA":
        assert "CERTIFICATE_VERIFY_FAILED" in warning, warning
    assert len(warning) < 1000, warning  # the reason, not pages of client settings
    # The servers never saw the failures: a process with the right CA reads only the
    # four that tripped "tripped" (an open circuit) and an empty window for "healthy".
    settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "REDIS_URL": tls_site.url}
    right = CircuitStore()
    healthy = right.runtime("healthy")
    right.refresh(healthy)
    assert healthy.snapshot().failures == 0
    assert right.runtime("tripped").status.state is State.OPEN


def test_a_server_that_wants_client_certificates_takes_them_from_the_url(
    tls_topologies, settings, caplog
):
    """``tls-auth-clients yes``: with ``ssl_certfile``/``ssl_keyfile`` in the URL the
    failures are recorded (and read back by another store); without, the server refuses
    the handshake, which is an outage named in one warning while guarded calls go on."""
    tls_topologies("single")  # skips unless redis-server speaks TLS
    Circuit.objects.create(name="payments", **FOUR_STRAIGHT)
    with LocalRedis(tls=True, client_certificates=True) as server:
        assert "&ssl_certfile=" in server.url and "&ssl_keyfile=" in server.url
        settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "REDIS_URL": server.url}
        assert check_settings() == []
        for _ in range(2):
            with pytest.raises(Boom):
                breaker("payments").call(boom)
        other = CircuitStore()
        runtime = other.runtime("payments")
        other.refresh(runtime)
        assert runtime.snapshot().failures == 2

        without = server.url.partition("&")[0]  # the CA only
        settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "REDIS_URL": without}
        with caplog.at_level(logging.WARNING, logger="circuitbreaker_app"):
            assert breaker("payments").call(lambda: "ok") == "ok"
            with pytest.raises(Boom):
                breaker("payments").call(boom)
        (warning,) = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        # TLS 1.3 checks the client's certificate after the client's side of the handshake:
        # the client reads the server's alert, or, when it writes first, a reset.
        assert "CERTIFICATE_REQUIRED" in warning or "reset by peer" in warning, warning


# -- the failure path's own connection over TLS ----------------------------------------------


@pytest.fixture
def tls_link(tls_topologies) -> Iterator[tuple[RedisLink, Topology]]:
    topology = tls_topologies("single")
    topology.flush()
    link = RedisLink(topology.url, str, timeout=0.1)
    link.retry_after = 0.0
    try:
        yield link, topology
    finally:
        with contextlib.suppress(Exception):
            if link._own is not None:
                link._own.disconnect()
            if link._client is not None:
                link._client.close()


def test_a_script_call_to_a_tls_server_that_stops_answering_times_out_as_an_outage(tls_link):
    """On a TLS socket the script calls' own connection keeps Python's timeouts: with the
    kernel's (``SO_RCVTIMEO``) OpenSSL reads ``EAGAIN`` as "want read" and Python's ssl
    module reads again on a blocking socket, so the call waited for as long as the server
    stayed silent instead of one timeout."""
    link, topology = tls_link
    assert link.evalsha(RECORD, ["bucket"], [1, 1000, -1, -1]) == [1]
    assert isinstance(link._own._sock, ssl.SSLSocket)  # the own path, over TLS
    raised: list[BaseException] = []

    def call() -> None:
        try:
            link.evalsha(RECORD, ["bucket"], [1, 1000, -1, -1])
        except BaseException as exc:  # what it raised is the point
            raised.append(exc)

    process = topology.server.process
    process.send_signal(signal.SIGSTOP)  # the server keeps the connection, answers nothing
    try:
        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        caller.join(5)
        assert not caller.is_alive()  # before the fix: until SIGCONT
    finally:
        process.send_signal(signal.SIGCONT)
    caller.join(5)
    assert len(raised) == 1 and isinstance(raised[0], link.errors), raised
    assert isinstance(raised[0], redis.TimeoutError)
    assert link._own._sock is None  # dropped: it may still hold the late reply
    assert link.evalsha(RECORD, ["bucket"], [1, 1000, -1, -1]) == [3]  # reconnects over TLS
    assert link.round_trips == 3


def test_an_idle_tls_connection_the_server_closed_is_replaced_not_an_outage(tls_link, monkeypatch):
    link, topology = tls_link
    monkeypatch.setattr(redis_link, "IDLE_CHECK", 0.0)  # "idle long enough" at every call
    assert link.evalsha(RECORD, ["bucket"], [1, 1000, -1, -1]) == [1]
    admin = topology.server.client()
    try:
        host, port = link._own._sock.getsockname()[:2]
        assert admin.client_kill(f"{host}:{port}")  # e.g. the server's ``timeout``
    finally:
        admin.close()
    assert link.evalsha(RECORD, ["bucket"], [1, 1000, -1, -1]) == [2]
    assert link.round_trips == 2 and not link._down_until


def test_a_tls_link_that_is_refused_is_skipped_until_the_retry_time(tls_topologies, tmp_path):
    """A certificate the client does not trust fails the handshake at once, and the link
    then skips Redis without I/O (one refusal per ``retry_after``, not one per call)."""
    topology = tls_topologies("single")
    wrong_ca = make_certificates(tmp_path / "other-ca")["ca"]
    link = RedisLink(_refused_urls(topology, wrong_ca)["wrong CA"], str, timeout=0.1)
    with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        link.evalsha(RECORD, ["bucket"], [1, 1000, -1, -1])
    for _ in range(10):
        with pytest.raises(RedisUnavailable):
            link.evalsha(RECORD, ["bucket"], [1, 1000, -1, -1])
    assert link.round_trips == 1
