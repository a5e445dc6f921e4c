"""The demo shop: a real HTTP call to its own fake upstream, through ``CircuitSession``.

The demo's views run in the test process; the upstream view is served by a real threaded
WSGI server on the loopback (same settings), so the payment call crosses a real socket.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from asgiref.sync import async_to_sync
from django.core.handlers.wsgi import WSGIHandler
from django.test import AsyncClient, Client

from circuitbreaker_app import State, breaker
from circuitbreaker_app.models import Circuit
from tests.helpers import FakeStore, use_demo_templates
from tests.loopback import _bind_in_range

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("demo_project.urls")]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def demo_server() -> Iterator[int]:
    def bind(port: int) -> WSGIServer:
        return make_server("127.0.0.1", port, WSGIHandler(), _ThreadingWSGIServer, _QuietHandler)

    import threading

    server = _bind_in_range(bind)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def shop(settings):
    use_demo_templates(settings)
    Circuit.objects.create(
        name="payments",
        window_type="count",
        window_size=10,
        minimum_calls=5,
        failure_rate_threshold=50,
        wait_duration=10,
    )
    fake = FakeStore().install()
    with demo_server() as port:
        host = f"127.0.0.1:{port}"
        yield fake, Client(HTTP_HOST=host), AsyncClient(HTTP_HOST=host)


def hits() -> int:
    from django.core.cache import cache

    return cache.get("demo:upstream_hits", 0)


def test_watch_the_circuit_open_and_close(shop):
    fake, client, async_client = shop
    page = client.get("/").content.decode()
    assert "Upstream answered:</strong> charged 9.99" in page
    assert hits() == 1

    client.post("/upstream/", {"mode": "failing"})
    page = client.get("/?times=5").content.decode()
    # 1 success and 4 failures: 80 % of 5 calls opens the circuit; the fifth charge
    # is answered by the fallback without reaching the upstream.
    assert hits() == 4
    assert "5 charges, 1 answered by the fallback" in page
    assert breaker("payments").state is State.OPEN
    assert 'id="state">open<' in page
    assert 'id="retry-after">10.0<' in page
    # the panel tells the story: the window that opened it, and what will close it
    assert "80.0 % failures over 5 calls" in page
    assert "the Celery worker&#x27;s probe" in page or "the Celery worker's probe" in page
    status = client.get("/circuit/").json()  # what the panel polls every second
    assert status["state"] == "open"
    assert status["at_trip"] == {"failure_rate": 80.0, "slow_call_rate": 0.0, "calls": 5}
    assert (status["calls"], status["upstream_hits"], status["retry_after"]) == (0, 4, 10.0)
    assert status["changed"] == "0 s ago"

    page = client.get("/?times=3").content.decode()
    assert hits() == 4  # open: nothing reaches the upstream
    assert "3 charges, 3 answered by the fallback" in page
    assert "CircuitOpenError" in page

    response = client.get("/api/charge/", headers={"accept": "application/json"})
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert json.loads(response.content)["circuit"] == "payments"
    response = async_to_sync(async_client.get)("/api/charge-async/")
    assert response.status_code == 503
    assert b"temporarily unavailable" in response.content
    assert hits() == 4

    client.post("/upstream/", {"mode": "healthy"})
    fake.advance(10)
    page = client.get("/?times=3").content.decode()  # three good trials close it
    assert breaker("payments").state is State.CLOSED
    assert hits() == 3
    assert 'id="state">closed<' in page
    status = client.get("/circuit/").json()
    assert (status["state"], status["at_trip"]) == ("closed", None)
    response = client.get("/api/charge/")
    assert json.loads(response.content) == {
        "upstream_status": 200,
        "status": "charged",
        "amount": "9.99",
        "upstream": "healthy",
    }


def test_refused_connections_and_slow_answers_are_failures(shop):
    _, client, _ = shop
    client.post("/upstream/", {"mode": "slow"})
    page = client.get("/").content.decode()
    assert "ReadTimeout" in page  # the 1 s read timeout fired; the fallback answered
    client.post("/upstream/", {"mode": "refusing"})
    page = client.get("/?times=4").content.decode()
    assert "ConnectionError" in page
    assert breaker("payments").state is State.OPEN  # 5 failures out of 5
    assert hits() == 0  # a refused connection never reached the upstream view
    response = client.get("/api/charge/", headers={"accept": "application/json"})
    assert response.status_code == 503


def test_the_demo_log_lines_carry_a_timestamp():
    import logging
    import re

    from demo_project import settings as demo

    handler = demo.LOGGING["handlers"]["console"]
    formatter = logging.Formatter(demo.LOGGING["formatters"][handler["formatter"]]["format"])
    record = logging.LogRecord("circuitbreaker_app", logging.INFO, __file__, 1, "hello", (), None)
    line = formatter.format(record)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO circuitbreaker_app: hello$", line)


def test_the_async_quote_page_uses_httpx_and_serves_a_stale_stock_line(shop):
    """The price goes through AsyncCircuitTransport("quotes"); the stock line comes from
    last_good while the partner fails and while the "stock" circuit is open."""
    fake, client, _ = shop
    for name in ("quotes", "stock"):
        Circuit.objects.create(
            name=name,
            window_type="count",
            window_size=6,
            minimum_calls=3,
            failure_rate_threshold=50,
            wait_duration=10,
        )
    page = client.get("/quote/").content.decode()
    assert 'id="price-value">12.50 EUR<' in page
    assert "(live)" in page
    level = page.split('id="stock-level">')[1].split("<")[0]
    assert hits() == 2

    client.post("/upstream/", {"mode": "failing", "back": "quote"})
    fake.advance(5)
    for _ in range(2):  # S F F: 2 failures of 3 calls open both circuits
        page = client.get("/quote/").content.decode()
        assert "upstream answered 500" in page  # returned by the transport, and counted
        assert f'id="stock-level">{level}<' in page  # the kept level, marked stale
        assert "stale: last read 5 s ago" in page
    assert hits() == 4
    assert breaker("quotes").state is State.OPEN
    assert breaker("stock").state is State.OPEN

    page = client.get("/quote/").content.decode()
    assert "circuit open, retry in 10 s" in page
    assert f'id="stock-level">{level}<' in page and 'id="stock-stale"' in page
    assert 'id="state-quotes">open<' in page and 'id="state-stock">open<' in page
    assert hits() == 4  # open: neither call reached the partner

    client.post("/upstream/", {"mode": "healthy", "back": "quote"})
    fake.advance(10)
    for _ in range(3):  # trials pass and close both circuits
        page = client.get("/quote/").content.decode()
    assert "12.50 EUR" in page and "(live)" in page
    assert breaker("quotes").state is State.CLOSED
    assert breaker("stock").state is State.CLOSED
