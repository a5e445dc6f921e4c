"""A real browser against a live server: Playwright driving Debian's /usr/bin/chromium.

Run with ``pytest -m browser``. Screenshots land in pytest-playwright's output folder
(``--output``, default ``test-results/``, which that plugin empties when a session starts);
the README's ``docs/admin-changelist.png`` and ``docs/dashboard.png`` are copies of the
ones ``test_screenshots_for_the_readme`` takes.
"""

from __future__ import annotations

import math
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from playwright.sync_api import Page, expect

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.models import Circuit, CircuitEvent, CircuitSample
from circuitbreaker_app.samples import INTERVAL, period_of
from circuitbreaker_app.store import get_store
from tests.helpers import record, use_demo_templates

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
GREEN, RED, GREY = "rgb(46, 125, 50)", "rgb(198, 40, 40)", "rgb(97, 97, 97)"
DOT_GREEN = "rgb(102, 187, 106)"
TRIP_FAST = {
    "window_type": "count",
    "window_size": 10,
    "minimum_calls": 5,
    "failure_rate_threshold": 50,
    "wait_duration": 600,
}


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright's launch arguments, pointed at Debian's chromium."""
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1280, "height": 720}}


@pytest.fixture(scope="session")
def playwright(django_db_setup, playwright):
    """pytest-playwright's ``playwright``, started after the test database exists."""
    return playwright


@pytest.fixture
def results(pytestconfig) -> Path:
    """Where screenshots go: pytest-playwright's output folder."""
    folder = Path(pytestconfig.getoption("--output")).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module", autouse=True)
def _sync_orm_beside_playwright():
    # Playwright's sync API runs an event loop in this thread, so Django would refuse the
    # (plain, synchronous) ORM calls these tests and their live server make.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture
def operator(db):
    user = User.objects.create_user("operator", password="correct horse", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="circuitbreaker_app",
            codename__in=["view_circuit", "change_circuit", "force_circuit"],
        )
    )
    return user


def log_in(page: Page, live_server, next_url: str) -> None:
    page.goto(f"{live_server.url}/admin/login/?next={next_url}")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "correct horse")
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server.url}{next_url}")


def badge(page: Page, name: str):
    return page.locator(
        "#result_list tr", has=page.get_by_role("link", name=name, exact=True)
    ).locator(".cb-badge")


def run_action(page: Page, name: str, action: str) -> None:
    row = page.locator("#result_list tr", has=page.get_by_role("link", name=name, exact=True))
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")
    page.wait_for_load_state()


def confirm_move(page: Page) -> None:
    """Submit the move's confirmation page (its defaults: until reset, no reason)."""
    page.locator("form input[type=submit]").click()
    page.wait_for_load_state()


def test_force_closed_from_the_change_list(page: Page, live_server, operator, results):
    Circuit.objects.create(name="payments", **TRIP_FAST)
    Circuit.objects.create(name="search")
    record("payments", "SFSFF")  # trips
    assert Circuit.objects.get(name="payments").state == State.OPEN

    changelist = "/admin/circuitbreaker_app/circuit/"
    log_in(page, live_server, changelist)
    expect(badge(page, "payments")).to_have_text("OPEN")
    expect(badge(page, "payments")).to_have_css("background-color", RED)
    expect(badge(page, "search")).to_have_css("background-color", GREEN)

    run_action(page, "payments", "force_closed")
    confirm_move(page)
    expect(page.locator(".messagelist")).to_contain_text("1 circuit is now forced closed")
    expect(badge(page, "payments")).to_have_text("● FORCED CLOSED")
    expect(badge(page, "payments").locator(".cb-dot")).to_have_css("color", DOT_GREEN)
    expect(badge(page, "payments")).to_have_css("background-color", GREY)
    payments = Circuit.objects.get(name="payments")
    assert payments.state == State.FORCED_CLOSED
    event = CircuitEvent.objects.filter(circuit=payments).order_by("-id").first()
    assert (event.to_state, event.actor) == (State.FORCED_CLOSED, operator)

    run_action(page, "payments", "reset")
    confirm_move(page)
    expect(badge(page, "payments")).to_have_text("CLOSED")
    expect(badge(page, "payments")).to_have_css("background-color", GREEN)
    assert Circuit.objects.get(name="payments").state == State.CLOSED
    page.screenshot(path=str(results / "browser-force-closed.png"), full_page=True)


def test_dashboard_follows_state_changes(page: Page, live_server, operator, results):
    Circuit.objects.create(name="payments", **TRIP_FAST)
    record("payments", "SSSF")
    log_in(page, live_server, "/admin/circuitbreaker_app/circuit/")
    page.click("a.cb-dashboard-link")
    card = page.locator('.cb-card[data-circuit="payments"]')
    expect(card).to_have_attribute("data-state", "closed")
    expect(card).to_contain_text("25.0 %")
    expect(card.locator("svg.cb-spark").first).to_be_visible()
    expect(card.locator("svg.cb-spark-bars")).to_be_visible()
    # changed elsewhere: the next poll (every 5 s) redraws the card
    get_store().move_to("payments", State.FORCED_OPEN, "maintenance")
    expect(card).to_have_attribute("data-state", "forced_open", timeout=15_000)
    expect(card.locator(".cb-badge")).to_have_text("● FORCED OPEN")
    expect(page.locator('.cb-count[data-state="forced_open"]')).to_have_text("1 forced open")
    expect(page.locator('.cb-count[data-state="closed"]')).to_be_hidden()
    page.screenshot(path=str(results / "browser-dashboard.png"), full_page=True)


def _history(circuit: Circuit, now: float, rate_of_minute, state_of_minute=None) -> None:
    """15 minutes of 10-second samples ending now (the functions take minutes ago)."""
    rows = []
    rejected_total = 0
    for ago in range(89, 0, -1):
        minutes = ago * INTERVAL / 60
        state = state_of_minute(minutes) if state_of_minute else "closed"
        calls = 0 if state in ("open", "forced_open") else 20  # rejected calls are not counted
        if state in ("open", "forced_open"):
            rejected_total += 30 + (ago * 7) % 25  # callers turned away in the period
        rows.append(
            CircuitSample(
                circuit=circuit,
                at=period_of(now) - timedelta(seconds=ago * INTERVAL),
                calls=calls,
                failures=round(calls * rate_of_minute(minutes) / 100),
                state=state,
                rejected_total=rejected_total,
            )
        )
    CircuitSample.objects.bulk_create(rows)


def test_screenshots_for_the_readme(page: Page, live_server, operator, results):
    """A realistic mix of circuits, photographed for docs/ (copied from test-results/)."""
    now = datetime.now(tz=UTC).timestamp()
    payments = Circuit.objects.create(
        name="payments", description="card payments gateway", **TRIP_FAST
    )
    search = Circuit.objects.create(name="search", slow_call_duration=1.0, **TRIP_FAST)
    inventory = Circuit.objects.create(name="inventory-api", **TRIP_FAST)
    geo = Circuit.objects.create(name="http:maps.example.com")
    mail = Circuit.objects.create(name="mail")
    _history(
        payments,
        now,
        lambda ago: 5 if ago > 9 else min(90, 5 + (10 - ago) * 12),
        lambda ago: "open" if ago <= 4 else "closed",
    )
    _history(search, now, lambda ago: 10 + 8 * math.sin(ago))
    _history(inventory, now, lambda ago: 40 if 6 < ago < 10 else 8)
    _history(geo, now, lambda ago: 2)
    _history(mail, now, lambda ago: 0, lambda ago: "forced_open" if ago < 8 else "closed")
    record("payments", "SFSFF")
    record("search", "SSSSSSSF")
    record("inventory-api", "SSFSFSSS")
    record("http:maps.example.com", "SSSSSSSSSS")
    get_store().move_to("mail", State.FORCED_OPEN, "SMTP relay maintenance", actor=operator)
    for name, times in (("payments", 37), ("mail", 1234)):  # callers turned away
        for _ in range(times):
            with pytest.raises(CircuitOpenError):
                breaker(name).call(lambda: None)
    get_store().flush()

    page.set_viewport_size({"width": 1440, "height": 600})
    log_in(page, live_server, "/admin/circuitbreaker_app/circuit/")
    page.click("#toggle-nav-sidebar")  # more room for the columns
    expect(badge(page, "payments")).to_have_text("OPEN")
    page.screenshot(path=str(results / "admin-changelist.png"))
    page.set_viewport_size({"width": 1280, "height": 720})
    page.click("a.cb-dashboard-link")
    expect(page.locator(".cb-card")).to_have_count(5)
    expect(page.locator('.cb-card[data-circuit="search"] polyline')).to_have_count(1)
    mail = page.locator('.cb-card[data-circuit="mail"]')
    expect(mail).to_contain_text("1,234")  # rejected in total
    assert mail.locator(".cb-spark-bar").count() > 10  # rejected in each period
    expect(page.locator('.cb-card[data-circuit="search"] .cb-spark-bar')).to_have_count(0)
    page.screenshot(path=str(results / "dashboard.png"), full_page=True)
    # dark mode (the OS preference): the sparklines take the admin's dark colours
    page.emulate_media(color_scheme="dark")
    background = page.locator(".cb-spark-bg").first.evaluate("n => getComputedStyle(n).fill")
    line = page.locator(".cb-spark-line").first.evaluate("n => getComputedStyle(n).stroke")
    assert background != "rgb(247, 247, 247)" and line == "rgb(100, 181, 246)"
    page.screenshot(path=str(results / "dashboard-dark.png"), full_page=True)


def test_change_list_fits_at_1280_px(page: Page, live_server, operator):
    """Every column, "Last transition" included, without a horizontal scroll (1280×800)."""
    Circuit.objects.create(name="payments", description="card payments gateway", **TRIP_FAST)
    Circuit.objects.create(name="search", slow_call_duration=1.0, **TRIP_FAST)
    Circuit.objects.create(name="http:maps.example.com")
    Circuit.objects.create(name="http:partner-inventory.eu-west-1.example.com:8443")
    Circuit.objects.create(name="mail", **TRIP_FAST)
    record("payments", "SFSFF")  # open: its figures are the ones at trip
    record("search", "SSSSSSSF")
    get_store().move_to("mail", State.FORCED_CLOSED, "relay pinned")  # the widest badge
    for _ in range(12345):  # the open one turned callers away
        with pytest.raises(CircuitOpenError):
            breaker("payments").call(lambda: None)
    get_store().flush()
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, live_server, "/admin/circuitbreaker_app/circuit/")
    header = page.locator("#result_list thead th.column-changed_column")
    expect(header).to_contain_text("Last transition")
    expect(header).to_be_in_viewport()
    results = page.locator("#changelist .results")
    overflow = results.evaluate("node => node.scrollWidth - node.clientWidth")
    assert overflow <= 0, f"the change list scrolls sideways by {overflow} px"
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    changed = page.locator("#result_list tr", has=page.get_by_role("link", name="payments"))
    expect(changed.locator("time.cb-ago")).to_have_text(re.compile(r"^\d+ s ago$"))


def _wait_until(condition, timeout: float = 10.0) -> None:
    """Poll ``condition`` (real time: this is a browser test, not a state-machine one)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {condition}")
        time.sleep(0.1)


def test_dashboard_with_150_circuits_puts_the_forced_one_first_and_filters(
    page: Page, live_server, operator, results, monkeypatch
):
    """The on-call scene of issue 15: 150 circuits, one forced open for 15 minutes from
    the admin (a test shortens what "15 minutes" means to 2 s), found first on the
    dashboard, found by the filter, and back to HALF_OPEN when its time is up."""
    from circuitbreaker_app.admin import moves as admin_moves
    from circuitbreaker_app.tasks import probe_circuits

    duration = admin_moves.MoveForm.base_fields["duration"]
    shortened = [("2" if value == "900" else value, label) for value, label in duration.choices]
    monkeypatch.setattr(duration, "choices", shortened)
    Circuit.objects.bulk_create(
        Circuit(name=f"api-{i:03d}", description=f"partner {i}", **TRIP_FAST) for i in range(150)
    )
    for i in range(0, 150, 10):
        record(f"api-{i:03d}", "SSSSSSSSSF" if i % 20 else "SSSSSSSFFS")  # 10 % or 20 %

    # the admin's "Force open" with a duration, from the change list
    log_in(page, live_server, "/admin/circuitbreaker_app/circuit/?q=api-142")
    run_action(page, "api-142", "force_open")
    page.get_by_label("15 minutes").check()
    page.fill("#id_reason", "partner maintenance")
    confirm_move(page)
    expect(page.locator(".messagelist")).to_contain_text("api-142")
    forced = Circuit.objects.get(name="api-142")
    assert forced.state == State.FORCED_OPEN and forced.forced_until is not None

    page.goto(f"{live_server.url}/admin/circuitbreaker_app/circuit/dashboard/")
    cards = page.locator(".cb-card")
    expect(cards).to_have_count(100)  # a page: the rest are a filter away
    expect(page.locator(".cb-updated")).to_contain_text("Showing 100 of 150 circuits")
    # trouble first: the forced-open circuit (card 143 by name) is the first card
    expect(cards.first).to_have_attribute("data-circuit", "api-142")
    expect(cards.first).to_have_attribute("data-state", "forced_open")
    expect(cards.nth(1)).to_have_attribute("data-circuit", "api-000")  # 20 %, closed
    expect(page.locator('.cb-count[data-state="forced_open"]')).to_have_text("1 forced open")
    page.screenshot(path=str(results / "browser-dashboard-150.png"))
    # the filter box narrows the cards as one types
    page.fill("#cb-filter", "api-01")
    expect(cards).to_have_count(10)
    expect(cards.first).to_have_attribute("data-circuit", "api-010")
    page.fill("#cb-filter", "api-149")  # not on the page: Enter asks the server
    expect(cards).to_have_count(0)
    expect(page.locator(".cb-empty")).to_contain_text("Press Enter")
    page.press("#cb-filter", "Enter")
    page.wait_for_url("**/dashboard/?q=api-149")
    expect(cards).to_have_count(1)
    expect(cards.first).to_have_attribute("data-circuit", "api-149")
    # the summary count is a link to the filtered dashboard
    page.click('.cb-count[data-state="forced_open"]')
    page.wait_for_url("**/dashboard/?state=forced_open")
    expect(cards).to_have_count(1)
    expect(cards.first.locator("time.cb-ago")).to_have_text(re.compile(r"^\d+ s ago$"))

    # its "15 minutes" (2 s here) pass; the beat task moves it on; the next poll shows it
    page.goto(f"{live_server.url}/admin/circuitbreaker_app/circuit/dashboard/")
    expect(cards.first).to_have_attribute("data-state", "forced_open")
    _wait_until(
        lambda: probe_circuits() and Circuit.objects.get(name="api-142").state == "half_open"
    )
    expect(cards.first).to_have_attribute("data-state", "half_open", timeout=15_000)
    expect(cards.first).to_have_attribute("data-circuit", "api-142")  # still trouble first
    expect(page.locator('.cb-count[data-state="half_open"]')).to_have_text("1 half open")
    expect(page.locator('.cb-count[data-state="forced_open"]')).to_be_hidden()


@pytest.mark.urls("demo_project.urls")
def test_the_shop_panel_follows_the_circuit_until_the_probe_closes_it(
    page: Page, live_server, settings, results
):
    """No reload: the panel polls, and the probe (the beat's two steps) closes the circuit."""
    from django.core.cache import cache

    from circuitbreaker_app.tasks import probe_circuit

    use_demo_templates(settings)
    Circuit.objects.create(
        name="payments",
        window_type="count",
        window_size=10,
        minimum_calls=5,
        failure_rate_threshold=50,
        wait_duration=1,
        trial_mode="probe",  # only the worker's probe may close it
        probe_url=f"{live_server.url}/upstream/payments/",
    )
    cache.set("demo:upstream_mode", "failing", timeout=None)
    page.goto(f"{live_server.url}/?times=5")
    state = page.locator("#circuit #state")
    expect(state).to_have_text("open")
    expect(page.locator("#at-trip")).to_have_text("100.0 % failures over 5 calls")
    expect(page.locator("#story-open")).to_contain_text("the Celery worker's probe")
    cache.set("demo:upstream_mode", "healthy", timeout=None)
    store = get_store()
    # the beat task's first step once the wait is over: OPEN -> HALF_OPEN
    _wait_until(lambda: store.advance("payments", State.OPEN, State.HALF_OPEN, "probe_due"))
    expect(state).to_have_text("half_open")
    expect(page.locator("#story-half_open")).to_be_visible()
    expect(page.locator("#at-trip")).to_have_text("100.0 % failures over 5 calls")
    expect(page.locator("#mode")).to_have_text("healthy")
    page.screenshot(path=str(results / "shop-half-open.png"))
    # its second: the probe task asks the upstream, which answers: CLOSED
    assert probe_circuit("payments") == "closed"
    expect(state).to_have_text("closed")
    expect(page.locator("#story-closed")).to_be_visible()
    expect(page.locator("#at-trip")).to_be_hidden()
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload
