"""The JSON status endpoint, and the 10-second samples it records off the hot path."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from circuitbreaker_app import CircuitOpenError, State, breaker, operator
from circuitbreaker_app.models import Circuit, CircuitSample
from circuitbreaker_app.samples import (
    HISTORY,
    INTERVAL,
    RETENTION,
    STALE_AFTER,
    maybe_record_samples,
    record_samples,
)
from circuitbreaker_app.store import get_store
from tests.helpers import TRIP_FAST, FakeStore, record, staff_user, store_queries

pytestmark = pytest.mark.django_db


URL = "/circuits/status/"
TOKEN = "k3Jx9-monitoring-token-0123456789"
SECRET_PROBE = "https://monitor:s3cret@status.example.com/health?token=abc123"


@pytest.fixture
def fake():
    """A store on a fake clock (wall time too), so samples fall in known minutes."""
    return FakeStore().install()


@pytest.fixture
def circuits(fake):
    Circuit.objects.create(name="payments", probe_url=SECRET_PROBE, **TRIP_FAST)
    Circuit.objects.create(name="search", slow_call_duration=1.0, **TRIP_FAST)
    record("payments", "SFSFF")
    record("search", "SSSF")
    return {c.name: c for c in Circuit.objects.all()}


def staff_with(*codenames: str) -> User:
    return staff_user("-".join(("staff", *codenames)), *codenames)


@pytest.fixture
def staff(client):
    user = staff_with("view_circuit")
    client.force_login(user)
    return user


def test_staff_without_a_circuit_permission_gets_403(client, circuits):
    client.force_login(staff_with())
    response = client.get(URL)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert "payments" not in response.content.decode()


def test_staff_who_may_change_circuits_may_read_the_status(client, circuits):
    client.force_login(staff_with("change_circuit"))
    assert client.get(URL).status_code == 200


def test_an_inactive_user_with_the_permission_gets_no_status(client, circuits):
    user = staff_with("view_circuit")
    client.force_login(user)
    User.objects.filter(pk=user.pk).update(is_active=False)
    assert client.get(URL).status_code in (401, 403)


def test_url_is_reversible():
    assert reverse("circuitbreaker_app:status") == URL


def test_anonymous_gets_401_with_a_bearer_challenge(client, circuits):
    response = client.get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="circuitbreaker"'
    assert response.json()["error"] == "authentication_required"
    assert "payments" not in response.content.decode()


def test_logged_in_non_staff_gets_403(client, circuits):
    client.force_login(User.objects.create_user("visitor", password="pw"))
    response = client.get(URL)
    assert response.status_code == 403
    assert "payments" not in response.content.decode()


def test_staff_gets_json_matching_the_models(client, staff, circuits):
    response = client.get(URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    data = response.json()
    assert [c["name"] for c in data["circuits"]] == ["payments", "search"]
    by_name = {c["name"]: c for c in data["circuits"]}
    for name, row in ((c.name, c) for c in Circuit.objects.all()):
        entry = by_name[name]
        assert entry["id"] == row.pk
        assert entry["state"] == row.state
        assert entry["generation"] == row.generation
        assert entry["open_count"] == row.open_count
        for field in ("changed_at", "opened_at", "retry_at"):
            value = getattr(row, field)
            assert entry[field] == (value.isoformat() if value else None)
        assert entry["config"]["window_size"] == row.window_size
        assert entry["config"]["failure_rate_threshold"] == row.failure_rate_threshold
    payments = by_name["payments"]
    assert payments["state"] == "open"
    assert payments["retry_after"] == 30.0  # fake clock: no time has passed
    assert payments["calls"] == 0  # a new window started with the trip …
    assert payments["at_trip"] == {"failure_rate": 60.0, "slow_call_rate": 0.0, "calls": 5}
    search = by_name["search"]
    assert (search["state"], search["retry_after"], search["at_trip"]) == ("closed", None, None)
    assert (search["calls"], search["failures"], search["slow"]) == (4, 1, 0)
    assert (search["failure_rate"], search["slow_call_rate"]) == (25.0, 0.0)


class Down(Exception):
    pass


def fail_once(name: str) -> None:
    def down():
        raise Down

    with pytest.raises(Down):
        breaker(name).call(down)


@pytest.mark.django_db(transaction=True)  # transitions publish on commit
def test_at_trip_survives_failed_trials_and_a_forced_open_has_none(client, staff, fake, circuits):
    """A failed trial reopens with an empty window: the figures that opened it stay."""
    at_trip = {"failure_rate": 60.0, "slow_call_rate": 0.0, "calls": 5}

    def payments():
        return next(c for c in client.get(URL).json()["circuits"] if c["name"] == "payments")

    for _round in range(2):
        fake.advance(payments()["retry_after"])
        fail_once("payments")  # the trial fails: OPEN again, with a longer wait
        assert (payments()["state"], payments()["at_trip"]) == ("open", at_trip)
    fake.advance(payments()["retry_after"])
    assert breaker("payments").call(lambda: "ok") == "ok"  # a trial that succeeds
    assert (payments()["state"], payments()["at_trip"]) == ("half_open", at_trip)
    while payments()["state"] == "half_open":
        breaker("payments").call(lambda: "ok")
    assert (payments()["state"], payments()["at_trip"]) == ("closed", None)
    # Forced open for a minute, then a failed trial: no trip opened it, so no figures
    # (not those of the older trip).
    operator.force_open("payments", until=60)
    fake.advance(60)
    fail_once("payments")
    assert (payments()["state"], payments()["at_trip"]) == ("open", None)


def test_probe_url_credentials_never_leave(client, staff, circuits):
    response = client.get(URL)
    body = response.content.decode()
    assert "s3cret" not in body and "abc123" not in body and "monitor" not in body
    payments = next(c for c in response.json()["circuits"] if c["name"] == "payments")
    assert payments["config"]["probe_url"] == "https://***@status.example.com/health?token=***"


@override_settings(CIRCUITBREAKER={"STATUS_TOKEN": TOKEN})
def test_the_configured_bearer_token_gets_200(client, circuits):
    response = client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert [c["name"] for c in response.json()["circuits"]] == ["payments", "search"]
    assert "Authorization" in response["Vary"]


@override_settings(CIRCUITBREAKER={"STATUS_TOKEN": TOKEN})
@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Token {TOKEN}",
        "Bearer ",
        TOKEN,
        "Bearer " + "é" * 8,
    ],
)
def test_a_wrong_token_gets_401(client, circuits, header):
    response = client.get(URL, headers={"Authorization": header})
    assert response.status_code == 401


def test_no_token_configured_means_no_token_accepted(client, circuits):
    response = client.get(URL, headers={"Authorization": "Bearer None"})
    assert response.status_code == 401
    response = client.get(URL, headers={"Authorization": "Bearer "})
    assert response.status_code == 401


def test_unknown_query_parameters_are_ignored(client, staff, circuits):
    plain = client.get(URL).json()
    odd = client.get(URL, {"format": "xml", "history": "banana", "circuit": "", "x": "1"}).json()
    assert odd["circuits"] == plain["circuits"]


def test_circuit_parameter_selects_circuits(client, staff, circuits):
    data = client.get(URL + "?circuit=search&circuit=nope").json()
    assert [c["name"] for c in data["circuits"]] == ["search"]


def test_post_is_not_allowed(client, staff, circuits):
    assert client.post(URL).status_code == 405


@pytest.mark.parametrize("extra", [0, 30])
def test_query_count_does_not_grow_with_circuits(
    client, staff, circuits, extra, django_assert_num_queries
):
    Circuit.objects.bulk_create(Circuit(name=f"api-{i}") for i in range(extra))
    client.get(URL)  # records this period's samples
    # session, user, the user's and their groups' permissions (view_circuit), circuits (with
    # trip numbers); samples are fresh: no query for them
    with django_assert_num_queries(5 + store_queries()):
        response = client.get(URL)
    assert len(response.json()["circuits"]) == 2 + extra
    # history adds one query
    with django_assert_num_queries(6 + store_queries()):
        client.get(URL, {"history": "1"})


# -- samples ------------------------------------------------------------------------------


def test_the_endpoint_samples_every_circuit_every_ten_seconds(
    client, staff, circuits, fake, django_assert_num_queries
):
    client.get(URL)
    assert CircuitSample.objects.count() == 2
    search = CircuitSample.objects.get(circuit__name="search")
    assert (search.calls, search.failures, search.slow, search.state) == (4, 1, 0, "closed")
    payments = CircuitSample.objects.get(circuit__name="payments")
    assert (payments.calls, payments.state) == (0, "open")
    fake.advance(INTERVAL - 0.5 - fake.clock() % INTERVAL)  # same period: nothing more
    client.get(URL)
    assert CircuitSample.objects.count() == 2
    fake.advance(1.0)  # the next period
    record("search", "SSFF")
    # + permissions (2), latest sample, then insert and prune in one transaction (a
    # savepoint and its release in a test)
    with django_assert_num_queries(10 + store_queries()):
        client.get(URL)
    assert CircuitSample.objects.count() == 4
    latest = CircuitSample.objects.filter(circuit__name="search").latest("at")
    assert (latest.calls, latest.failures) == (8, 3)


def test_history_lists_the_last_15_minutes_every_10_s_oldest_first(client, staff, circuits, fake):
    for _ in range(120):  # 20 minutes of samples, as the beat task writes them
        fake.advance(INTERVAL)
        maybe_record_samples()
    data = client.get(URL, {"history": "1", "circuit": "search"}).json()
    history = data["circuits"][0]["history"]
    assert len(history) == HISTORY // timedelta(seconds=INTERVAL)  # 90
    times = [datetime.fromisoformat(h["t"]) for h in history]
    assert times == sorted(times)
    assert {b - a for a, b in itertools.pairwise(times)} == {timedelta(seconds=INTERVAL)}
    assert history[0] == {
        "t": history[0]["t"],
        "failure_rate": 25.0,
        "calls": 4,
        "state": "closed",
        "rejected": 0,
    }
    # bounded: what is older than RETENTION is gone
    per_circuit = CircuitSample.objects.filter(circuit__name="search").count()
    assert per_circuit == RETENTION // timedelta(seconds=INTERVAL)


def test_a_filtered_request_still_samples_every_circuit(client, staff, circuits):
    client.get(URL, {"circuit": "search"})
    assert set(CircuitSample.objects.values_list("circuit__name", flat=True)) == {
        "payments",
        "search",
    }


def test_record_samples_is_idempotent_within_a_period_and_prunes_old_rows(circuits, fake):
    payments = circuits["payments"]
    old = datetime.fromtimestamp(fake.clock(), tz=UTC) - RETENTION - timedelta(minutes=5)
    CircuitSample.objects.create(circuit=payments, at=old, calls=1, failures=1)
    assert record_samples() == 2
    assert record_samples() == 2  # conflicts ignored
    assert CircuitSample.objects.count() == 2
    assert not CircuitSample.objects.filter(at=old).exists()


def test_maybe_record_samples_checks_the_database_once_a_period(
    circuits, fake, django_assert_num_queries
):
    assert maybe_record_samples() is True
    with django_assert_num_queries(0):
        assert maybe_record_samples() is False
    fake.advance(INTERVAL + 1)
    assert maybe_record_samples() is True


def test_the_dashboards_fallback_samples_only_when_no_worker_did(circuits, fake):
    assert maybe_record_samples() is True
    fake.advance(INTERVAL + 1)
    assert maybe_record_samples(stale_after=STALE_AFTER) is False  # a worker would have
    fake.advance(STALE_AFTER)
    assert maybe_record_samples(stale_after=STALE_AFTER) is True


def test_samples_follow_the_window_not_the_hot_path(circuits, fake):
    """Guarded calls never touch the samples: only the sampler does."""
    with CaptureQueriesContext(connection) as queries:
        record("search", "SSFSS")
    assert not [q for q in queries if "circuitsample" in q["sql"].lower()]
    assert CircuitSample.objects.count() == 0


def test_forced_state_is_sampled(circuits, fake):
    get_store().move_to("search", State.FORCED_OPEN, "maintenance")
    record_samples()
    assert CircuitSample.objects.get(circuit__name="search").state == "forced_open"


# -- the STATUS_TOKEN setting ------------------------------------------------------------------


def check_ids(value):
    from django.core.checks import run_checks

    with override_settings(CIRCUITBREAKER=value):
        return [m.id for m in run_checks() if m.id.startswith("circuitbreaker_app")]


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, []),
        (TOKEN, []),
        ("", ["circuitbreaker_app.E013"]),
        ("   ", ["circuitbreaker_app.E013"]),
        (12345, ["circuitbreaker_app.E013"]),
        ("short", ["circuitbreaker_app.W003"]),
    ],
)
def test_status_token_setting_is_checked(token, expected):
    assert check_ids({"STATUS_TOKEN": token}) == expected


def test_a_filtered_request_samples_only_when_no_worker_did(client, staff, circuits, fake):
    """The live panel asks for one circuit every 5 s: it must not read every circuit each
    period when a worker samples (the beat task), only when none did for a while."""
    record_samples()
    fake.advance(INTERVAL + 1)  # a period is due, but a worker would write it
    client.get(URL, {"circuit": "search"})
    assert CircuitSample.objects.count() == 2
    fake.advance(STALE_AFTER)  # no worker: the endpoint samples by itself
    client.get(URL, {"circuit": "search"})
    assert CircuitSample.objects.count() == 4


def test_rejected_calls_in_total_and_per_period(client, staff, circuits, fake):
    """payments is open: every call is rejected, counted by the fleet, shown per period."""

    def reject(times):
        for _ in range(times):
            with pytest.raises(CircuitOpenError):
                breaker("payments").call(lambda: "never")

    def payments(**query):
        found = client.get(URL, {"circuit": "payments", **query}).json()["circuits"]
        return found[0]

    fake.advance(INTERVAL)
    maybe_record_samples()
    reject(7)
    assert payments()["rejected"] == 7  # this process's, not shared yet, count too
    fake.advance(INTERVAL)
    maybe_record_samples()
    reject(3)
    get_store().flush()  # shared (as every process does once per STATE_TTL)
    fake.advance(INTERVAL)
    maybe_record_samples()
    data = payments(history="1")
    assert data["rejected"] == 10
    assert [point["rejected"] for point in data["history"]][-3:] == [0, 7, 3]
    assert (data["state"], data["calls"]) == ("open", 0)  # rejections are not window calls
