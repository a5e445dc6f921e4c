"""Translations of what the admin's scripts write: the dashboard and the live state panel
as a browser shows them, with ``LANGUAGE_CODE = "de"`` (no ``LocaleMiddleware``).

tests/test_i18n.py compares the server's HTML; here admin.js and dashboard.js have drawn
the cards, badges, summary and panel, so an English word hard-coded in a script shows up.
"""

from __future__ import annotations

import pytest
from django.utils import translation
from playwright.sync_api import Page, expect

from circuitbreaker_app import State
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import get_store
from tests import test_browser
from tests.helpers import record
from tests.test_browser import (
    _sync_orm_beside_playwright,  # noqa: F401  (fixture)
    browser_context_args,  # noqa: F401  (fixture)
    browser_type_launch_args,  # noqa: F401  (fixture)
    operator,  # noqa: F401  (fixture)
    playwright,  # noqa: F401  (fixture)
)
from tests.test_i18n import our_labels, shown

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TRIP_FAST = {"window_type": "count", "window_size": 10, "minimum_calls": 5}
#: Seconds after which admin.js has redrawn the live state panel from the status endpoint.
PANEL_REFRESH = 5.5


@pytest.fixture
def circuits(db):
    Circuit.objects.create(name="payments", **TRIP_FAST)
    Circuit.objects.create(name="search", slow_call_duration=2.0, **TRIP_FAST)
    Circuit.objects.create(name="mail", **TRIP_FAST)
    record("payments", "SFSFF")  # open, shown "at trip"
    record("search", "SSSF")
    get_store().move_to("mail", State.FORCED_OPEN, "maintenance")
    return {c.name: c for c in Circuit.objects.all()}


def visible_text(page: Page, language: str, settings, url: str, wait: float = 0.0) -> str:
    settings.LANGUAGE_CODE = language
    translation.deactivate()
    page.goto(url)
    expect(page.locator("html")).to_have_attribute("lang", language)
    if wait:
        page.wait_for_timeout(wait * 1000)
    return page.locator("body").inner_text()


@pytest.mark.usefixtures("operator")
@pytest.mark.parametrize("view", ["dashboard", "change"])
def test_what_the_scripts_draw_is_german(
    page: Page,
    live_server,
    circuits,
    settings,
    view,
):
    urls = {
        "dashboard": "/admin/circuitbreaker_app/circuit/dashboard/",
        "change": f"/admin/circuitbreaker_app/circuit/{circuits['payments'].pk}/change/",
    }
    test_browser.log_in(page, live_server, urls[view])
    wait = PANEL_REFRESH if view == "change" else 0.0
    if view == "dashboard":
        expect(page.locator(".cb-card")).to_have_count(3)
    english = visible_text(page, "en", settings, live_server.url + urls[view], wait)
    german = visible_text(page, "de", settings, live_server.url + urls[view], wait)
    if view == "dashboard":
        expect(page.locator(".cb-card")).to_have_count(3)
    found = {msgid for msgid in our_labels() if shown(msgid, english)}
    assert len(found) >= 8, sorted(found)
    assert {msgid for msgid in found if shown(msgid, german)} == set()
