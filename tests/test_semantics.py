"""DESIGN §3 (Semantics), sentence by sentence, on the runtime production runs (one process,
a FakeClock; tests/semantics.py drives it as a guarded call would).

Operator states, reset and generations are in test_transitions.py.
"""

from __future__ import annotations

import math
import pickle

import pytest
from django.test import override_settings

from circuitbreaker_app.core import CircuitOpenError, Permit, Snapshot, State
from circuitbreaker_app.store.runtime import RECHECK_INTERVAL
from tests.helpers import backend_settings
from tests.semantics import IGN, F, Harness, S

pytestmark = pytest.mark.django_db(transaction=True)

# -- Outcomes ------------------------------------------------------------------------


def test_slow_is_at_or_above_slow_call_duration_for_successes_and_failures() -> None:
    h = Harness(window_size=10, minimum_calls=10, slow_call_duration=2.0)
    h.call(S, 2.0)
    h.call(S, 1.999)
    h.call(F, 5.0)
    h.call(S, 0.0)
    assert h.machine.snapshot() == Snapshot(calls=4, failures=1, slow=2)


def test_ignored_outcomes_count_as_neither_success_nor_failure() -> None:
    h = Harness(window_size=4, minimum_calls=4, failure_rate_threshold=50, slow_call_duration=1)
    h.run("FI")
    h.call(IGN, 100.0)  # not slow either
    assert h.machine.snapshot() == Snapshot(calls=1, failures=1, slow=0)
    # Ignored calls do not count towards minimum_calls: 4 ignored + F would open otherwise.
    assert h.run("IIIIF") == ["closed"] * 5
    assert h.machine.snapshot() == Snapshot(calls=2, failures=2)
    assert h.run("SS") == ["closed", "open"]  # F F S S: 4 calls, 50 %


# -- CLOSED --------------------------------------------------------------------------


def test_worked_example_s_f_s_f_f_opens_at_the_fifth_call() -> None:
    h = Harness(window_size=10, minimum_calls=5, failure_rate_threshold=50)
    assert h.run("SFSFF") == ["closed"] * 4 + ["open"]
    (event,) = h.events
    assert event.snapshot == Snapshot(calls=5, failures=3)
    assert event.snapshot.failure_rate == 60.0
    assert event.reason == "failure_rate_above_threshold"


def test_below_minimum_calls_never_opens_even_at_100_percent() -> None:
    h = Harness(window_size=10, minimum_calls=5, failure_rate_threshold=50)
    assert h.run("FFFF") == ["closed"] * 4
    assert h.run("F") == ["open"]


def test_rate_just_below_the_threshold_stays_closed() -> None:
    h = Harness(window_size=10, minimum_calls=5, failure_rate_threshold=50)
    # Evaluated after every call: 1/2 would be 50 %, but the minimum is not reached yet.
    assert h.run("SSSFF") == ["closed"] * 5  # 2/5 = 40 %
    assert h.run("S") == ["closed"]  # 2/6
    assert h.run("F") == ["closed"]  # 3/7 = 42.9 %
    assert h.run("F") == ["open"]  # 4/8 = 50 %


def test_five_consecutive_failures() -> None:
    h = Harness(window_size=5, minimum_calls=5, failure_rate_threshold=100)
    assert h.run("FFFF") == ["closed"] * 4
    assert h.run("F") == ["open"]


def test_a_success_breaks_the_streak_until_it_leaves_the_count_window() -> None:
    h = Harness(window_size=5, minimum_calls=5, failure_rate_threshold=100)
    # The window is the last 5 calls: it holds the S until five failures follow it.
    assert h.run("FFFFSFFFF") == ["closed"] * 9
    assert h.machine.snapshot() == Snapshot(calls=5, failures=4)
    assert h.run("F") == ["open"]


def test_time_window_failures_older_than_the_window_stop_counting() -> None:
    h = Harness(window_type="time", window_size=10, minimum_calls=3, failure_rate_threshold=50)
    h.clock.set(1_000.0)
    h.run("FF")
    h.clock.set(1_010.0)  # second 1000 began 10 s ago: both failures have left
    assert h.machine.snapshot() == Snapshot()
    assert h.run("SSF") == ["closed"] * 3  # 1/3


def test_time_window_failures_inside_the_window_still_count() -> None:
    h = Harness(window_type="time", window_size=10, minimum_calls=3, failure_rate_threshold=50)
    h.clock.set(1_000.0)
    h.run("FF")
    h.clock.set(1_009.999)
    assert h.run("S") == ["open"]  # 2/3


def test_time_window_minimum_calls_may_exceed_its_size_in_seconds() -> None:
    h = Harness(window_type="time", window_size=1, minimum_calls=6, failure_rate_threshold=100)
    h.clock.set(50.0)
    assert h.run("FFFFF") == ["closed"] * 5
    h.clock.set(50.9)
    assert h.run("F") == ["open"]


def test_slow_call_rate_opens_exactly_at_its_threshold() -> None:
    h = Harness(
        window_size=4,
        minimum_calls=4,
        failure_rate_threshold=100,
        slow_call_duration=2.0,
        slow_call_rate_threshold=50,
    )
    h.call(S, 2.0)
    h.call(S, 1.0)
    h.call(S, 1.999)
    assert h.machine.state is State.CLOSED
    h.call(S, 7.0)  # 2 slow of 4 = 50 %
    assert h.machine.state is State.OPEN
    assert h.events[-1].reason == "slow_call_rate_above_threshold"
    assert h.events[-1].snapshot == Snapshot(calls=4, failures=0, slow=2)


def test_slow_calls_never_open_without_slow_call_duration() -> None:
    h = Harness(window_size=4, minimum_calls=4, slow_call_rate_threshold=1)
    for _ in range(10):
        h.call(S, 10_000.0)
    assert h.machine.state is State.CLOSED
    assert h.machine.snapshot() == Snapshot(calls=4)


# -- OPEN ----------------------------------------------------------------------------


def test_open_rejects_every_call_without_calling_the_function() -> None:
    h = Harness(window_size=1, minimum_calls=1, failure_rate_threshold=100, wait_duration=10)
    h.trip()
    called = []

    def guarded() -> None:
        permit = h.machine.acquire()
        called.append(True)
        h.machine.on_result(permit, S)

    for step in (0.0, 3.5, 6.0):
        h.clock.advance(step)
        with pytest.raises(CircuitOpenError) as info:
            guarded()
        err = info.value
        assert err.circuit == "payments"
        assert err.state is State.OPEN
        assert err.retry_after == pytest.approx(h.machine.status.retry_at - h.clock())
        assert "payments" in str(err)
    assert called == []
    assert info.value.retry_after == pytest.approx(0.5)
    assert h.machine.state is State.OPEN
    assert len(h.events) == 1  # rejections are not transitions


def test_retry_at_is_opened_at_plus_wait_duration_on_the_first_open() -> None:
    h = Harness(window_size=1, minimum_calls=1, failure_rate_threshold=100, wait_duration=30)
    h.clock.set(5_000.0)
    h.trip()
    status = h.machine.status
    assert status.opened_at == 5_000.0
    assert status.retry_at == 5_030.0
    assert status.open_count == 1
    assert h.machine.retry_after == 30.0


def test_backoff_on_consecutive_opens_is_multiplied_then_capped() -> None:
    h = Harness(
        window_size=1,
        minimum_calls=1,
        failure_rate_threshold=100,
        wait_duration=10,
        backoff_multiplier=2,
        max_wait_duration=35,
        half_open_max_calls=1,
    )
    h.trip()
    waits = [h.machine.status.retry_at - h.machine.status.opened_at]
    for _ in range(4):
        h.machine.on_result(h.to_half_open(), F)  # the trial fails: HALF_OPEN -> OPEN
        status = h.machine.status
        assert status.state is State.OPEN
        assert status.opened_at == h.clock()
        waits.append(status.retry_at - status.opened_at)
    assert waits == [10, 20, 35, 35, 35]
    assert h.machine.status.open_count == 5
    # A close ends the streak: the next open waits wait_duration again.
    h.machine.on_result(h.to_half_open(), S)
    assert h.machine.status.open_count == 0
    h.trip()
    assert h.machine.status.open_count == 1
    assert h.machine.status.retry_at - h.machine.status.opened_at == 10


def test_open_moves_to_half_open_on_the_first_call_at_retry_at_not_a_tick_before() -> None:
    h = Harness(window_size=1, minimum_calls=1, failure_rate_threshold=100, wait_duration=10)
    h.clock.set(1_000.0)
    h.trip()
    h.clock.set(math.nextafter(1_010.0, 0.0))
    with pytest.raises(CircuitOpenError) as info:
        h.machine.acquire()
    assert info.value.retry_after > 0
    assert h.machine.state is State.OPEN
    h.clock.set(1_010.0)
    assert h.machine.state is State.OPEN  # nothing moves until a call arrives
    assert h.machine.retry_after == 0.0
    permit = h.machine.acquire()
    assert permit.state is State.HALF_OPEN
    assert h.machine.state is State.HALF_OPEN
    assert h.events[-1].reason == "wait_elapsed"


def test_open_moves_to_half_open_on_a_late_call_too() -> None:
    h = Harness(window_size=1, minimum_calls=1, failure_rate_threshold=100, wait_duration=10)
    h.trip()
    h.clock.advance(3_600)
    assert h.machine.acquire().state is State.HALF_OPEN


# -- HALF_OPEN -----------------------------------------------------------------------


def tripped(**config: object) -> Harness:
    values: dict[str, object] = {"window_size": 1, "minimum_calls": 1}
    values.update(failure_rate_threshold=100, wait_duration=10)
    values.update(config)
    h = Harness(**values)
    h.trip()
    return h


def test_half_open_admits_at_most_half_open_max_calls() -> None:
    h = tripped(half_open_max_calls=2)
    first = h.to_half_open()
    second = h.machine.acquire()
    with pytest.raises(CircuitOpenError) as info:
        h.machine.acquire()
    assert info.value.state is State.HALF_OPEN
    assert info.value.retry_after is None
    h.machine.on_result(first, S)
    assert h.machine.state is State.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        h.machine.acquire()  # a finished trial's permit is not handed out again
    h.machine.on_result(second, S)
    assert h.machine.state is State.CLOSED


def test_half_open_max_calls_successes_close_the_circuit() -> None:
    h = tripped(half_open_max_calls=3)
    h.machine.on_result(h.to_half_open(), S)
    assert h.run("S") == ["half_open"]
    assert h.run("S") == ["closed"]
    assert h.events[-1].reason == "trials_succeeded"


@pytest.mark.parametrize("successes_first", [0, 1, 2])
def test_any_failed_trial_reopens_with_backoff(successes_first: int) -> None:
    h = tripped(half_open_max_calls=3, backoff_multiplier=2)
    h.machine.on_result(h.to_half_open(), S if successes_first else F)
    h.run("S" * max(0, successes_first - 1))
    if successes_first:
        h.run("F")
    assert h.machine.state is State.OPEN
    assert h.machine.status.open_count == 2
    assert h.machine.retry_after == 20.0
    assert h.events[-1].reason == "trial_failed"


def test_outcomes_of_other_trials_after_a_reopen_are_dropped() -> None:
    h = tripped(half_open_max_calls=3)
    permits = [h.to_half_open(), h.machine.acquire(), h.machine.acquire()]
    h.machine.on_result(permits[1], F)
    status = h.machine.status
    h.machine.on_result(permits[0], S)
    h.machine.on_result(permits[2], F)
    assert h.machine.status == status
    assert [e.new.state for e in h.events] == [State.OPEN, State.HALF_OPEN, State.OPEN]


def test_a_slow_trial_reopens_the_circuit() -> None:
    # states.py's documented choice: a slow trial means the dependency has not recovered.
    h = tripped(half_open_max_calls=1, slow_call_duration=1.0)
    h.machine.on_result(h.to_half_open(), S, 1.0)
    assert h.machine.state is State.OPEN
    assert h.machine.status.open_count == 2
    assert h.events[-1].reason == "trial_slow"
    h.machine.on_result(h.to_half_open(), S, 0.999)
    assert h.machine.state is State.CLOSED


def test_an_ignored_trial_frees_its_permit() -> None:
    h = tripped(half_open_max_calls=1)
    h.machine.on_result(h.to_half_open(), IGN, 100.0)
    assert h.machine.state is State.HALF_OPEN
    assert h.run("S") == ["closed"]


@pytest.fixture
def counters_on_the_fake_clock(tmp_path):
    """Leases expire on the store's clock only in the database counters (LocMem's and a
    Redis server's run on real time; ``tests/test_store.py`` covers those)."""
    with override_settings(**backend_settings("database", tmp_path)):
        yield


@pytest.mark.usefixtures("counters_on_the_fake_clock")
def test_a_leaked_trial_permit_frees_after_trial_lease() -> None:
    h = tripped(half_open_max_calls=1, trial_lease=5)
    h.to_half_open()  # its outcome never arrives: the process died
    leased_at = h.clock()
    h.clock.set(math.nextafter(leased_at + 5, 0.0))
    with pytest.raises(CircuitOpenError):
        h.machine.acquire()
    # A process refused a trial tries again RECHECK_INTERVAL later (the lease is free by then)
    h.clock.set(leased_at + 5 + RECHECK_INTERVAL)
    assert h.run("S") == ["closed"]


@pytest.mark.usefixtures("counters_on_the_fake_clock")
def test_a_leaked_trial_permit_frees_long_after_trial_lease() -> None:
    h = tripped(half_open_max_calls=2, trial_lease=5)
    h.to_half_open()
    h.machine.acquire()
    h.clock.advance(3_600)
    assert h.run("SS") == ["half_open", "closed"]


@pytest.mark.usefixtures("counters_on_the_fake_clock")
def test_a_leaked_permit_reporting_late_does_not_free_a_re_leased_slot() -> None:
    h = tripped(half_open_max_calls=1, trial_lease=5)
    leaked = h.to_half_open()
    h.clock.advance(5)
    h.machine.acquire()  # the lease expired: slot 0 goes to a new trial, still running
    h.machine.on_result(leaked, IGN)  # the "dead" caller was only slow
    with pytest.raises(CircuitOpenError):
        h.machine.acquire()  # a second concurrent trial would exceed half_open_max_calls=1


def test_closed_after_half_open_has_an_empty_window_and_open_count_zero() -> None:
    h = Harness(window_size=10, minimum_calls=5, failure_rate_threshold=50, half_open_max_calls=1)
    h.run("FFFFF")
    h.machine.on_result(h.to_half_open(), F)  # open_count 2
    h.machine.on_result(h.to_half_open(), S)
    status = h.machine.status
    assert status.state is State.CLOSED
    assert (status.open_count, status.opened_at, status.retry_at) == (0, None, None)
    assert h.machine.snapshot() == Snapshot()
    assert h.machine.retry_after is None
    assert h.run("FFFF") == ["closed"] * 4  # the old failures are gone
    assert h.run("F") == ["open"]
    assert h.machine.status.open_count == 1


# -- probe mode ------------------------------------------------------------------------


def test_probe_mode_live_calls_stay_rejected_after_retry_at() -> None:
    h = tripped(trial_mode="probe")
    h.clock.advance(3_600)
    with pytest.raises(CircuitOpenError) as info:
        h.machine.acquire()
    assert info.value.state is State.OPEN
    assert info.value.retry_after is None  # when the probe succeeds is unknown
    assert h.machine.state is State.OPEN  # only the beat task moves a probe circuit


def test_probe_mode_live_calls_stay_rejected_in_half_open() -> None:
    h = tripped(trial_mode="probe", half_open_max_calls=1)
    h.clock.advance(10)
    h.machine.move_to(State.HALF_OPEN, "probe_due")  # what the beat task does
    with pytest.raises(CircuitOpenError) as info:
        h.machine.acquire()
    assert info.value.state is State.HALF_OPEN
    assert info.value.retry_after is None


@pytest.mark.parametrize(("outcome", "after"), [(S, State.CLOSED), (F, State.OPEN)])
def test_probe_mode_the_probe_is_the_trial(outcome, after: State) -> None:
    h = tripped(trial_mode="probe", half_open_max_calls=1)
    h.clock.advance(10)
    h.machine.move_to(State.HALF_OPEN, "probe_due")
    lease = h.machine.acquire_trial()
    assert lease is not None
    h.machine.on_result(Permit(State.HALF_OPEN, h.machine.status.generation, *lease), outcome)
    assert h.machine.state is after


def test_a_real_rejection_pickles_too() -> None:
    h = Harness(window_size=1, minimum_calls=1, failure_rate_threshold=100, wait_duration=10)
    h.trip()
    h.clock.advance(2.5)
    with pytest.raises(CircuitOpenError) as info:
        h.machine.acquire()
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.circuit, copy.state, copy.retry_after) == ("payments", State.OPEN, 7.5)
