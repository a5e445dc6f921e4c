"""The operator API: moves, their ends (``until``), return values, signals, validation.

Real ``breaker()`` handles on a real store (fake clock); the beat task is called directly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import responses
from django.test import override_settings

from circuitbreaker_app import CircuitOpenError, State, breaker, operator
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.signals import state_changed
from circuitbreaker_app.tasks import probe_circuits
from tests.helpers import FakeStore, fake_dns

pytestmark = pytest.mark.django_db(transaction=True)

URL = "http://upstream.test/health"
TRIP = {
    "window_type": "count",
    "window_size": 4,
    "minimum_calls": 4,
    "failure_rate_threshold": 100,
    "wait_duration": 10,
    "half_open_max_calls": 1,
}


class Down(Exception):
    pass


def ok() -> str:
    return "ok"


def down() -> str:
    raise Down


@pytest.fixture(autouse=True)
def _upstream_resolves(monkeypatch):
    """upstream.test resolves to a documentation address (the probe checks it first)."""
    fake_dns(monkeypatch, {"upstream.test": ["192.0.2.10"]})


@pytest.fixture
def fake(db):
    Circuit.objects.create(name="payments", **TRIP)
    return FakeStore().install()


@pytest.fixture
def signals():
    received: list[tuple[str, State, State]] = []

    def receiver(**kwargs):
        received.append((kwargs["name"], kwargs["old_state"], kwargs["new_state"]))

    state_changed.connect(receiver)
    yield received
    state_changed.disconnect(receiver)


def moves(name: str = "payments") -> list[tuple[str, str, str]]:
    events = CircuitEvent.objects.filter(circuit__name=name).order_by("created_at", "id")
    return [(e.from_state, e.to_state, e.reason) for e in events]


def trip(name: str = "payments") -> None:
    guarded = breaker(name)
    for _ in range(4):
        with pytest.raises(Down):
            guarded.call(down)
    assert guarded.state is State.OPEN


# -- forced states that end by themselves ------------------------------------------------------


def test_force_open_for_a_while_rejects_then_a_call_takes_the_trial(fake, signals):
    payments = breaker("payments")
    assert operator.force_open("payments", until=900, reason="vendor maintenance")
    with pytest.raises(CircuitOpenError) as info:
        payments.call(ok)
    assert info.value.state is State.FORCED_OPEN
    assert info.value.retry_after == pytest.approx(900)
    fake.advance(899)
    with pytest.raises(CircuitOpenError):
        payments.call(ok)
    fake.advance(1)
    assert payments.call(ok) == "ok"  # the trial (HALF_OPEN, one trial) closes it
    assert payments.state is State.CLOSED
    assert [(a, b) for a, b, _ in moves()] == [
        ("closed", "forced_open"),
        ("forced_open", "half_open"),
        ("half_open", "closed"),
    ]
    assert moves()[0][2].startswith("vendor maintenance (until ")
    assert moves()[1][2] == "forced_until_elapsed"
    assert [s[2] for s in signals] == [State.FORCED_OPEN, State.HALF_OPEN, State.CLOSED]


def test_a_long_reason_with_an_end_is_cut_between_words(fake):
    reason = " ".join(["vendor maintenance window"] * 10)  # 259 characters
    assert operator.force_open("payments", until=900, reason=reason)
    recorded = moves()[0][2]
    assert len(recorded) <= 200
    kept, _, end = recorded.partition("… (until ")
    assert end and reason.startswith(kept) and reason[len(kept)] == " "


def test_a_failed_trial_after_a_forced_open_reopens_with_a_wait(fake):
    operator.force_open("payments", until=60)
    fake.advance(60)
    with pytest.raises(Down):
        breaker("payments").call(down)
    row = Circuit.objects.get(name="payments")
    assert (row.state, row.forced_until) == ("open", None)
    with pytest.raises(CircuitOpenError) as info:
        breaker("payments").call(ok)
    assert info.value.retry_after == pytest.approx(10)


@pytest.mark.parametrize("move", [operator.force_closed, operator.disable])
def test_force_closed_and_disabled_return_to_closed_with_an_empty_window(fake, signals, move):
    payments = breaker("payments")
    trip()
    assert move("payments", until=timedelta(minutes=15))
    for _ in range(3):
        with pytest.raises(Down):
            payments.call(down)  # never trips (and while disabled, not even counted)
    fake.advance(15 * 60)
    assert payments.call(ok) == "ok"
    runtime = fake.runtime("payments")
    assert runtime.status.state is State.CLOSED
    assert runtime.snapshot().calls == 1  # the new window holds only the call after the end
    assert signals[-1][1:] == (move_state(move), State.CLOSED)
    assert moves()[-1][1:] == ("closed", "forced_until_elapsed")


def move_state(move) -> State:
    return operator.MOVES_BY_NAME[move.__name__].state


def test_two_processes_that_see_the_end_make_one_transition(fake, signals):
    other = FakeStore(fake.clock)
    operator.force_closed("payments", until=30)
    other.runtime("payments").refresh()
    fake.advance(30)
    breaker("payments").call(ok)  # this process ends it
    runtime = other.runtime("payments")
    runtime.on_result(runtime.acquire(), "success", 0.0)  # the other one loses the race
    assert [s[2] for s in signals] == [State.FORCED_CLOSED, State.CLOSED]
    assert [b for _, b, _ in moves()] == ["forced_closed", "closed"]


def test_the_beat_task_ends_a_forced_state_with_no_call(fake, signals):
    operator.disable("payments", until=120)
    fake.advance(119)
    assert probe_circuits()["forced_ended"] == 0
    fake.advance(1)
    assert probe_circuits()["forced_ended"] == 1
    assert Circuit.objects.get(name="payments").state == State.CLOSED
    assert probe_circuits()["forced_ended"] == 0  # a late or repeated run is a no-op
    assert [s[2] for s in signals] == [State.DISABLED, State.CLOSED]


def test_the_beat_task_probes_a_forced_open_circuit_once_it_ends(fake):
    Circuit.objects.filter(name="payments").update(trial_mode="probe", probe_url=URL)
    operator.force_open("payments", until=60)
    fake.advance(60)
    with responses.RequestsMock() as upstream:
        upstream.add(responses.GET, URL, status=200)
        result = probe_circuits()
        assert len(upstream.calls) == 1
    assert (result["forced_ended"], result["probes"]) == (1, 1)
    assert [b for _, b, _ in moves()] == ["forced_open", "half_open", "closed"]


def test_an_end_until_reset_never_passes(fake):
    operator.force_open("payments")
    fake.advance(10**7)
    assert probe_circuits()["forced_ended"] == 0
    with pytest.raises(CircuitOpenError) as info:
        breaker("payments").call(ok)
    assert info.value.retry_after is None


def test_an_aware_datetime_is_an_end(fake):
    end = datetime.fromtimestamp(fake.clock() + 300, tz=UTC)
    operator.force_open("payments", until=end)
    row = Circuit.objects.get(name="payments")
    assert row.forced_until == end


# -- return values, events and signals ---------------------------------------------------------


def test_each_move_says_whether_it_changed_the_circuit(fake, signals):
    assert operator.force_open("payments") is True
    assert operator.force_open("payments") is False  # already so: no event
    assert len(moves()) == 1
    assert operator.force_open("payments", until=60) is True  # a new end is a change...
    assert len(moves()) == 2
    assert [s[2] for s in signals] == [State.FORCED_OPEN]  # ...but not a state change
    assert operator.disable("payments") is True
    assert operator.reset("payments") is True
    assert Circuit.objects.get(name="payments").forced_until is None


def test_reset_of_a_closed_circuit_empties_its_window_and_sends_no_signal(fake, signals):
    payments = breaker("payments")
    for _ in range(3):
        with pytest.raises(Down):
            payments.call(down)
    assert fake.runtime("payments").snapshot().failures == 3
    assert operator.reset("payments", reason="flaky test data") is True
    assert fake.runtime("payments").snapshot().calls == 0
    assert moves() == [("closed", "closed", "flaky test data")]
    assert signals == []
    with pytest.raises(Down):
        payments.call(down)  # a fourth failure does not trip: the window starts over
    assert payments.state is State.CLOSED


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "until",
    [
        datetime(2030, 1, 1),  # naive
        -5,
        0,
        float("nan"),
        float("inf"),
        10**9,  # more than a year
        timedelta(seconds=-1),
    ],
)
def test_a_bad_until_is_a_value_error_naming_it(fake, until):
    with pytest.raises(ValueError, match="until"):
        operator.force_open("payments", until=until)
    assert moves() == []


def test_an_end_in_the_past_is_a_value_error(fake):
    past = datetime.fromtimestamp(fake.clock() - 1, tz=UTC)
    with pytest.raises(ValueError, match="until must be in the future"):
        operator.disable("payments", until=past)


@pytest.mark.parametrize("until", ["15m", True, object()])
def test_an_until_of_another_type_is_a_type_error(fake, until):
    with pytest.raises(TypeError, match="until"):
        operator.force_closed("payments", until=until)


@override_settings(CIRCUITBREAKER={"AUTO_CREATE": True})
@pytest.mark.parametrize("move", [operator.force_open, operator.reset, operator.probe])
def test_an_unknown_name_is_an_error_and_creates_nothing(fake, move):
    with pytest.raises(operator.UnknownCircuitError, match="no circuit named 'nope'"):
        move("nope")
    assert not Circuit.objects.filter(name="nope").exists()


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("4h", 14400), ("2d", 172800)]
)
def test_durations(text, seconds):
    assert operator.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["15", "0m", "-5m", "1w", "15 minutes", "", "400d"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        operator.parse_duration(text)


# -- probe -------------------------------------------------------------------------------------


def test_probe_closes_a_healthy_open_circuit_and_says_so(fake):
    Circuit.objects.filter(name="payments").update(probe_url=URL)
    trip()
    with responses.RequestsMock() as upstream:
        upstream.add(responses.GET, URL, status=200)
        assert operator.probe("payments") is True
    assert Circuit.objects.get(name="payments").state == State.CLOSED
    assert operator.probe("payments") is False  # closed: nothing to probe
