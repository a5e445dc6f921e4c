"""Sliding windows (count and time) and the opening rule ``evaluate``."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circuitbreaker_app.core.config import CircuitConfig
from circuitbreaker_app.core.windows import (
    CountWindow,
    Snapshot,
    TimeWindow,
    WindowResult,
    evaluate,
    window_for,
)

outcomes = st.tuples(st.booleans(), st.booleans())  # (failed, slow)


def naive(calls: list[tuple[bool, bool]]) -> Snapshot:
    return Snapshot(len(calls), sum(f for f, _ in calls), sum(s for _, s in calls))


# -- Snapshot ------------------------------------------------------------------------


def test_snapshot_rates() -> None:
    assert Snapshot().failure_rate == 0.0
    assert Snapshot().slow_call_rate == 0.0
    snap = Snapshot(calls=5, failures=3, slow=1)
    assert snap.failure_rate == 60.0
    assert snap.slow_call_rate == 20.0
    assert Snapshot(1, 0, 1) + Snapshot(2, 2, 0) == Snapshot(3, 2, 1)


# -- CountWindow ---------------------------------------------------------------------


def test_count_window_evicts_the_oldest_call() -> None:
    window = CountWindow(3)
    assert window.record(True, False) == Snapshot(1, 1, 0)
    assert window.record(False, True) == Snapshot(2, 1, 1)
    assert window.record(False, False) == Snapshot(3, 1, 1)
    # The failure (oldest) leaves.
    assert window.record(False, False) == Snapshot(3, 0, 1)
    # Then the slow call.
    assert window.record(False, False) == Snapshot(3, 0, 0)
    assert window.snapshot() == Snapshot(3, 0, 0)


def test_count_window_of_one_holds_only_the_last_call() -> None:
    window = CountWindow(1)
    assert window.record(True, True) == Snapshot(1, 1, 1)
    assert window.record(False, False) == Snapshot(1, 0, 0)


def test_count_window_ignores_time() -> None:
    window = CountWindow(2)
    window.record(True, False, now=0.0)
    assert window.snapshot(now=1e9) == Snapshot(1, 1, 0)


@pytest.mark.parametrize("size", [0, -1])
def test_windows_reject_a_size_below_one(size: int) -> None:
    with pytest.raises(ValueError, match="window_size"):
        CountWindow(size)
    with pytest.raises(ValueError, match="window_size"):
        TimeWindow(size)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 12), calls=st.lists(outcomes, max_size=60))
def test_count_window_totals_match_the_last_n_calls(
    size: int, calls: list[tuple[bool, bool]]
) -> None:
    window = CountWindow(size)
    for i, (failed, slow) in enumerate(calls):
        expected = naive(calls[max(0, i + 1 - size) : i + 1])
        assert window.record(failed, slow) == expected
        assert window.snapshot() == expected


# -- TimeWindow ----------------------------------------------------------------------


def test_time_window_call_leaves_exactly_size_seconds_after_its_second_began() -> None:
    window = TimeWindow(10)
    window.record(True, False, now=100.7)  # bucket 100, which began at 100.0
    assert window.snapshot(now=100.7) == Snapshot(1, 1, 0)
    assert window.snapshot(now=109.0) == Snapshot(1, 1, 0)
    assert window.snapshot(now=math.nextafter(110.0, 0)) == Snapshot(1, 1, 0)
    assert window.snapshot(now=110.0) == Snapshot()  # 100.0 + 10 s


def test_time_window_call_at_the_start_of_a_second() -> None:
    window = TimeWindow(1)
    window.record(False, True, now=5.0)
    assert window.snapshot(now=5.999) == Snapshot(1, 0, 1)
    assert window.snapshot(now=6.0) == Snapshot()


def test_time_window_groups_calls_by_second() -> None:
    window = TimeWindow(3)
    window.record(True, False, now=10.1)
    window.record(False, False, now=10.9)
    window.record(True, True, now=11.5)
    window.record(False, False, now=12.0)
    assert window.snapshot(now=12.5) == Snapshot(4, 2, 1)
    assert window.snapshot(now=13.0) == Snapshot(2, 1, 1)  # second 10 left
    assert window.snapshot(now=14.0) == Snapshot(1, 0, 0)  # second 11 left
    assert window.snapshot(now=15.0) == Snapshot()


def test_time_window_rolls_over_seconds_without_records() -> None:
    window = TimeWindow(5)
    window.record(True, False, now=100.0)
    window.record(True, False, now=101.0)
    # A long quiet gap: nothing recorded, then a call far later.
    assert window.record(False, False, now=1_000.0) == Snapshot(1, 0, 0)
    assert window.snapshot(now=1_004.999) == Snapshot(1, 0, 0)
    assert window.snapshot(now=1_005.0) == Snapshot()
    assert window.record(True, False, now=2_000.5) == Snapshot(1, 1, 0)


def test_time_window_snapshot_prunes_old_buckets() -> None:
    window = TimeWindow(2)
    for second in range(50):
        window.record(True, False, now=float(second))
    assert window.snapshot(now=49.0) == Snapshot(2, 2, 0)
    # Only the buckets still in the window are kept (memory stays bounded).
    assert len(window._buckets) <= 2
    assert window.snapshot(now=500.0) == Snapshot()
    assert len(window._buckets) == 0


def test_time_window_record_returns_the_same_totals_as_snapshot() -> None:
    window = TimeWindow(4)
    for t in (1.0, 1.5, 2.2, 4.9, 5.0, 6.3):
        assert window.record(t > 4, False, now=t) == window.snapshot(now=t)


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 6),
    steps=st.lists(
        st.tuples(st.floats(0, 4, allow_nan=False, allow_infinity=False), outcomes),
        max_size=40,
    ),
)
def test_time_window_totals_match_the_calls_of_the_last_size_seconds(
    size: int, steps: list[tuple[float, tuple[bool, bool]]]
) -> None:
    window = TimeWindow(size)
    now = 1_000.0
    seen: list[tuple[float, bool, bool]] = []
    for gap, (failed, slow) in steps:
        now += gap
        seen.append((now, failed, slow))
        oldest = math.floor(now) - size + 1
        expected = naive([(f, s) for t, f, s in seen if math.floor(t) >= oldest])
        assert window.record(failed, slow, now=now) == expected
        assert window.snapshot(now=now) == expected


def test_window_for_picks_the_configured_kind() -> None:
    assert isinstance(window_for(CircuitConfig(window_type="count")), CountWindow)
    assert isinstance(window_for(CircuitConfig(window_type="time")), TimeWindow)


# -- evaluate ------------------------------------------------------------------------


def cfg(**overrides: object) -> CircuitConfig:
    values: dict[str, object] = {
        "window_size": 10,
        "minimum_calls": 5,
        "failure_rate_threshold": 50,
    }
    values.update(overrides)
    return CircuitConfig(**values)  # type: ignore[arg-type]


def test_evaluate_below_minimum_calls_never_opens() -> None:
    config = cfg()
    assert evaluate(Snapshot(4, 4, 4), config) is WindowResult.BELOW_MINIMUM_CALLS
    assert evaluate(Snapshot(), config) is WindowResult.BELOW_MINIMUM_CALLS
    assert evaluate(Snapshot(), cfg(minimum_calls=1)) is WindowResult.BELOW_MINIMUM_CALLS


def test_evaluate_at_minimum_calls_decides() -> None:
    assert evaluate(Snapshot(5, 3, 0), cfg()) is WindowResult.FAILURE_RATE_ABOVE_THRESHOLD
    assert evaluate(Snapshot(5, 2, 0), cfg()) is WindowResult.BELOW_THRESHOLDS


@pytest.mark.parametrize(
    ("threshold", "calls", "at_threshold"),
    [(50, 10, 5), (20, 5, 1), (100, 5, 5), (10, 10, 1), (25, 8, 2), (12.5, 8, 1), (75, 4, 3)],
)
def test_evaluate_failure_rate_exactly_at_threshold_opens_one_below_does_not(
    threshold: float, calls: int, at_threshold: int
) -> None:
    config = cfg(window_size=calls, minimum_calls=calls, failure_rate_threshold=threshold)
    at = evaluate(Snapshot(calls, at_threshold, 0), config)
    below = evaluate(Snapshot(calls, at_threshold - 1, 0), config)
    assert at is WindowResult.FAILURE_RATE_ABOVE_THRESHOLD
    assert below is WindowResult.BELOW_THRESHOLDS


def test_evaluate_threshold_with_a_float_rate_that_is_not_exact_in_binary() -> None:
    # 1/3 = 33.33…%: above 33.3 %, below 33.34 %.
    snap = Snapshot(3, 1, 0)
    base = {"window_size": 3, "minimum_calls": 3}
    assert evaluate(snap, cfg(**base, failure_rate_threshold=33.3)).opens
    assert not evaluate(snap, cfg(**base, failure_rate_threshold=33.34)).opens


def test_evaluate_slow_rate_only_counts_when_slow_call_duration_is_set() -> None:
    snap = Snapshot(10, 0, 10)
    off = cfg(slow_call_rate_threshold=50)
    assert evaluate(snap, off) is WindowResult.BELOW_THRESHOLDS
    on = cfg(slow_call_duration=1.0, slow_call_rate_threshold=50)
    assert evaluate(snap, on) is WindowResult.SLOW_CALL_RATE_ABOVE_THRESHOLD


def test_evaluate_slow_rate_exactly_at_threshold_opens_one_below_does_not() -> None:
    config = cfg(slow_call_duration=2.0, slow_call_rate_threshold=40)
    assert evaluate(Snapshot(10, 0, 4), config) is WindowResult.SLOW_CALL_RATE_ABOVE_THRESHOLD
    assert evaluate(Snapshot(10, 0, 3), config) is WindowResult.BELOW_THRESHOLDS
    assert evaluate(Snapshot(4, 0, 4), config) is WindowResult.BELOW_MINIMUM_CALLS


def test_evaluate_failure_rate_wins_when_both_rates_are_high() -> None:
    config = cfg(slow_call_duration=1.0, slow_call_rate_threshold=50)
    assert evaluate(Snapshot(10, 10, 10), config) is WindowResult.FAILURE_RATE_ABOVE_THRESHOLD


def test_window_result_values_and_opens() -> None:
    assert {r.value for r in WindowResult} == {
        "below_minimum_calls",
        "below_thresholds",
        "failure_rate_above_threshold",
        "slow_call_rate_above_threshold",
    }
    assert WindowResult.FAILURE_RATE_ABOVE_THRESHOLD.opens
    assert WindowResult.SLOW_CALL_RATE_ABOVE_THRESHOLD.opens
    assert not WindowResult.BELOW_MINIMUM_CALLS.opens
    assert not WindowResult.BELOW_THRESHOLDS.opens
