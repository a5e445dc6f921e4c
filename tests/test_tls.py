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
import signal
import ssl
import threading
from collections.abc import Iterator

import pytest
import redis

from circuitbreaker_app.store import RedisLink, RedisUnavailable
from circuitbreaker_app.store.backends import redis_link
from circuitbreaker_app.store.backends.redis import RECORD
from tests.conftest import _unavailable, require_redis_binaries
from tests.topologies import (
    Topology,
    binaries_missing,
    make_certificates,
    redis_tls_missing,
    start,
)

pytestmark = [pytest.mark.redis_topology, pytest.mark.django_db(transaction=True)]


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


def _refused_urls(topology: Topology, wrong_ca: str) -> dict[str, str]:
    """The topology's URL with another CA, and without TLS (plain TCP to a TLS port)."""
    right = topology.url
    scheme, _, rest = right.partition("://")
    return {
        "wrong CA": right.replace(topology.tls["ca"], wrong_ca),
        "plain TCP": scheme.replace("rediss", "redis") + "://" + rest.partition("?")[0],
    }


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
