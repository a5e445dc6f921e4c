"""``CircuitBreakerMiddleware`` through the Django test client, sync and async views.

The circuit is opened for real (failures on a fake clock), so ``Retry-After`` comes from
the breaker's own ``retry_after``, not from a hand-made exception.
"""

from __future__ import annotations

import json
import logging

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from circuitbreaker_app import State, breaker
from circuitbreaker_app.core import CircuitOpenError
from circuitbreaker_app.middleware import CircuitBreakerMiddleware, retry_after_seconds
from circuitbreaker_app.store import get_store
from tests.helpers import TWO_STRAIGHT, fake_store_with

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.urls_http")]

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
VIEWS = ["sync", "async", "async-with"]


@pytest.fixture
def fake():
    return fake_store_with("payments", **TWO_STRAIGHT)


@pytest.fixture
def opened(fake):
    """The ``payments`` circuit opened by two failures, 0.4 s ago: 29.6 s to wait."""
    for _ in range(2):
        with pytest.raises(ConnectionError):
            breaker("payments").call(_down)
    assert breaker("payments").state is State.OPEN
    fake.advance(0.4)
    return fake


def _down() -> None:
    raise ConnectionError("down")


def get(view: str, path: str, **headers: str):
    """GET through the sync client for the sync view, the async client for async views."""
    url = f"/{view}/{path}/"
    if view == "sync":
        return Client().get(url, headers=headers)
    return async_to_sync(AsyncClient().get)(url, headers=headers)


@pytest.mark.parametrize("view", VIEWS)
def test_closed_circuit_passes_through(fake, view):
    response = get(view, "payments")
    assert response.status_code == 200
    assert response.content == b"charged"


@pytest.mark.parametrize("view", VIEWS)
def test_open_circuit_gives_json_503_with_retry_after(opened, view, caplog):
    with caplog.at_level(logging.WARNING):
        response = get(view, "payments", accept="application/json")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"  # 29.6 s, rounded up
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {
        "error": "circuit_open",
        "circuit": "payments",
        "retry_after": 30,
    }
    assert "Accept" in response["Vary"]
    assert "no-store" in response["Cache-Control"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    # once: not again as django.request's "Service Unavailable: /…" error
    assert [r.name for r in warnings] == ["circuitbreaker_app"]
    assert "'payments'" in warnings[0].getMessage()
    assert f"'/{view}/payments/'" in warnings[0].getMessage()


@pytest.mark.parametrize("view", VIEWS)
@pytest.mark.parametrize("accept", [BROWSER_ACCEPT, "*/*", "", "text/html, application/json"])
def test_open_circuit_gives_the_html_page_otherwise(opened, view, accept):
    response = get(view, "payments", accept=accept) if accept else get(view, "payments")
    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "temporarily unavailable" in page
    assert "Please try again in 30 seconds." in page
    assert "<code>payments</code>" in page


@pytest.mark.parametrize("view", VIEWS)
def test_forced_open_omits_retry_after(fake, view):
    get_store().move_to("payments", State.FORCED_OPEN, "test")
    response = get(view, "payments", accept="application/json")
    assert response.status_code == 503
    assert "Retry-After" not in response
    assert json.loads(response.content)["retry_after"] is None
    page = get(view, "payments").content.decode()
    assert "Please try again in a little while." in page


def test_json_preference_is_negotiated_with_quality_values(opened):
    response = get("sync", "payments", accept="text/html;q=0.5, application/json")
    assert response["Content-Type"] == "application/json"
    response = get("sync", "payments", accept="application/json;q=0.5, text/html")
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("view", ["sync", "async"])
def test_other_exceptions_pass_through_untouched(view):
    with pytest.raises(ValueError, match="not a circuit problem"):
        get("boom", view)


def test_the_template_can_be_overridden(opened, settings, tmp_path):
    (tmp_path / "circuitbreaker_app").mkdir()
    (tmp_path / "circuitbreaker_app" / "circuit_open.html").write_text(
        "custom {{ circuit }} {{ retry_after }} {{ state }}"
    )
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    response = get("sync", "payments")
    assert response.status_code == 503
    assert response.content == b"custom payments 30 open"


def test_circuit_names_are_escaped_in_the_page(rf):
    request = rf.get("/", headers={"accept": "text/html"})
    middleware = CircuitBreakerMiddleware(lambda request: None)
    exc = CircuitOpenError("<script>", State.OPEN, 1.2)
    response = middleware.process_exception(request, exc)
    assert b"<script>" not in response.content
    assert b"&lt;script&gt;" in response.content
    assert response["Retry-After"] == "2"


def test_retry_after_rounding():
    assert retry_after_seconds(CircuitOpenError("a", State.OPEN, 0.0)) == 0
    assert retry_after_seconds(CircuitOpenError("a", State.OPEN, 0.001)) == 1
    assert retry_after_seconds(CircuitOpenError("a", State.OPEN, 5.0)) == 5
    assert retry_after_seconds(CircuitOpenError("a", State.HALF_OPEN, None)) is None


def test_middleware_is_sync_and_async_capable():
    async def async_get_response(request):
        return None

    assert CircuitBreakerMiddleware.sync_capable and CircuitBreakerMiddleware.async_capable
    from asgiref.sync import iscoroutinefunction

    assert iscoroutinefunction(CircuitBreakerMiddleware(async_get_response))
    assert not iscoroutinefunction(CircuitBreakerMiddleware(lambda request: None))
