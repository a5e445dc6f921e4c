"""The admin: change list, change form, actions and their permission, dashboard.

Everything through Django's test client, as a staff user would click it.
"""

from __future__ import annotations

import re
import sys
import time
import types
from unittest import mock

import pytest
import responses
from django.urls import reverse

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.signals import state_changed
from circuitbreaker_app.store import get_store
from circuitbreaker_app.tasks import probe_circuits
from tests.helpers import (
    CHANGELIST,
    TRIP_FAST,
    CountingCache,
    FakeStore,
    change_url,
    fake_dns,
    form_data,
    record,
    staff_user,
    store_queries,
    three_circuits,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(client):
    """Staff who may see and edit circuits, but not force their state."""
    user = staff_user("viewer", "view_circuit", "change_circuit")
    client.force_login(user)
    return user


@pytest.fixture
def operator(client):
    """Staff with ``force_circuit``."""
    user = staff_user("operator", "view_circuit", "change_circuit", "force_circuit")
    client.force_login(user)
    return user


@pytest.fixture
def circuits(db):
    """payments tripped (OPEN), search healthy with calls, mail forced open."""
    return three_circuits()


def action_choices(response) -> set[str]:
    form = response.context["action_form"]  # None when no action is available
    return {value for value, _label in form.fields["action"].choices} if form else set()


def post_action(client, action: str, *names: str, **confirmation: str):
    """Choose ``action`` for ``names`` and confirm it (the confirmation page's fields)."""
    pks = Circuit.objects.filter(name__in=names).values_list("pk", flat=True)
    return client.post(
        reverse(CHANGELIST),
        {
            "action": action,
            "_selected_action": [str(pk) for pk in pks],
            "confirmed": "1",
            **confirmation,
        },
    )


# -- change list ------------------------------------------------------------------------


def test_change_list_shows_badge_rates_calls_and_countdown(client, operator, circuits):
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    html = response.content.decode()
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"<tr>.*?>(payments|search|mail)</a>.*?</tr>", html, re.S)
    }
    assert set(rows) == {"payments", "search", "mail"}
    assert 'cb-badge--open" data-state="open" style="background:#c62828' in rows["payments"]
    assert '60.0 % <span class="cb-at-trip"' in rows["payments"]
    assert re.search(r"field-calls_column\">5 <span class=\"cb-at-trip\"", rows["payments"])
    seconds = re.search(r'class="cb-countdown" data-seconds="([\d.]+)"', rows["payments"])
    assert seconds and 29.0 <= float(seconds.group(1)) <= 30.0
    assert 'cb-badge--closed" data-state="closed" style="background:#2e7d32' in rows["search"]
    assert "25.0 %" in rows["search"]
    assert "slow calls: 0.0 %</span>" in rows["search"]  # slow calls count on search only
    assert "slow calls:" not in rows["payments"]
    # the last transition, relative with seconds; the exact time on hover
    changed = re.search(
        r'<time class="cb-ago" datetime="([^"]+)" title="\1">(\d+) s ago</time>', rows["payments"]
    )
    assert changed, rows["payments"]
    assert (
        'cb-badge--forced_open" data-state="forced_open" style="background:#616161'
        in (rows["mail"])
    )
    assert '<td class="field-retry_column">–</td>' in rows["mail"]
    # linked to the dashboard
    assert reverse("admin:circuitbreaker_app_circuit_dashboard") in html


def test_change_list_reads_all_live_statuses_in_one_cache_round_trip(
    client, operator, circuits, django_assert_num_queries
):
    store = get_store()
    counting = CountingCache(store.cache)
    store.cache = counting
    store.counters = store.counters.through(counting)
    client.get(reverse(CHANGELIST))  # warm the session and content types
    counting.reset()
    # session, user, user and group permissions, two counts (filtered, total), the rows
    with django_assert_num_queries(7 + store_queries()):
        assert client.get(reverse(CHANGELIST)).status_code == 200
    assert counting.calls == {"get_many": 1}


@pytest.mark.parametrize("extra", [3, 40])
def test_change_list_queries_do_not_grow_with_circuits(
    client, operator, circuits, extra, django_assert_max_num_queries
):
    Circuit.objects.bulk_create(Circuit(name=f"api-{i}") for i in range(extra))
    client.get(reverse(CHANGELIST))
    with django_assert_max_num_queries(7 + store_queries()):
        response = client.get(reverse(CHANGELIST))
    assert len(response.context["cl"].result_list) == 3 + extra


def test_filter_by_state_search_and_sort(client, operator, circuits):
    response = client.get(reverse(CHANGELIST), {"state__exact": "open"})
    assert [c.name for c in response.context["cl"].result_list] == ["payments"]
    response = client.get(reverse(CHANGELIST), {"q": "sea"})
    assert [c.name for c in response.context["cl"].result_list] == ["search"]
    # column 2 is the state badge, sorted by the state column: forced_open < open < closed desc
    response = client.get(reverse(CHANGELIST), {"o": "2"})
    assert [c.name for c in response.context["cl"].result_list] == ["search", "mail", "payments"]
    # last transition (search has none: where NULLs go depends on the database)
    for order, expected in (("6", ["payments", "mail"]), ("-6", ["mail", "payments"])):
        response = client.get(reverse(CHANGELIST), {"o": order})
        names = [c.name for c in response.context["cl"].result_list if c.changed_at]
        assert names == expected


def test_state_columns_are_not_in_the_forms(client, operator, circuits):
    response = client.get(
        reverse("admin:circuitbreaker_app_circuit_change", args=[circuits["payments"].pk])
    )
    form = response.context["adminform"].form
    assert not {"state", "generation", "open_count", "opened_at", "retry_at"} & set(form.fields)


# -- change form ------------------------------------------------------------------------


def test_change_form_shows_live_state_panel(client, operator, circuits):
    response = client.get(change_url(circuits["payments"]))
    assert response.status_code == 200
    html = response.content.decode()
    panel = html[html.index('<div class="cb-live"') :]
    panel = panel[: panel.index("</div>")]
    assert 'data-circuit="payments"' in panel
    assert 'data-field="state"><span class="cb-badge cb-badge--open"' in panel
    # open: the window is empty, so the panel shows it as it was at the trip
    assert '<span data-field="failure_rate">60.0 % <span class="cb-at-trip"' in panel
    assert "(opens at 50 %)" in panel
    assert '<span data-field="calls">5 <span class="cb-at-trip"' in panel
    assert "(minimum 5)" in panel
    assert '<span data-field="open_count">1</span>' in panel
    assert "circuitbreaker_app/admin.js" in html


def test_events_inline_is_read_only_newest_first_and_bounded(client, operator, circuits):
    mail = circuits["mail"]
    for i in range(12):  # 24 more events, 25 in all
        get_store().move_to("mail", State.FORCED_CLOSED, f"round {i} <b>closed</b>")
        get_store().move_to("mail", State.FORCED_OPEN, f"round {i} open")
    assert CircuitEvent.objects.filter(circuit=mail).count() == 25
    response = client.get(change_url(mail))
    formset = response.context["inline_admin_formsets"][0].formset
    shown = [form.instance for form in formset.forms]
    newest = list(CircuitEvent.objects.filter(circuit=mail).order_by("-created_at", "-id")[:20])
    assert shown == newest
    assert shown[0].reason == "round 11 open"
    html = response.content.decode()
    assert "round 11 &lt;b&gt;closed&lt;/b&gt;" in html  # reasons are escaped
    assert "<b>closed</b>" not in html
    assert 'name="events-0-reason"' not in html  # read-only: no inputs


def test_rejected_calls_in_the_change_list_and_the_live_panel(client, operator, circuits):
    for _ in range(1234):
        with pytest.raises(CircuitOpenError):
            breaker("mail").call(lambda: None)
    get_store().flush()
    html = client.get(reverse(CHANGELIST)).content.decode()
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"<tr>(?:(?!</tr>).)*?>(mail|search)</a>.*?</tr>", html, re.S)
    }
    row = rows["mail"]
    assert '<span class="cb-sub cb-rejected">1,234 rejected</span>' in row
    assert "rejected" not in rows["search"]  # none turned away: nothing to say
    panel = client.get(change_url(circuits["mail"])).content.decode()
    assert '<span data-field="rejected">1,234</span> (in total, every process)' in panel


def test_events_inline_shows_each_event_once(client, operator, circuits):
    """One table row per event: no "1: closed → open" line from the event's __str__."""
    payments = circuits["payments"]
    response = client.get(change_url(payments))
    html = response.content.decode()
    inline = html[html.index('<div class="js-inline-admin-formset') :]
    inline = inline[: inline.index("</fieldset>")]
    assert inline.count('<tr class="cb-event">') == 1
    assert inline.count("closed → open") == 1
    assert str(CircuitEvent.objects.get(circuit=payments)) not in inline
    assert re.search(
        r'<time class="cb-ago" datetime="[^"]+" title="[^"]+">\d+ s ago</time>', inline
    )
    assert '"time": {"d": "%(n)s d"' in html  # admin.js re-counts it with these words


def test_saving_the_definition_never_touches_state(client, operator, circuits):
    payments = circuits["payments"]
    response = client.get(change_url(payments))
    # a new transition happens while the form is open
    get_store().move_to("payments", State.FORCED_OPEN, "meanwhile")
    data = form_data(payments, description="card payments", wait_duration="45")
    data["state"] = "closed"  # forged: not a form field, ignored
    response = client.post(change_url(payments), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    payments.refresh_from_db()
    assert payments.description == "card payments"
    assert payments.wait_duration == 45
    assert payments.state == State.FORCED_OPEN


def test_saving_with_the_events_inline_posted_back(client, operator, circuits):
    """Posting the page as rendered (inline management form included) saves fine."""
    payments = circuits["payments"]
    events = list(payments.events.order_by("-created_at", "-id"))
    data = form_data(
        payments,
        description="x",
        **{"events-TOTAL_FORMS": str(len(events)), "events-INITIAL_FORMS": str(len(events))},
    )
    for i, event in enumerate(events):
        data[f"events-{i}-id"] = str(event.pk)
        data[f"events-{i}-circuit"] = str(payments.pk)
    get_store().move_to("payments", State.DISABLED, "a newer event arrives meanwhile")
    response = client.post(change_url(payments), data)
    assert response.status_code == 302
    # the transition made meanwhile, and the audit event of the description edit
    assert payments.events.count() == len(events) + 2
    assert payments.events.filter(changes={"description": ["", "x"]}).exists()


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("failure_rate_threshold", "150", "greater than 0 and at most 100"),
        ("failure_rate_threshold", "0", "greater than 0 and at most 100"),
        ("window_size", "0", "between 1 and"),
        ("backoff_multiplier", "0.5", "from 1 to 100"),
        ("half_open_max_calls", "0", "between 1 and"),
        ("probe_timeout", "1000", "less than or equal to 300"),
        ("probe_url", "ftp://example.com/health", "http:// or https://"),
        ("wait_duration", "soon", "Enter a number"),
        ("window_type", "sliding", "Select a valid choice"),
    ],
)
def test_change_form_rejects_out_of_range_values_with_field_messages(
    client, operator, circuits, field, value, fragment
):
    payments = circuits["payments"]
    before = Circuit.objects.values().get(pk=payments.pk)
    response = client.post(change_url(payments), form_data(payments, **{field: value}))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert fragment in " ".join(errors[field])
    assert Circuit.objects.values().get(pk=payments.pk) == before


def test_a_rejected_edit_reaches_neither_the_breaker_nor_the_live_panel(client, operator, circuits):
    """Validating the form writes the posted values onto the instance, even the ones it
    keeps after rejecting another field; the live panel must show, and hand the store,
    the circuit as saved."""
    search = circuits["search"]  # closed, threshold 50 %, minimum 5
    config = get_store().runtime("search").entry.config
    assert (config.failure_rate_threshold, config.minimum_calls) == (50.0, 5)
    data = form_data(search, failure_rate_threshold="10", minimum_calls="1", window_size="x")
    response = client.post(change_url(search), data)
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["window_size"]
    config = get_store().runtime("search").entry.config
    assert (config.failure_rate_threshold, config.minimum_calls) == (50.0, 5)
    html = response.content.decode()
    assert "(opens at 50 %)" in html and "(minimum 5)" in html
    assert "(opens at 10 %)" not in html


def test_an_invalid_value_in_the_form_is_not_logged_as_an_invalid_row(
    client, operator, circuits, caplog
):
    payments = circuits["payments"]
    response = client.post(change_url(payments), form_data(payments, failure_rate_threshold=150))
    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["failure_rate_threshold"]
    assert "not a valid definition" not in caplog.text
    assert "(opens at 50 %)" in response.content.decode()


def test_add_form_rejects_a_bad_name(client):
    client.force_login(staff_user("adder", "add_circuit", "view_circuit"))
    data = form_data(Circuit(name="x"), name="no spaces please")
    response = client.post(reverse("admin:circuitbreaker_app_circuit_add"), data)
    assert response.status_code == 200
    assert "Use only letters" in " ".join(response.context["adminform"].form.errors["name"])
    assert not Circuit.objects.exists()


def test_add_form_creates_a_circuit(client):
    client.force_login(staff_user("adder", "add_circuit", "view_circuit"))
    data = form_data(Circuit(name="x"), name="partner-api")
    response = client.post(reverse("admin:circuitbreaker_app_circuit_add"), data)
    assert response.status_code == 302
    assert Circuit.objects.get(name="partner-api").state == State.CLOSED


def test_probe_url_credentials_are_masked_and_kept(client, operator, circuits):
    secret_url = "https://monitor:s3cret@status.example.com/health?token=abc123"
    Circuit.objects.filter(name="search").update(probe_url=secret_url)
    search = Circuit.objects.get(name="search")
    html = client.get(change_url(search)).content.decode()
    assert "s3cret" not in html and "abc123" not in html
    assert "https://***@status.example.com/health?token=***" in html
    # saved as shown: the real URL is kept
    masked = "https://***@status.example.com/health?token=***"
    response = client.post(change_url(search), form_data(search, probe_url=masked))
    assert response.status_code == 302
    assert Circuit.objects.get(name="search").probe_url == secret_url
    # a new URL replaces it
    response = client.post(
        change_url(search), form_data(search, probe_url="https://status.example.com/ping")
    )
    assert response.status_code == 302
    assert Circuit.objects.get(name="search").probe_url == "https://status.example.com/ping"


def test_name_is_read_only_once_created(client, operator, circuits):
    payments = circuits["payments"]
    response = client.post(change_url(payments), form_data(payments, name="renamed"))
    assert response.status_code == 302
    assert Circuit.objects.filter(name="payments").exists()


# -- actions and permissions -----------------------------------------------------------------


def test_staff_without_force_permission_sees_no_state_actions(client, viewer, circuits):
    response = client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    choices = action_choices(response)
    assert not {"force_open", "force_closed", "disable", "reset", "probe_now"} & choices


@pytest.mark.parametrize("action", ["force_open", "force_closed", "disable", "reset", "probe_now"])
def test_forged_action_without_permission_is_403_and_changes_nothing(
    client, viewer, circuits, action
):
    fake = types.SimpleNamespace(probe_circuit=mock.Mock())
    before = list(Circuit.objects.values("name", "state", "generation"))
    events = CircuitEvent.objects.count()
    with mock.patch.dict(sys.modules, {"circuitbreaker_app.tasks": fake}):
        response = post_action(client, action, "payments", "search", "mail")
    assert response.status_code == 403
    assert list(Circuit.objects.values("name", "state", "generation")) == before
    assert CircuitEvent.objects.count() == events
    fake.probe_circuit.delay.assert_not_called()


def test_operator_sees_the_state_actions(client, operator, circuits):
    response = client.get(reverse(CHANGELIST))
    assert {"force_open", "force_closed", "disable", "reset", "probe_now"} <= action_choices(
        response
    )


@pytest.mark.parametrize(
    ("action", "state"),
    [
        ("force_open", State.FORCED_OPEN),
        ("force_closed", State.FORCED_CLOSED),
        ("disable", State.DISABLED),
        ("reset", State.CLOSED),
    ],
)
def test_action_moves_many_circuits_and_records_the_user(
    client, operator, circuits, action, state, django_capture_on_commit_callbacks
):
    received = []

    def receiver(**kwargs):
        received.append((kwargs["name"], kwargs["new_state"]))

    before = dict(Circuit.objects.values_list("name", "state"))
    state_changed.connect(receiver)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = post_action(client, action, "payments", "search")
    finally:
        state_changed.disconnect(receiver)
    assert response.status_code == 302
    for name in ("payments", "search"):
        circuit = Circuit.objects.get(name=name)
        assert circuit.state == state
        event = circuit.events.order_by("-created_at", "-id").first()
        assert event.to_state == state
        assert event.actor == operator
        assert "in admin by operator" in event.reason
    # One signal per circuit whose state changed (resetting CLOSED "search" sends none).
    changed = [(name, state) for name in ("payments", "search") if before[name] != state]
    assert sorted(received) == changed
    assert Circuit.objects.get(name="mail").state == State.FORCED_OPEN  # not selected


def test_the_change_list_keeps_the_trip_figures_after_a_failed_probe(client, operator, monkeypatch):
    fake_dns(monkeypatch, {"upstream.test": ["192.0.2.10"]})
    fake = FakeStore().install()
    Circuit.objects.create(name="payments", probe_url="http://upstream.test/health", **TRIP_FAST)
    record("payments", "SFSFF")  # 3/5 = 60 % opens it
    fake.advance(30)
    with responses.RequestsMock() as upstream:
        upstream.add(responses.GET, "http://upstream.test/health", status=503)
        assert probe_circuits()["probes"] == 1
    events = Circuit.objects.get(name="payments").events.order_by("id")
    assert [(e.to_state, e.reason, e.calls) for e in events][1:] == [
        ("half_open", "probe_due", None),
        ("open", "probe_failed", None),
    ]
    html = client.get(reverse(CHANGELIST), {"q": "payments"}).content.decode()
    assert 'data-state="open"' in html
    assert '60.0 % <span class="cb-at-trip"' in html
    assert '<td class="field-calls_column">5 <span class="cb-at-trip"' in html


def test_reset_clears_the_window_and_backoff(client, operator, circuits):
    post_action(client, "reset", "payments")
    payments = Circuit.objects.get(name="payments")
    assert (payments.state, payments.open_count, payments.retry_at) == (State.CLOSED, 0, None)
    response = client.get(reverse(CHANGELIST), {"q": "payments"})
    assert '<td class="field-calls_column">0</td>' in response.content.decode()


def test_action_on_a_circuit_already_there_says_so(client, operator, circuits):
    response = post_action(client, "force_open", "mail")
    assert response.status_code == 302
    messages = [str(m) for m in response.wsgi_request._messages]
    assert messages == ["Already forced open (unchanged): mail."]
    assert Circuit.objects.get(name="mail").events.count() == 1


def choose_action(client, action: str, *names: str):
    """Choose ``action`` in the change list (the first POST, before any confirmation)."""
    pks = Circuit.objects.filter(name__in=names).values_list("pk", flat=True)
    return client.post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [str(pk) for pk in pks], "index": 0},
    )


def test_a_move_asks_for_confirmation_and_a_duration_first(client, operator, circuits):
    before = list(Circuit.objects.values("name", "state", "generation"))
    response = choose_action(client, "force_open", "payments", "search")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Force open (reject every call)" in html
    assert "<li>payments" in html and "<li>search" in html and "<li>mail" not in html
    labels = re.findall(r'<label for="id_duration_\d">\s*<input[^>]*>\s*([^<]+)</label>', html)
    assert [label.strip() for label in labels] == [
        "until reset",
        "15 minutes",
        "1 hour",
        "4 hours",
        "custom",
    ]
    assert 'name="minutes"' in html and 'name="confirmed"' in html
    assert list(Circuit.objects.values("name", "state", "generation")) == before


def test_reset_asks_for_confirmation_without_a_duration(client, operator, circuits):
    html = choose_action(client, "reset", "payments").content.decode()
    assert "Reset to closed with an empty window" in html
    assert 'name="duration"' not in html and 'name="reason"' in html


@pytest.mark.parametrize(
    ("fields", "seconds"),
    [
        ({"duration": "900"}, 900),
        ({"duration": "3600"}, 3600),
        ({"duration": "custom", "minutes": "7"}, 420),
    ],
)
def test_a_confirmed_move_ends_after_the_chosen_duration(
    client, operator, circuits, fields, seconds
):
    started = time.time()
    response = post_action(client, "force_closed", "payments", **fields)
    assert response.status_code == 302
    until = Circuit.objects.get(name="payments").forced_until
    assert started + seconds - 1 <= until.timestamp() <= time.time() + seconds
    assert "(until " in Circuit.objects.get(name="payments").events.latest("id").reason


def test_until_reset_sets_no_end(client, operator, circuits):
    post_action(client, "force_closed", "payments", duration="")
    assert Circuit.objects.get(name="payments").forced_until is None


def test_a_custom_duration_needs_its_minutes(client, operator, circuits):
    response = post_action(client, "disable", "payments", duration="custom", minutes="")
    assert response.status_code == 200  # the page again, with the error
    assert "Enter the number of minutes." in response.content.decode()
    assert Circuit.objects.get(name="payments").state == State.OPEN


def test_a_move_writes_the_admin_history(client, operator, circuits):
    from django.contrib.admin.models import CHANGE, LogEntry

    post_action(client, "force_open", "payments", "mail", duration="900", reason="vendor down")
    post_action(client, "force_open", "payments", duration="")  # a new end: a change
    post_action(client, "force_open", "payments", duration="")  # already so: no entry
    entries = list(LogEntry.objects.order_by("id"))
    assert [(e.object_repr, e.user, e.action_flag) for e in entries] == [
        ("mail", operator, CHANGE),
        ("payments", operator, CHANGE),
        ("payments", operator, CHANGE),
    ]
    entry = entries[1]
    assert entry.get_change_message().startswith(
        "Force open (reject every call): now forced open until "
    )
    assert entry.get_change_message().endswith("(vendor down)")


def test_probe_now_enqueues_the_probe_task_per_circuit(client, operator, circuits):
    fake = types.SimpleNamespace(probe_circuit=mock.Mock())
    with mock.patch.dict(sys.modules, {"circuitbreaker_app.tasks": fake}):
        response = post_action(client, "probe_now", "payments", "mail")
    assert response.status_code == 302
    assert fake.probe_circuit.delay.call_args_list == [mock.call("mail"), mock.call("payments")]
    messages = [str(m) for m in response.wsgi_request._messages]
    assert messages == ["Probe enqueued for: mail, payments."]


def test_probe_now_with_the_broker_down_says_so(client, operator, circuits):
    fake = types.SimpleNamespace(
        probe_circuit=mock.Mock(delay=mock.Mock(side_effect=ConnectionRefusedError("down")))
    )
    with mock.patch.dict(sys.modules, {"circuitbreaker_app.tasks": fake}):
        response = post_action(client, "probe_now", "payments")
    assert response.status_code == 302
    messages = [str(m) for m in response.wsgi_request._messages]
    assert messages == [
        "Could not enqueue a probe for: payments (ConnectionRefusedError). Is the broker running?"
    ]


# -- dashboard ---------------------------------------------------------------------------------


def test_dashboard_renders_every_circuit_for_the_script_trouble_first(client, viewer, circuits):
    response = client.get(reverse("admin:circuitbreaker_app_circuit_dashboard"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "circuitbreaker_app/dashboard.js" in html
    feed_url = reverse("admin:circuitbreaker_app_circuit_feed")
    assert f'data-feed-url="{feed_url}"' in html
    initial = response.context["initial"]
    assert [c["name"] for c in initial["circuits"]] == ["payments", "mail", "search"]
    assert all("points" in c for c in initial["circuits"])


def test_dashboard_and_admin_status_need_a_staff_login(client, circuits):
    for name in ("dashboard", "feed", "status"):
        response = client.get(reverse(f"admin:circuitbreaker_app_circuit_{name}"))
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]


def test_dashboard_needs_view_permission(client, circuits):
    client.force_login(staff_user("nobody"))
    for name in ("dashboard", "feed", "status"):
        response = client.get(reverse(f"admin:circuitbreaker_app_circuit_{name}"))
        assert response.status_code == 403


def test_admin_status_answers_json_for_the_live_panel(client, viewer, circuits):
    url = reverse("admin:circuitbreaker_app_circuit_status")
    data = client.get(url, {"circuit": "payments"}).json()
    assert [c["name"] for c in data["circuits"]] == ["payments"]
    assert data["circuits"][0]["state"] == "open"


@pytest.fixture
def celery_eager():
    from celery import current_app

    previous = current_app.conf.task_always_eager, current_app.conf.task_eager_propagates
    current_app.conf.task_always_eager = current_app.conf.task_eager_propagates = True
    yield
    current_app.conf.task_always_eager, current_app.conf.task_eager_propagates = previous


@pytest.mark.django_db(transaction=True)
def test_probe_now_runs_the_real_probe_task(client, operator, circuits, celery_eager, monkeypatch):
    fake_dns(monkeypatch, {"pay.test": ["192.0.2.10"]})
    """End to end with circuitbreaker_app.tasks (Celery eager): a healthy probe closes it."""
    import responses

    Circuit.objects.filter(name="payments").update(probe_url="https://pay.test/health")
    with responses.RequestsMock() as upstream:
        upstream.add(responses.GET, "https://pay.test/health", status=200)
        response = post_action(client, "probe_now", "payments")
        assert len(upstream.calls) == 1
    assert response.status_code == 302
    payments = Circuit.objects.get(name="payments")
    assert payments.state == State.CLOSED
    reasons = list(payments.events.order_by("created_at", "id").values_list("to_state", flat=True))
    assert reasons == ["open", "half_open", "closed"]
