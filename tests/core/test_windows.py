"""Sliding windows (count and time) and the opening rule ``evaluate``."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st

from circuitbreaker_app.core.config import CircuitConfig
from circuitbreaker_app.core.windows import (
    Snapshot,
    WindowResult,
    evaluate,
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
