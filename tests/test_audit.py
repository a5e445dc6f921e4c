"""Definition edits and deletions are audited; undoing an operator's decision needs
``force_circuit`` (DESIGN §4b).

Through Django's test client, as the staff users of the security review did it: with
``change_circuit`` alone they turned a forced circuit into a week-long trap, and with
``delete_circuit`` they erased a FORCED_OPEN circuit and its history.
"""

from __future__ import annotations

import pytest
from django.urls import reverse

from circuitbreaker_app import State, breaker
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.store import get_store
from tests.helpers import CHANGELIST, TRIP_FAST, change_url, form_data, record, staff_user

pytestmark = pytest.mark.django_db

#: The edit the review made: it opens on the first failure and stays open a week.
TRAP = {
    "window_size": 1,
    "minimum_calls": 1,
    "failure_rate_threshold": 0.001,
    "wait_duration": 604800,
    "max_wait_duration": 604800,
    "trial_mode": "probe",
}


@pytest.fixture
def circuits(db):
    """payments tripped (OPEN), search healthy, mail forced open by an operator."""
    Circuit.objects.create(name="payments", **TRIP_FAST)
    Circuit.objects.create(name="search", **TRIP_FAST)
    Circuit.objects.create(name="mail", **TRIP_FAST)
    record("payments", "SFSFF")
    get_store().move_to("mail", State.FORCED_OPEN, "maintenance")
    return {c.name: c for c in Circuit.objects.all()}


def login(client, *codenames: str):
    user = staff_user("-".join(codenames) or "nobody", *codenames)
    client.force_login(user)
    return user


def audit_events(name: str):
    return CircuitEvent.objects.filter(circuit_name=name, changes__isnull=False)


# -- edits -------------------------------------------------------------------------------------


def test_a_definition_edit_is_an_event_with_the_user_and_the_changed_fields(client, circuits):
    user = login(client, "view_circuit", "change_circuit")
    search = circuits["search"]
    response = client.post(change_url(search), form_data(search, **TRAP, description="now a trap"))
    assert response.status_code == 302
    (event,) = audit_events("search")
    assert event.actor == user
    assert event.circuit_id == search.pk
    assert event.from_state == event.to_state == State.CLOSED.value
    assert event.changes == {
        "description": ["", "now a trap"],
        "window_size": [10, 1],
        "minimum_calls": [5, 1],
        "failure_rate_threshold": [50.0, 0.001],
        "wait_duration": [30.0, 604800.0],
        "max_wait_duration": [600.0, 604800.0],
        "trial_mode": ["live", "probe"],
    }
    assert "search-view_circuit" not in event.reason  # the user is the actor column
    assert "definition edited by view_circuit-change_circuit" in event.reason


def test_saving_an_unchanged_form_writes_no_event(client, circuits):
    login(client, "view_circuit", "change_circuit")
    search = circuits["search"]
    assert client.post(change_url(search), form_data(search)).status_code == 302
    assert not audit_events("search").exists()


def test_an_edit_from_code_is_audited_without_a_user(circuits):
    search = Circuit.objects.get(name="search")
    search.wait_duration = 45
    search.save()
    (event,) = audit_events("search")
    assert event.actor is None and event.changes == {"wait_duration": [30.0, 45.0]}


def test_an_edit_event_never_hides_the_trip_figures(client, circuits):
    """The change list's 'at trip' numbers come from the latest OPEN event: an edit of an
    open circuit (from/to OPEN) must not take its place."""
    login(client, "view_circuit", "change_circuit")
    payments = circuits["payments"]
    client.post(change_url(payments), form_data(payments, description="edited while open"))
    assert audit_events("payments").count() == 1
    html = client.get(reverse(CHANGELIST)).content.decode()
    assert '60.0 % <span class="cb-at-trip"' in html


def test_decision_fields_of_a_forced_circuit_need_force_circuit(client, circuits):
    login(client, "view_circuit", "change_circuit")
    mail = circuits["mail"]
    form = client.get(change_url(mail)).context["adminform"].form
    assert "window_size" not in form.fields and "probe_url" not in form.fields
    assert "description" in form.fields
    # a forged POST of the trap changes no decision field; the description is saved
    response = client.post(change_url(mail), form_data(mail, **TRAP, description="note"))
    assert response.status_code == 302
    mail.refresh_from_db()
    assert (mail.window_size, mail.wait_duration, mail.trial_mode) == (10, 30.0, "live")
    assert mail.description == "note"
    (event,) = audit_events("mail")
    assert event.changes == {"description": ["", "note"]}


def test_an_operator_with_force_circuit_may_edit_a_forced_circuit(client, circuits):
    user = login(client, "view_circuit", "change_circuit", "force_circuit")
    mail = circuits["mail"]
    assert client.post(change_url(mail), form_data(mail, window_size=7)).status_code == 302
    assert Circuit.objects.get(name="mail").window_size == 7
    (event,) = audit_events("mail")
    assert event.actor == user and event.changes == {"window_size": [10, 7]}
    assert event.from_state == State.FORCED_OPEN.value


def test_probe_url_needs_force_circuit_to_edit_or_to_set_on_a_new_circuit(client, circuits):
    login(client, "view_circuit", "change_circuit", "add_circuit")
    search = circuits["search"]
    url = "https://status.example.com/health"
    assert "probe_url" not in client.get(change_url(search)).context["adminform"].form.fields
    assert client.post(change_url(search), form_data(search, probe_url=url)).status_code == 302
    assert Circuit.objects.get(name="search").probe_url == ""
    add = reverse("admin:circuitbreaker_app_circuit_add")
    data = form_data(Circuit(name="x"), name="partner-api", probe_url=url)
    assert client.post(add, data).status_code == 302
    assert Circuit.objects.get(name="partner-api").probe_url == ""


def test_an_operator_may_set_the_probe_url_and_the_event_masks_it(client, circuits):
    login(client, "view_circuit", "change_circuit", "force_circuit")
    search = circuits["search"]
    url = "https://monitor:s3cret@status.example.com/health?SuperSecretApiKey123"
    assert client.post(change_url(search), form_data(search, probe_url=url)).status_code == 302
    assert Circuit.objects.get(name="search").probe_url == url
    (event,) = audit_events("search")
    old, new = event.changes["probe_url"]
    assert old == "" and "s3cret" not in new and "SuperSecretApiKey123" not in new


# -- deletions -----------------------------------------------------------------------------


def delete_url(circuit: Circuit) -> str:
    return reverse("admin:circuitbreaker_app_circuit_delete", args=[circuit.pk])


def test_deleting_a_forced_circuit_needs_force_circuit(client, circuits):
    login(client, "view_circuit", "delete_circuit")
    mail = circuits["mail"]
    events = CircuitEvent.objects.filter(circuit_name="mail").count()
    assert client.post(delete_url(mail), {"post": "yes"}).status_code == 403
    assert Circuit.objects.get(name="mail").state == State.FORCED_OPEN.value
    assert CircuitEvent.objects.filter(circuit_name="mail").count() == events
    with pytest.raises(Exception, match="mail"):
        breaker("mail").call(lambda: "reached")


def test_deleting_an_open_circuit_needs_force_circuit(client, circuits):
    """The next use re-creates a deleted circuit CLOSED: deleting an open one resets it."""
    login(client, "view_circuit", "delete_circuit")
    assert client.post(delete_url(circuits["payments"]), {"post": "yes"}).status_code == 403
    assert Circuit.objects.filter(name="payments").exists()


def test_the_bulk_delete_action_asks_the_same_for_every_circuit(client, circuits):
    login(client, "view_circuit", "delete_circuit")
    pks = [circuits[name].pk for name in ("search", "mail")]
    response = client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": pks, "post": "yes"},
    )
    assert response.status_code == 403
    assert set(Circuit.objects.values_list("name", flat=True)) == {"payments", "search", "mail"}


def test_a_deletion_keeps_the_events_and_names_the_user(client, circuits):
    user = login(client, "view_circuit", "delete_circuit", "force_circuit")
    mail = circuits["mail"]
    before = set(CircuitEvent.objects.filter(circuit_name="mail").values_list("pk", flat=True))
    assert before
    assert client.post(delete_url(mail), {"post": "yes"}).status_code == 302
    assert not Circuit.objects.filter(name="mail").exists()
    kept = CircuitEvent.objects.filter(circuit_name="mail")
    assert before < set(kept.values_list("pk", flat=True))
    assert not kept.filter(circuit__isnull=False).exists()
    deletion = kept.get(changes__isnull=False)
    assert deletion.actor == user
    assert deletion.from_state == deletion.to_state == State.FORCED_OPEN.value
    assert deletion.changes["window_size"] == [10, None]
    assert "deleted by" in deletion.reason


def test_bulk_deleting_closed_circuits_needs_only_delete_circuit(client, circuits):
    user = login(client, "view_circuit", "delete_circuit")
    Circuit.objects.create(name="extra")
    pks = [Circuit.objects.get(name=name).pk for name in ("search", "extra")]
    response = client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": pks, "post": "yes"},
    )
    assert response.status_code == 302
    assert set(Circuit.objects.values_list("name", flat=True)) == {"payments", "mail"}
    deletions = CircuitEvent.objects.filter(changes__isnull=False, circuit__isnull=True)
    assert sorted(deletions.values_list("circuit_name", "actor")) == [
        ("extra", user.pk),
        ("search", user.pk),
    ]


def test_a_deletion_from_code_is_audited_too(circuits):
    Circuit.objects.filter(name__in=["search", "payments"]).delete()
    deleted = CircuitEvent.objects.filter(changes__isnull=False, circuit__isnull=True)
    assert sorted(deleted.values_list("circuit_name", flat=True)) == ["payments", "search"]
    # the tripped circuit's transition events are still there, named
    assert CircuitEvent.objects.filter(circuit_name="payments", to_state="open").exists()


def test_the_event_log_is_read_only_in_the_admin(client, circuits):
    Circuit.objects.filter(name="search").delete()
    client.force_login(staff_user("auditor", "view_circuitevent"))
    response = client.get(reverse("admin:circuitbreaker_app_circuitevent_changelist"))
    assert response.status_code == 200
    assert "search" in response.content.decode()
    event = CircuitEvent.objects.get(circuit_name="search", changes__isnull=False)
    url = reverse("admin:circuitbreaker_app_circuitevent_delete", args=[event.pk])
    assert client.post(url, {"post": "yes"}).status_code == 403
    assert CircuitEvent.objects.filter(pk=event.pk).exists()


def test_a_read_only_probe_url_is_shown_masked(client, circuits):
    login(client, "view_circuit", "change_circuit")
    url = "https://monitor:s3cret@status.example.com/health?SuperSecretApiKey123"
    Circuit.objects.filter(name="search").update(probe_url=url)
    html = client.get(change_url(circuits["search"])).content.decode()
    assert "s3cret" not in html and "SuperSecretApiKey123" not in html
    assert "https://***@status.example.com/health?***" in html
