"""``manage.py circuits``: every subcommand, its JSON, its exit codes and its errors."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import time
import types
from unittest import mock

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import override_settings

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.store import get_store
from tests.helpers import TRIP_FAST, fake_dns, record, run_cli

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("circuits", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def circuits(db):
    Circuit.objects.create(
        name="payments",
        description="card payments",
        probe_url="https://monitor:s3cret@status.example.com/health",
        **TRIP_FAST,
    )
    Circuit.objects.create(name="search", slow_call_duration=1.0, **TRIP_FAST)
    record("payments", "SFSFF")
    record("search", "SSSF")


@pytest.fixture
def fake_tasks():
    fake = types.SimpleNamespace(
        probe_circuit=mock.Mock(delay=mock.Mock(return_value=types.SimpleNamespace(id="t-1")))
    )
    with mock.patch.dict(sys.modules, {"circuitbreaker_app.tasks": fake}):
        yield fake.probe_circuit


# -- list ----------------------------------------------------------------------------------


def test_list_prints_a_table(circuits):
    lines = run("list").splitlines()
    assert lines[0].split() == [
        "NAME",
        "STATE",
        "FAILURE",
        "%",
        "SLOW",
        "%",
        "CALLS",
        "TRIAL",
        "IN",
        "LAST",
        "TRANSITION",
    ]
    assert set(lines[1]) == {"-", " "}
    # open: the window as it was when it opened, starred
    payments = lines[2].split()
    assert payments[:7] == ["payments", "open", "60.0*", "-", "5*", "30", "s"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", " ".join(payments[7:]))
    assert lines[3].split() == ["search", "closed", "25.0", "0.0", "4", "-", "-"]
    assert lines[4] == "* while open: the window as it was when the circuit opened"
    assert len(lines) == 5
    # columns line up
    assert lines[2].index("open") == lines[0].index("STATE") == lines[3].index("closed")


def test_list_json_matches_the_status_endpoint_entries(circuits):
    data = json.loads(run("list", "--json"))
    assert [c["name"] for c in data] == ["payments", "search"]
    assert data[0]["state"] == "open"
    assert data[0]["at_trip"] == {"failure_rate": 60.0, "slow_call_rate": 0.0, "calls": 5}
    assert data[1]["calls"] == 4
    assert data[0]["config"]["probe_url"] == "https://***@status.example.com/health"


def test_list_filters_by_state(circuits):
    data = json.loads(run("list", "--state", "closed", "--json"))
    assert [c["name"] for c in data] == ["search"]


def test_list_without_circuits(db):
    assert run("list").strip() == "No circuits."
    assert json.loads(run("list", "--json")) == []


def test_list_check_exits_3_when_a_circuit_rejects_calls(circuits):
    with pytest.raises(CommandError) as info:
        run("list", "--check")
    assert info.value.returncode == 3
    assert "1 circuit(s) reject calls: payments" in str(info.value)
    run("list", "--check", "--state", "closed")  # only healthy ones listed: exit 0
    code, out, err = run_cli("list", "--check")
    assert code == 3
    assert "payments" in out
    assert "reject calls: payments" in err


# -- show ----------------------------------------------------------------------------------


def test_show_prints_definition_live_state_and_events(circuits):
    get_store().move_to("payments", State.FORCED_OPEN, "maintenance")
    text = run("show", "payments")
    for key, value in (
        ("name", "payments"),
        ("description", "card payments"),
        ("state", "forced_open"),
        ("trial in", "-"),
        ("probe url", "https://***@status.example.com/health"),
    ):
        assert re.search(rf"^{key} +{re.escape(value)}$", text, re.M), key
    assert "s3cret" not in text
    assert "Latest events (2):" in text
    events = text[text.index("Latest events") :].splitlines()
    assert events[1].split() == ["TIME", "FROM", "TO", "BY", "REASON"]
    assert events[3].split()[2:] == ["open", "forced_open", "-", "maintenance"]
    assert "at the trip" not in text  # forced open: not a trip


def test_show_while_open_gives_the_window_at_the_trip(circuits):
    text = run("show", "payments")
    assert re.search(r"^window +0 calls, 0 failures \(0\.0 %\), 0 slow", text, re.M)
    assert re.search(
        r"^at the trip +5 calls, failure rate 60\.0 %, slow-call rate 0\.0 %$", text, re.M
    )


def test_show_json_includes_events_with_their_actor(circuits):
    admin = User.objects.create_user("alice")
    run("open", "search", "--user", "alice", "--reason", "planned")
    data = json.loads(run("show", "search", "--json"))
    assert data["state"] == "forced_open"
    assert data["description"] == ""
    assert data["events"][0] | {"at": None} == {
        "at": None,
        "from": "closed",
        "to": "forced_open",
        "reason": "planned",
        "actor": admin.username,
        "changes": None,
    }


def test_show_check(circuits):
    run("show", "search", "--check")
    with pytest.raises(CommandError) as info:
        run("show", "payments", "--check")
    assert info.value.returncode == 3


def test_show_unknown_circuit_suggests_close_names(circuits):
    with pytest.raises(
        CommandError, match=r"no circuit named 'paymnets'\. Did you mean payments\?"
    ):
        run("show", "paymnets")


# -- open / close / reset / disable --------------------------------------------------------


@pytest.mark.parametrize(
    ("subcommand", "state"),
    [
        ("open", State.FORCED_OPEN),
        ("close", State.FORCED_CLOSED),
        ("disable", State.DISABLED),
        ("reset", State.CLOSED),
    ],
)
def test_moves_record_an_event(circuits, subcommand, state):
    assert run(subcommand, "payments").strip() == f"payments: open -> {state.value}"
    payments = Circuit.objects.get(name="payments")
    assert payments.state == state
    event = payments.events.order_by("-created_at", "-id").first()
    assert (event.from_state, event.to_state) == ("open", state)
    assert event.reason == f"manage.py circuits {subcommand}"
    assert event.actor is None


def test_move_records_the_user_and_reason(circuits):
    alice = User.objects.create_user("alice")
    out = json.loads(
        run("close", "payments", "--user", "alice", "--reason", "vendor fixed", "--json")
    )
    assert out == {
        "circuit": "payments",
        "from": "open",
        "to": "forced_closed",
        "changed": True,
        "until": None,
    }
    event = CircuitEvent.objects.filter(circuit__name="payments").order_by("-id").first()
    assert (event.actor, event.reason) == (alice, "vendor fixed")


@pytest.mark.parametrize(("duration", "seconds"), [("30s", 30), ("15m", 900), ("4h", 14400)])
def test_a_move_for_a_duration_ends_by_itself(circuits, duration, seconds):
    before = time.time()
    out = json.loads(run("open", "payments", "--for", duration, "--json"))
    until = Circuit.objects.get(name="payments").forced_until
    assert before + seconds - 1 <= until.timestamp() <= time.time() + seconds
    assert out["until"] == until.isoformat()
    text = run("open", "payments", "--for", duration)
    assert re.fullmatch(r"payments: forced_open -> forced_open until \S+ \S+Z\n", text)


@pytest.mark.parametrize("duration", ["15", "0s", "-5m", "1w", "soon", "400d"])
def test_a_bad_duration_is_a_command_error_and_changes_nothing(circuits, duration):
    with pytest.raises(CommandError, match=r"--for: a duration .* but was"):
        run("disable", "payments", f"--for={duration}")
    assert Circuit.objects.get(name="payments").state == "open"


def test_reset_takes_no_duration(circuits):
    with pytest.raises(CommandError, match="unrecognized arguments: --for"):
        run("reset", "payments", "--for", "15m")


def test_the_move_subcommands_come_from_the_operator_table():
    from circuitbreaker_app.operator import MOVES

    code, out, _err = run_cli("--help")
    assert code == 0
    for move in MOVES:
        assert move.command in out
        _code, sub_help, _ = run_cli(move.command, "--help")
        assert ("--for DURATION" in sub_help) is move.takes_duration


def test_move_to_the_current_state_changes_nothing(circuits):
    run("disable", "search")
    events = CircuitEvent.objects.count()
    assert run("disable", "search").strip() == "search: already disabled (unchanged)"
    assert CircuitEvent.objects.count() == events


def test_reset_clears_backoff_and_window(circuits):
    run("reset", "payments")
    data = json.loads(run("show", "payments", "--json"))
    assert (data["state"], data["open_count"], data["calls"], data["retry_after"]) == (
        "closed",
        0,
        0,
        None,
    )


def test_move_of_an_unknown_circuit_creates_nothing(circuits):
    with pytest.raises(CommandError, match="no circuit named 'nope'"):
        run("open", "nope")
    assert not Circuit.objects.filter(name="nope").exists()


def test_move_with_an_unknown_user_changes_nothing(circuits):
    with pytest.raises(CommandError, match="no user named 'mallory'"):
        run("open", "search", "--user", "mallory")
    assert Circuit.objects.get(name="search").state == State.CLOSED


# -- probe -------------------------------------------------------------------------------------


def test_probe_enqueues_the_task(circuits, fake_tasks):
    assert run("probe", "payments").strip() == "payments: probe enqueued (task t-1)"
    fake_tasks.delay.assert_called_once_with("payments")
    assert json.loads(run("probe", "search", "--json")) == {
        "circuit": "search",
        "enqueued": True,
        "task_id": "t-1",
    }


def test_probe_unknown_circuit_enqueues_nothing(circuits, fake_tasks):
    with pytest.raises(CommandError, match="no circuit named 'nope'"):
        run("probe", "nope")
    fake_tasks.delay.assert_not_called()


def test_probe_with_the_broker_down_is_a_command_error(circuits, fake_tasks):
    fake_tasks.delay.side_effect = ConnectionRefusedError("[Errno 111] Connection refused")
    with pytest.raises(CommandError, match="could not enqueue the probe of 'payments'"):
        run("probe", "payments")


# -- sync ----------------------------------------------------------------------------------------


def test_sync_creates_missing_circuits(db):
    with override_settings(
        CIRCUITBREAKER={"CIRCUITS": {"payments": {"wait_duration": 10}, "search": {}}}
    ):
        assert run("sync").strip() == "created: payments, search"
        assert json.loads(run("sync", "--json")) == {"created": []}
        assert run("sync").strip() == "nothing to create"
    assert Circuit.objects.get(name="payments").wait_duration == 10


def test_sync_with_an_invalid_definition_is_a_command_error(db):
    with override_settings(
        CIRCUITBREAKER={"CIRCUITS": {"payments": {"failure_rate_threshold": 500}}}
    ):
        with pytest.raises(CommandError, match="payments"):
            run("sync")
    assert not Circuit.objects.exists()


# -- bad usage ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: SUBCOMMAND"),
        (("explode",), "invalid choice: 'explode'"),
        (("show",), "the following arguments are required: NAME"),
        (("open", "a", "b"), "unrecognized arguments: b"),
        (("list", "--state", "broken"), "invalid choice: 'broken'"),
    ],
)
def test_bad_arguments_are_command_errors(db, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)


def test_from_the_shell_errors_are_one_line_and_exit_nonzero(circuits):
    code, out, err = run_cli("show", "nope")
    assert code == 1
    assert err.strip() == (
        "CommandError: no circuit named 'nope'. `manage.py circuits list` shows them all."
    )
    assert "Traceback" not in err
    code, out, err = run_cli("explode")
    assert code == 2
    assert "invalid choice: 'explode'" in err
    assert "Traceback" not in err
    code, out, err = run_cli("list")
    assert code == 0, err
    assert out.startswith("NAME")


def test_django_options_work_after_the_subcommand_too(circuits):
    """`manage.py circuits list --settings=proj.prod`, as after any other command's
    arguments; argparse asks the command's own parser only before the subcommand."""
    code, out, err = run_cli("list", "-v", "0", "--no-color", "--skip-checks")
    assert (code, err) == (0, "")
    assert out.startswith("NAME")
    code, out, err = run_cli("show", "payments", "--json", "--settings", "tests.settings")
    assert (code, err) == (0, "")
    assert json.loads(out)["name"] == "payments"
    # given after the subcommand, an option takes effect: --traceback raises the error
    # instead of printing it on one line
    with pytest.raises(CommandError, match="no circuit named 'nope'"):
        run_cli("show", "nope", "--traceback")
    # and one not given keeps Django's default
    code, out, err = run_cli("show", "nope")
    assert code == 1
    assert err.startswith("CommandError: no circuit named 'nope'")


@pytest.mark.django_db(transaction=True)
def test_probe_runs_the_real_task_in_eager_mode(circuits, monkeypatch):
    fake_dns(monkeypatch, {"pay.test": ["192.0.2.10"]})
    """End to end with circuitbreaker_app.tasks (Celery eager): a failed probe keeps it open."""
    import responses
    from celery import current_app

    Circuit.objects.filter(name="payments").update(probe_url="https://pay.test/health")
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    try:
        with responses.RequestsMock() as upstream:
            upstream.add(responses.GET, "https://pay.test/health", status=503)
            assert run("probe", "payments").startswith("payments: probe enqueued")
            assert len(upstream.calls) == 1
    finally:
        current_app.conf.task_always_eager = previous
    assert Circuit.objects.get(name="payments").state == State.OPEN


def test_show_escapes_control_characters_in_every_text(circuits):
    """A description, reason or URL cannot clear the screen, retitle the terminal or hide
    text with a carriage return or a bidirectional override."""
    nasty = "\x1b[2J\x1b]0;pwned\x07visible\rhidden\u202etxt"
    Circuit.objects.filter(name="search").update(
        description=nasty, probe_url="https://status.example.com/\x1b[31mred"
    )
    get_store().move_to("search", State.FORCED_OPEN, f"reason {nasty}")
    text = run("show", "search")
    for char in ("\x1b", "\x07", "\r", "\u202e"):
        assert char not in text
    assert "\\x1b[2J\\x1b]0;pwned\\x07visible\\rhidden\\u202etxt" in text
    assert text.count("\\x1b[2J") == 2  # the description and the event's reason
    assert "\\x1b[31mred" in text or "%1B[31mred" in text
    listed = run("list")
    assert "\x1b" not in listed
    # JSON output escapes them by itself
    assert "\x1b" not in run("show", "search", "--json")


@pytest.mark.django_db(transaction=True)  # autocommit: the store logs as it moves
def test_a_move_is_one_line_not_a_log_line_too(circuits, caplog):
    """The command prints the change; the store's transition log stays quiet meanwhile."""
    with caplog.at_level(logging.INFO, logger="circuitbreaker_app"):
        out = run("open", "search")
    assert out.splitlines() == ["search: closed -> forced_open"]
    assert [r.getMessage() for r in caplog.records if "->" in r.getMessage()] == []
    # outside the command the store still logs each transition
    with caplog.at_level(logging.INFO, logger="circuitbreaker_app"):
        get_store().move_to("search", State.CLOSED, "by code")
    assert [r.getMessage() for r in caplog.records if "->" in r.getMessage()] == [
        "circuit 'search': forced_open -> closed (by code)"
    ]


def test_show_gives_the_rejected_calls_in_total_and_per_period(circuits):
    for _ in range(4):
        with pytest.raises(CircuitOpenError):
            breaker("payments").call(lambda: "never")
    get_store().flush()
    data = json.loads(run("show", "payments", "--json"))
    assert data["rejected"] == 4
    assert isinstance(data["rejected_per_period"], list)
    assert re.search(
        r"\nrejected calls +4 in total, 0 in the last 15 min\n", run("show", "payments")
    )
