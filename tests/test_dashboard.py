"""The admin dashboard's data (circuitbreaker_app.dashboard) and its feed.

The order puts trouble first, the filter works on the server (links), and a poll sends
only what changed since the client's cursor: with 1,000 circuits it stays within 200 KB
and a fixed number of queries (its time is measured by ``benchmarks/dashboard.py``).
"""

from __future__ import annotations

import json
import time

import pytest
from django.urls import reverse

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import FakeClock
from circuitbreaker_app.dashboard import Cursor
from circuitbreaker_app.models import Circuit, CircuitSample
from circuitbreaker_app.samples import INTERVAL, record_samples
from circuitbreaker_app.store import get_store
from tests.helpers import TRIP_FAST, FakeStore, record, staff_user, store_queries

pytestmark = pytest.mark.django_db

DASHBOARD = "admin:circuitbreaker_app_circuit_dashboard"
FEED = "admin:circuitbreaker_app_circuit_feed"


@pytest.fixture
def fake():
    """A fake clock that starts now: rows' ``updated_at`` (Django's clock) agree with it."""
    return FakeStore(FakeClock(time.time())).install()


@pytest.fixture
def viewer(client):
    user = staff_user("viewer", "view_circuit")
    client.force_login(user)
    return user


@pytest.fixture
def fleet(fake):
    """Every kind of state, and closed circuits with different failure rates."""
    for name in ("a-quiet", "b-busy", "c-tripped", "d-forced", "e-pinned", "f-off", "g-trial"):
        Circuit.objects.create(name=name, **TRIP_FAST)
    record("a-quiet", "SSSSSSSSSF")  # 10 %
    record("b-busy", "SSSSSSFFFS")  # 30 %
    record("c-tripped", "SFSFF")  # open
    store = get_store()
    store.move_to("d-forced", State.FORCED_OPEN, "maintenance")
    store.move_to("e-pinned", State.FORCED_CLOSED, "pinned")
    store.move_to("f-off", State.DISABLED, "off")
    record("g-trial", "SFSFF")
    fake.advance(31)
    store.advance("g-trial", State.OPEN, State.HALF_OPEN, "probe_due")
    return fake


def names(data) -> list[str]:
    return [c["name"] for c in data["circuits"]]


def test_trouble_comes_first_then_the_failure_rate(client, viewer, fleet):
    data = client.get(reverse(FEED)).json()
    assert names(data) == [
        "c-tripped",  # open
        "g-trial",  # half-open
        "d-forced",  # forced open
        "e-pinned",  # forced closed
        "f-off",  # disabled
        "b-busy",  # closed, 30 %
        "a-quiet",  # closed, 10 %
    ]
    assert data["counts"] == {
        "open": 1,
        "half_open": 1,
        "forced_open": 1,
        "forced_closed": 1,
        "disabled": 1,
        "closed": 2,
    }
    tripped = data["circuits"][0]
    assert tripped["at_trip"] == {"failure_rate": 60.0, "slow_call_rate": 0.0, "calls": 5}


def test_the_filter_works_on_the_server_so_links_do(client, viewer, fleet):
    assert names(client.get(reverse(FEED), {"q": "BUS"}).json()) == ["b-busy"]
    data = client.get(reverse(FEED), {"state": ["forced_open", "closed"]}).json()
    assert names(data) == ["d-forced", "b-busy", "a-quiet"]
    assert data["total"] == 3
    page = client.get(reverse(DASHBOARD), {"state": "open"})
    assert names(page.context["initial"]) == ["c-tripped"]
    html = page.content.decode()
    # the poll keeps the filter, and the summary counts link to a filtered dashboard
    assert f'data-feed-url="{reverse(FEED)}?state=open"' in html
    assert f'href="{reverse(DASHBOARD)}?state=half_open"' in html
    assert '<strong class="cb-count-n">2</strong> closed</a>' in html


def test_a_bad_filter_or_cursor_is_a_clear_400(client, viewer, fleet):
    response = client.get(reverse(FEED), {"state": "broken"})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_filter"
    response = client.get(reverse(FEED), {"cursor": "yesterday"})
    assert response.status_code == 400
    assert response.json() == {
        "error": "bad_cursor",
        "detail": "not a dashboard cursor: 'yesterday'",
    }
    for text in ("nan:1", "1:inf", "12"):
        with pytest.raises(ValueError):
            Cursor.parse(text)
    # the page itself shows every circuit and says why
    page = client.get(reverse(DASHBOARD), {"state": "broken"})
    assert page.status_code == 200
    assert len(page.context["initial"]["circuits"]) == 7
    assert "This filter is not valid" in page.content.decode()


def test_a_poll_sends_only_what_changed_since_its_cursor(client, viewer, fleet):
    fleet.advance(10)  # past the overlap of the last transition (g-trial's)
    record_samples()
    first = client.get(reverse(FEED)).json()
    assert all(len(c["points"]) == 1 for c in first["circuits"])
    fleet.advance(INTERVAL)
    record_samples()
    fleet.advance(10)  # past the overlap: the changes the first answer held are not resent
    poll = client.get(reverse(FEED), {"cursor": first["cursor"]}).json()
    assert poll["changed"] == []
    assert len(poll["samples"]) == 7  # one new period for each circuit
    assert all(len(points) == 1 for points in poll["samples"].values())
    # a transition elsewhere: that circuit, live, and the counts
    get_store().move_to("b-busy", State.FORCED_OPEN, "maintenance")
    again = client.get(reverse(FEED), {"cursor": poll["cursor"]}).json()
    assert [c["name"] for c in again["changed"]] == ["b-busy"]
    assert again["changed"][0]["state"] == "forced_open"
    assert again["samples"] == {}  # no new period
    assert again["counts"]["forced_open"] == 2


def test_a_new_circuit_reaches_the_next_poll(client, viewer, fake):
    Circuit.objects.create(name="a-old")
    first = client.get(reverse(FEED)).json()
    Circuit.objects.create(name="h-new")
    poll = client.get(reverse(FEED), {"cursor": first["cursor"]}).json()
    assert "h-new" in [c["name"] for c in poll["changed"]]


def test_with_1000_circuits_a_poll_is_small_and_its_queries_are_fixed(
    client, viewer, fake, django_assert_num_queries
):
    Circuit.objects.bulk_create(
        Circuit(name=f"svc-{i:04d}", description=f"service number {i}", **TRIP_FAST)
        for i in range(1000)
    )
    for i in range(0, 1000, 50):
        record(f"svc-{i:04d}", "SSSSSSSSSF")
    fake.advance(30)  # the circuits were created (updated_at) a while before the page
    record_samples()
    page = client.get(reverse(DASHBOARD))
    cursor = page.context["initial"]["cursor"]
    assert len(page.context["initial"]["circuits"]) == 100  # a page, trouble first
    fake.advance(INTERVAL)
    record_samples()  # a new period for all 1,000
    get_store().move_to("svc-0500", State.FORCED_OPEN, "maintenance")
    # session, user, permissions (user's, group's); changed rows (with trip numbers);
    # new samples; state counts. The sampler's staleness check is not due: the page
    # load just looked. No query reads every circuit.
    with django_assert_num_queries(7 + store_queries()):
        response = client.get(reverse(FEED), {"cursor": cursor})
    assert response.status_code == 200
    size = len(response.content)
    assert size <= 200 * 1024, f"a poll returned {size / 1024:.0f} KiB"
    data = json.loads(response.content)
    assert [c["name"] for c in data["changed"]] == ["svc-0500"]
    assert len(data["samples"]) == 1000
    assert CircuitSample.objects.count() == 2000


def reject(name: str, times: int) -> None:
    """``times`` calls the open circuit turns away, shared with the fleet's totals."""
    for _ in range(times):
        with pytest.raises(CircuitOpenError):
            breaker(name).call(lambda: None)
    get_store().flush()


def test_rejected_calls_reach_the_cards_in_total_and_per_period(client, viewer, fleet):
    reject("d-forced", 2)
    fleet.advance(10)
    record_samples()
    first = client.get(reverse(FEED)).json()
    forced = next(c for c in first["circuits"] if c["name"] == "d-forced")
    assert forced["rejected"] == 2  # in total
    reject("d-forced", 3)
    fleet.advance(INTERVAL)
    record_samples()
    poll = client.get(reverse(FEED), {"cursor": first["cursor"]}).json()
    points = poll["samples"][str(forced["id"])]
    assert [p[4] for p in points] == [3]  # in the period, not the total
    assert {
        pk: [p[4] for p in ps] for pk, ps in poll["samples"].items() if pk != str(forced["id"])
    } == {pk: [0] for pk in poll["samples"] if pk != str(forced["id"])}
