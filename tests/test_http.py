"""``CircuitSession``: what reaches the upstream in each state, what counts, timeouts, retries.

Counts of requests reaching the upstream come from ``responses`` (its ``calls``) or from
the loopback server's hit counter; the breaker's window is read from the circuit's
runtime. State changes use the fake clock of :class:`tests.helpers.FakeStore`.
"""

from __future__ import annotations

import pickle
import threading
import time
from unittest import mock

import pytest
import requests
import responses
import urllib3
from django.db import connections
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.http import (
    DEFAULT_FAILURE_STATUSES,
    DEFAULT_TIMEOUT,
    CircuitSession,
    circuit_for_url,
)
from circuitbreaker_app.models import Circuit
from tests.helpers import FOUR_STRAIGHT, FakeStore, fake_store_with, window_snapshot
from tests.loopback import closed_port, loopback_server

pytestmark = pytest.mark.django_db(transaction=True)

URL = "https://pay.example/charge"


@pytest.fixture
def fake():
    return fake_store_with("payments", **FOUR_STRAIGHT)


@pytest.fixture
def upstream():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        yield mocked


def window(name: str = "payments"):
    """The circuit's window totals as this process sees them (calls, failures, slow)."""
    return window_snapshot(name)


def trip(session: CircuitSession, upstream, url: str = URL) -> None:
    upstream.add(responses.GET, url, status=503)
    for _ in range(4):
        assert session.get(url).status_code == 503
    assert breaker(session.circuit or circuit_for_url(url)).state is State.OPEN


# -- requests reaching the upstream, state by state ---------------------------------------


def test_upstream_sees_every_request_while_closed_none_while_open_and_trials_half_open(
    fake, upstream
):
    session = CircuitSession("payments")
    upstream.add(responses.GET, URL, status=503)
    for _ in range(4):
        response = session.get(URL)
        assert response.status_code == 503  # returned to the caller, and counted
    assert len(upstream.calls) == 4
    assert breaker("payments").state is State.OPEN

    for _ in range(10):
        with pytest.raises(CircuitOpenError) as info:
            session.get(URL)
    assert len(upstream.calls) == 4  # not one request while open
    assert info.value.circuit == "payments"
    assert info.value.retry_after == pytest.approx(30.0)

    fake.advance(30)
    upstream.replace(responses.GET, URL, status=200, json={"status": "charged"})
    assert session.get(URL).json() == {"status": "charged"}  # trial 1
    assert session.get(URL).status_code == 200  # trial 2 closes the circuit
    assert len(upstream.calls) == 6
    assert breaker("payments").state is State.CLOSED
    for _ in range(3):
        session.get(URL)
    assert len(upstream.calls) == 9


def test_a_failed_trial_reopens_after_exactly_one_request(fake, upstream):
    session = CircuitSession("payments")
    trip(session, upstream)
    fake.advance(30)
    assert session.get(URL).status_code == 503  # the trial fails
    assert breaker("payments").state is State.OPEN
    for _ in range(5):
        with pytest.raises(CircuitOpenError):
            session.get(URL)
    assert len(upstream.calls) == 5


def test_half_open_admits_exactly_max_calls_concurrent_trials(fake):
    """Five threads in HALF_OPEN: two trials reach the upstream, three are rejected."""
    with loopback_server() as server:
        server.mode = "fail"
        session = CircuitSession("payments")
        for _ in range(4):
            assert session.get(server.url).status_code == 500
        assert breaker("payments").state is State.OPEN
        fake.advance(30)
        server.mode = "hang"
        results: list[object] = []
        rejected = threading.Semaphore(0)

        def call() -> None:
            try:
                results.append(CircuitSession("payments").get(server.url).status_code)
            except CircuitOpenError as exc:
                results.append(exc.state)
                rejected.release()
            finally:
                connections.close_all()

        threads = [threading.Thread(target=call) for _ in range(5)]
        for thread in threads:
            thread.start()
        assert server.wait_for_hits(4 + 2)
        for _ in range(3):  # the three others are turned away while the trials hang
            assert rejected.acquire(timeout=10)
        server.release.set()
        for thread in threads:
            thread.join(10)
        assert server.hits == 6
        assert sorted(map(str, results)) == ["200", "200", "half_open", "half_open", "half_open"]
        assert breaker("payments").state is State.CLOSED


# -- what counts -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599, 429])
def test_5xx_and_429_are_returned_and_counted_as_failures(fake, upstream, status):
    upstream.add(responses.GET, URL, status=status, body="upstream says no")
    response = CircuitSession("payments").get(URL)
    assert response.status_code == status
    assert response.text == "upstream says no"
    assert (window().calls, window().failures) == (1, 1)


@pytest.mark.parametrize("status", [200, 201, 204, 301, 400, 401, 403, 404, 409, 422])
def test_other_statuses_are_successes(fake, upstream, status):
    upstream.add(responses.GET, URL, status=status)
    session = CircuitSession("payments")
    for _ in range(6):
        assert session.get(URL, allow_redirects=False).status_code == status
    # Six successes; the count window (4) reports what the decision sees: the last four.
    assert (window().calls, window().failures) == (4, 0)
    assert breaker("payments").state is State.CLOSED


def test_failure_statuses_and_is_failure_replace_the_default_rule(fake, upstream):
    upstream.add(responses.GET, URL, status=500)
    upstream.add(responses.GET, URL + "/teapot", status=418)
    only_503 = CircuitSession("payments", failure_statuses={503})
    assert only_503.get(URL).status_code == 500
    assert window().failures == 0
    teapots = CircuitSession("payments", is_failure=lambda response: response.status_code == 418)
    teapots.get(URL + "/teapot")
    teapots.get(URL)
    assert (window().calls, window().failures) == (3, 1)
    assert {429, 500, 599} <= DEFAULT_FAILURE_STATUSES and 404 not in DEFAULT_FAILURE_STATUSES


def test_connection_errors_and_timeouts_are_failures_and_reraised(fake):
    with loopback_server() as server:
        server.mode = "hang"
        session = CircuitSession("payments", timeout=0.2)
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            session.get(server.url)
        assert time.monotonic() - started < 5
        refused = f"http://127.0.0.1:{closed_port()}/"
        for _ in range(2):
            with pytest.raises(requests.ConnectionError):
                session.get(refused)
        assert (window().calls, window().failures) == (3, 3)
        with pytest.raises(requests.ConnectionError):
            session.get(refused)
        assert breaker("payments").state is State.OPEN
        with mock.patch.object(HTTPAdapter, "send") as adapter_send:
            with pytest.raises(CircuitOpenError):
                session.get(server.url)
            with pytest.raises(CircuitOpenError):
                session.get(refused)
        adapter_send.assert_not_called()  # rejected before any network activity
        assert server.hits == 1


def test_fallback_answers_rejections_and_connection_failures_but_not_5xx(fake, upstream):
    seen: list[str] = []

    def fallback(exc: BaseException) -> str:
        seen.append(type(exc).__name__)
        return "queued"

    session = CircuitSession("payments", fallback=fallback)
    upstream.add(responses.GET, URL, body=requests.ConnectionError("refused"))
    upstream.add(responses.GET, URL + "/5xx", status=503)
    assert session.get(URL) == "queued"
    assert session.get(URL + "/5xx").status_code == 503  # a response is still a response
    for _ in range(2):
        session.get(URL)
    assert breaker("payments").state is State.OPEN
    assert session.get(URL) == "queued"
    assert seen == ["ConnectionError"] * 3 + ["CircuitOpenError"]
    assert len(upstream.calls) == 4


# -- timeouts ----------------------------------------------------------------------------


def test_default_timeout_is_applied_unless_the_session_or_request_sets_one(fake, upstream):
    upstream.add(responses.GET, URL)
    CircuitSession("payments").get(URL)
    CircuitSession("payments").get(URL, timeout=None)  # None means "the default", not forever
    CircuitSession("payments", timeout=2).get(URL)
    CircuitSession("payments", timeout=(1, 5)).get(URL, timeout=(0.5, 4))
    CircuitSession("payments", timeout=(1, 5)).get(URL, timeout=7)
    sent = [call.request.req_kwargs["timeout"] for call in upstream.calls]
    assert sent == [DEFAULT_TIMEOUT, DEFAULT_TIMEOUT, (2.0, 2.0), (0.5, 4.0), (7.0, 7.0)]


def test_default_timeout_ends_a_hanging_request(fake):
    with loopback_server() as server:
        server.mode = "hang"
        session = CircuitSession("payments", timeout=(1, 0.2))
        started = time.monotonic()
        with pytest.raises(requests.ReadTimeout):
            session.get(server.url, timeout=None)
        assert time.monotonic() - started < 5
        assert window().failures == 1


# -- retries -----------------------------------------------------------------------------


def mount_retries(session: CircuitSession, **retry: object) -> CircuitSession:
    adapter = HTTPAdapter(max_retries=Retry(backoff_factor=0, **retry))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def test_retries_count_as_one_outcome(fake, upstream):
    upstream.add(responses.GET, URL, status=503)
    session = mount_retries(
        CircuitSession("payments"), total=2, status_forcelist=[503], raise_on_status=False
    )
    assert session.get(URL).status_code == 503
    assert len(upstream.calls) == 3  # the request and two retries
    assert (window().calls, window().failures) == (1, 1)

    raising = mount_retries(CircuitSession("payments"), total=2, status_forcelist=[503])
    with pytest.raises(requests.exceptions.RetryError):
        raising.get(URL)
    assert len(upstream.calls) == 6
    assert (window().calls, window().failures) == (2, 2)


def test_retries_that_succeed_are_one_success(fake, upstream):
    upstream.add(responses.GET, URL, status=503)
    upstream.add(responses.GET, URL, status=200)
    session = mount_retries(CircuitSession("payments"), total=3, status_forcelist=[503])
    assert session.get(URL).status_code == 200
    assert len(upstream.calls) == 2
    assert (window().calls, window().failures) == (1, 0)


def test_no_retry_runs_while_open(fake, upstream):
    session = mount_retries(
        CircuitSession("payments"), total=5, status_forcelist=[503], raise_on_status=False
    )
    upstream.add(responses.GET, URL, status=503)
    for _ in range(4):
        session.get(URL)
    assert len(upstream.calls) == 4 * 6
    assert breaker("payments").state is State.OPEN
    for _ in range(3):
        with pytest.raises(CircuitOpenError):
            session.get(URL)
    assert len(upstream.calls) == 24


def test_connect_retries_against_a_refused_port_count_once(fake):
    attempts = []
    connect = urllib3.connection.HTTPConnection.connect

    def counted(self: urllib3.connection.HTTPConnection) -> None:
        attempts.append(self.port)
        connect(self)

    session = mount_retries(CircuitSession("payments"), total=3, connect=3)
    with mock.patch.object(urllib3.connection.HTTPConnection, "connect", counted):
        with pytest.raises(requests.ConnectionError):
            session.get(f"http://127.0.0.1:{closed_port()}/")
    assert len(attempts) == 4  # one attempt and three retries...
    assert (window().calls, window().failures) == (1, 1)  # ...one outcome


# -- redirects, per-host circuits --------------------------------------------------------


def test_a_redirect_chain_is_one_outcome(fake, upstream):
    upstream.add(responses.GET, URL, status=302, headers={"Location": URL + "/final"})
    upstream.add(responses.GET, URL + "/final", status=200)
    assert CircuitSession("payments").get(URL).status_code == 200
    assert len(upstream.calls) == 2
    assert window().calls == 1


def test_per_host_circuits_are_independent_and_created_on_first_use(upstream):
    FakeStore().install()
    session = CircuitSession()
    a, b = "https://a.example/x", "https://b.example/y"
    upstream.add(responses.GET, b, status=200)
    upstream.add(responses.GET, a, status=503)
    for _ in range(25):  # default settings: window 20, minimum 10, 50 %
        try:
            session.get(a)
        except CircuitOpenError:
            break
    assert breaker("http:a.example").state is State.OPEN
    with pytest.raises(CircuitOpenError) as info:
        session.get(a)
    assert info.value.circuit == "http:a.example"
    assert session.get(b).status_code == 200
    assert breaker("http:b.example").state is State.CLOSED
    assert set(Circuit.objects.values_list("name", flat=True)) >= {
        "http:a.example",
        "http:b.example",
    }


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"circut": "payments"}, TypeError, "circut"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": 0}, ValueError, "greater than 0"),
        ({"timeout": (1, -2)}, ValueError, "timeout"),
        ({"timeout": float("inf")}, ValueError, "finite"),
        ({"timeout": None}, TypeError, "timeout"),
        ({"timeout": "3"}, TypeError, "timeout"),
        ({"timeout": (1, 2, 3)}, TypeError, "pair"),
        ({"timeout": True}, TypeError, "timeout"),
        ({"fallback": "queued"}, TypeError, "fallback"),
        ({"is_failure": 500}, TypeError, "is_failure"),
        ({"failure_statuses": "500"}, TypeError, "failure_statuses"),
        ({"failure_statuses": [700]}, ValueError, "failure_statuses"),
        ({"failure_statuses": ["500"]}, TypeError, "failure_statuses"),
        ({"failure_statuses": [500], "is_failure": bool}, TypeError, "not both"),
        ({"circuit": "no spaces allowed"}, ValueError, "circuit name"),
        ({"circuit": 7}, TypeError, "circuit name"),
    ],
)
def test_bad_session_options_fail_clearly(kwargs, error, match):
    with pytest.raises(error, match=match):
        CircuitSession(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timeout": -1}, ValueError),
        ({"timeout": (3, 0)}, ValueError),
        ({"timeout": "soon"}, TypeError),
        ({"timeot": 3}, TypeError),
    ],
)
def test_bad_request_arguments_fail_before_the_breaker_or_the_network(
    fake, upstream, kwargs, error
):
    upstream.add(responses.GET, URL)
    with pytest.raises(error):
        CircuitSession("payments").get(URL, **kwargs)
    assert len(upstream.calls) == 0
    assert window().calls == 0


def test_a_request_error_of_the_callers_own_is_ignored(fake):
    session = CircuitSession("payments")
    with pytest.raises(requests.exceptions.InvalidSchema):
        session.send(requests.Request("GET", "gopher://pay.example/").prepare())
    assert window().calls == 0


# -- malformed responses ------------------------------------------------------------------


def test_invalid_json_is_the_callers_problem(fake, upstream):
    upstream.add(responses.GET, URL, body="<html>not json</html>", status=200)
    response = CircuitSession("payments").get(URL)
    with pytest.raises(requests.JSONDecodeError):
        response.json()
    assert (window().calls, window().failures) == (1, 0)
    assert breaker("payments").state is State.CLOSED


def test_a_truncated_body_propagates_and_leaves_the_breaker_consistent(fake):
    with loopback_server() as server:
        session = CircuitSession("payments")
        server.mode = "fail"
        for _ in range(4):
            session.get(server.url)
        fake.advance(30)
        server.mode = "truncate"
        for _ in range(2):  # both half-open trials end in a broken body...
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                session.get(server.url)
        # ...which the breaker counts as answers (DESIGN §1): the trials closed the circuit.
        assert breaker("payments").state is State.CLOSED
        server.mode = "ok"
        assert session.get(server.url).json() == {"status": "ok"}
        assert server.hits == 7


def test_a_raising_is_failure_predicate_hands_the_trial_permit_back(fake, upstream):
    session = CircuitSession("payments")
    trip(session, upstream)
    fake.advance(30)

    def broken(response: requests.Response) -> bool:
        raise KeyError("predicate bug")

    with pytest.raises(KeyError):
        CircuitSession("payments", is_failure=broken).get(URL)
    upstream.replace(responses.GET, URL, status=200)
    # Both trial permits are free again: two good trials close the circuit.
    session.get(URL)
    session.get(URL)
    assert breaker("payments").state is State.CLOSED


def test_session_survives_pickling(fake, upstream):
    upstream.add(responses.GET, URL, status=500)
    session = pickle.loads(pickle.dumps(CircuitSession("payments", timeout=2)))
    assert (session.circuit, session.timeout) == ("payments", (2.0, 2.0))
    session.get(URL)
    assert window().failures == 1
