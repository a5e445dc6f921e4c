"""``CircuitTransport`` / ``AsyncCircuitTransport`` against a real loopback server.

Every request that reaches the upstream is counted by the server (``server.hits``); the
breaker's window is read from the circuit's runtime; state changes use the fake clock of
:class:`tests.helpers.FakeStore`. Skipped when httpx is not installed (the extra).
"""

from __future__ import annotations

import pytest
import requests
from asgiref.sync import async_to_sync

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.http import CircuitSession
from circuitbreaker_app.models import Circuit
from tests.helpers import FOUR_STRAIGHT, FakeStore, fake_store_with, record, window_snapshot
from tests.loopback import closed_port, loopback_server
from tests.test_async import watch

httpx = pytest.importorskip("httpx")
from circuitbreaker_app.httpx import AsyncCircuitTransport, CircuitTransport  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake():
    return fake_store_with("payments", **FOUR_STRAIGHT)


@pytest.fixture
def server():
    with loopback_server() as running:
        yield running


def window(name: str = "payments") -> tuple[int, int]:
    """(calls, failures) in the circuit's window as this process sees it."""
    snapshot = window_snapshot(name)
    return snapshot.calls, snapshot.failures


# -- sync: what reaches the upstream, state by state ----------------------------------------


def test_5xx_is_returned_and_counted_and_an_open_circuit_sends_nothing(fake, server):
    server.mode = "fail"
    with httpx.Client(transport=CircuitTransport("payments"), timeout=5) as client:
        for _ in range(4):
            assert client.get(server.url).status_code == 500  # returned to the caller
        assert server.hits == 4
        assert breaker("payments").state is State.OPEN
        for _ in range(10):
            with pytest.raises(CircuitOpenError) as info:
                client.get(server.url)
        assert server.hits == 4  # not one request while open
        assert info.value.circuit == "payments"
        assert info.value.retry_after == pytest.approx(30.0)

        fake.advance(30)
        server.mode = "ok"
        assert client.get(server.url).json() == {"status": "ok"}  # trial 1
        assert client.get(server.url).status_code == 200  # trial 2 closes the circuit
        assert breaker("payments").state is State.CLOSED
        assert server.hits == 6


def test_429_is_returned_and_counted_other_statuses_are_successes(fake, server):
    client = httpx.Client(transport=CircuitTransport("payments"))
    server.mode = "throttle"
    response = client.get(server.url)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
    server.mode = "ok"
    client.get(server.url)
    assert window() == (2, 1)
    assert server.hits == 2


def test_timeouts_and_refused_connections_are_failures_and_reraised(fake, server):
    server.mode = "hang"
    client = httpx.Client(transport=CircuitTransport("payments"), timeout=0.2)
    for _ in range(2):
        with pytest.raises(httpx.ReadTimeout):
            client.get(server.url)
    refused = f"http://127.0.0.1:{closed_port()}/"
    for _ in range(2):
        with pytest.raises(httpx.ConnectError):
            client.get(refused)
    assert breaker("payments").state is State.OPEN
    assert server.hits == 2
    with pytest.raises(CircuitOpenError):
        client.get(server.url)
    assert server.hits == 2


def test_connect_retries_of_the_wrapped_transport_are_one_outcome(fake):
    inner = httpx.HTTPTransport(retries=2)
    client = httpx.Client(transport=CircuitTransport("payments", transport=inner))
    with pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{closed_port()}/")
    assert window() == (1, 1)


def test_a_truncated_body_is_the_callers_and_the_status_line_counted(fake, server):
    server.mode = "truncate"
    client = httpx.Client(transport=CircuitTransport("payments"))
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(server.url)  # the client reads the body after the transport returned
    assert window() == (1, 0)  # 200 arrived: the dependency answered
    assert server.hits == 1


def test_a_streamed_response_is_judged_by_its_status_line(fake, server):
    server.mode = "stream"  # 503 at once, the body held back until released
    client = httpx.Client(transport=CircuitTransport("payments"), timeout=5)
    with client.stream("GET", server.url) as response:
        assert response.status_code == 503
        assert window() == (1, 1)  # counted before a byte of the body was read
        server.release.set()
        assert response.read() == b"{}"
    assert window() == (1, 1)


def test_the_callers_mistakes_are_not_counted(fake, server):
    client = httpx.Client(transport=CircuitTransport("payments"))
    with pytest.raises(httpx.UnsupportedProtocol):
        client.get("ftp://127.0.0.1/file")  # raised by the wrapped transport, inside the guard

    def refuse(request: httpx.Request) -> httpx.Response:
        raise {"bad": httpx.InvalidURL, "local": httpx.LocalProtocolError}[request.url.path[1:]](
            "the caller's mistake"
        )

    mocked = httpx.Client(
        transport=CircuitTransport("payments", transport=httpx.MockTransport(refuse))
    )
    for path in ("bad", "local"):
        with pytest.raises((httpx.InvalidURL, httpx.LocalProtocolError)):
            mocked.get(f"http://127.0.0.1/{path}")
    assert window() == (0, 0)
    assert server.hits == 0


def test_failure_statuses_and_is_failure_replace_the_default_rule(fake, server):
    server.mode = "fail"
    only_503 = httpx.Client(transport=CircuitTransport("payments", failure_statuses={503}))
    only_503.get(server.url)
    assert window() == (1, 0)
    by_body = CircuitTransport("payments", is_failure=lambda response: response.status_code == 500)
    httpx.Client(transport=by_body).get(server.url)
    assert window() == (2, 1)


# -- per-host circuits ------------------------------------------------------------------------


def test_per_host_circuits_are_independent(server):
    fake = FakeStore().install()
    port = server.server_address[1]
    for host in ("127.0.0.1", "localhost"):
        Circuit.objects.create(name=f"http:{host}:{port}", **FOUR_STRAIGHT)
    client = httpx.Client(transport=CircuitTransport())
    server.mode = "fail"
    for _ in range(4):
        client.get(f"http://127.0.0.1:{port}/")
    assert breaker(f"http:127.0.0.1:{port}").state is State.OPEN
    with pytest.raises(CircuitOpenError) as info:
        client.get(f"http://127.0.0.1:{port}/")
    assert info.value.circuit == f"http:127.0.0.1:{port}"
    server.mode = "ok"
    assert client.get(f"http://localhost:{port}/").status_code == 200
    assert breaker(f"http:localhost:{port}").state is State.CLOSED
    assert server.hits == 5
    fake.advance(30)
    assert client.get(f"http://127.0.0.1:{port}/").status_code == 200  # a trial


def test_one_host_is_one_circuit_whichever_client_names_it():
    transport = CircuitTransport()
    session = CircuitSession()
    for url in ("https://münchen.de/a", "https://xn--mnchen-3ya.de/b", "https://MÜNCHEN.de:443/"):
        from_httpx = transport.breaker_for(httpx.Request("GET", url))
        prepared = requests.Request("GET", url).prepare().url
        assert from_httpx.name == session.breaker_for(prepared).name == "http:xn--mnchen-3ya.de"
        assert session.breaker_for(url).name == "http:xn--mnchen-3ya.de"
    assert transport.breaker_for(httpx.Request("GET", "http://[::1]:9000/")).name == "http:::1_9000"


# -- bad options ------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [CircuitTransport, AsyncCircuitTransport])
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"circuit": "no spaces"}, ValueError, "circuit name"),
        ({"circuit": 7}, TypeError, "circuit name"),
        ({"failure_statuses": "500"}, TypeError, "failure_statuses"),
        ({"failure_statuses": [700]}, ValueError, "failure_statuses"),
        ({"failure_statuses": [True]}, TypeError, "failure_statuses"),
        ({"is_failure": 500}, TypeError, "is_failure"),
        ({"failure_statuses": [500], "is_failure": bool}, TypeError, "not both"),
        ({"transport": "http"}, TypeError, "transport"),
        ({"fallback": print}, TypeError, "fallback"),
    ],
)
def test_bad_options_fail_at_construction(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


def test_a_sync_transport_cannot_wrap_an_async_one_and_back():
    with pytest.raises(TypeError, match="transport must be an httpx.*BaseTransport"):
        CircuitTransport(transport=httpx.AsyncHTTPTransport())
    with pytest.raises(TypeError, match="transport must be an httpx.*AsyncBaseTransport"):
        AsyncCircuitTransport(transport=httpx.HTTPTransport())


# -- async ------------------------------------------------------------------------------------


@pytest.fixture
def watched(fake):
    return fake, watch(fake)


def test_async_transport_walks_the_states_without_blocking_the_loop(watched, server):
    fake, cache = watched

    async def scenario() -> list[object]:
        seen: list[object] = []
        async with httpx.AsyncClient(transport=AsyncCircuitTransport("payments")) as client:
            server.mode = "fail"
            for _ in range(4):
                seen.append((await client.get(server.url)).status_code)
            for _ in range(5):
                try:
                    await client.get(server.url)
                except CircuitOpenError as exc:
                    seen.append(exc.state.value)
            seen.append(server.hits)
            fake.advance(30)
            server.mode = "ok"
            seen.extend([(await client.get(server.url)).status_code for _ in range(2)])
        return seen

    assert async_to_sync(scenario)() == [500] * 4 + ["open"] * 5 + [4, 200, 200]
    assert breaker("payments").state is State.CLOSED
    assert server.hits == 6
    assert cache.ops and cache.on_loop == []  # I/O happened, and never on the loop


def test_async_timeouts_refusals_and_429(watched, server):
    _, cache = watched

    async def scenario() -> list[str]:
        seen = []
        transport = AsyncCircuitTransport("payments")
        async with httpx.AsyncClient(transport=transport, timeout=0.2) as client:
            server.mode = "throttle"
            seen.append(str((await client.get(server.url)).status_code))
            server.mode = "hang"
            for url in (server.url, f"http://127.0.0.1:{closed_port()}/"):
                try:
                    await client.get(url)
                except httpx.TransportError as exc:
                    seen.append(type(exc).__name__)
            server.mode = "truncate"
            try:
                await client.get(server.url)
            except httpx.RemoteProtocolError:
                seen.append("truncated")
        return seen

    assert async_to_sync(scenario)() == ["429", "ReadTimeout", "ConnectError", "truncated"]
    assert window() == (4, 3)
    assert server.hits == 3
    assert cache.on_loop == []


def test_async_per_host_circuit_is_created_off_the_loop(server):
    cache = watch(FakeStore().install())
    port = server.server_address[1]

    async def scenario() -> int:
        async with httpx.AsyncClient(transport=AsyncCircuitTransport()) as client:
            return (await client.get(f"http://localhost:{port}/")).status_code

    assert async_to_sync(scenario)() == 200
    assert Circuit.objects.filter(name=f"http:localhost:{port}").exists()  # AUTO_CREATE
    assert server.hits == 1
    assert cache.ops and cache.on_loop == []


def test_async_rejection_opens_no_connection(fake):
    record("payments", "FFFF")
    assert breaker("payments").state is State.OPEN
    opened = []

    class Recording(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            opened.append(request)
            return httpx.Response(200)

    async def scenario() -> str:
        client = httpx.AsyncClient(
            transport=AsyncCircuitTransport("payments", transport=Recording())
        )
        try:
            await client.get("http://127.0.0.1/")
        except CircuitOpenError as exc:
            return exc.circuit
        return "passed"

    assert async_to_sync(scenario)() == "payments"
    assert opened == []
