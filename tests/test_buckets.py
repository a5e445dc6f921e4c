"""Shared windows' pure bookkeeping (circuitbreaker_app.store.windows)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from circuitbreaker_app.core import Snapshot
from circuitbreaker_app.store.windows import (
    FAILED,
    MAX_RUNS,
    SLOWED,
    CountRuns,
    append_to_count,
    apply_count,
    count_totals,
    grown_by,
    parse_count,
)


def reference(history: list[int], successes: int, outcome: int, seen: int) -> list[int]:
    """The whole sequence after a write: successes before the calls recorded after
    ``seen``, the outcome last (0 = success, else FAILED | SLOWED)."""
    at = len(history) - max(0, len(history) - seen)
    history = history[:at] + [0] * successes + history[at:]
    if outcome:
        history.append(outcome)
    return history


def runs_of(calls: list[int]) -> list[int]:
    """``calls`` as the flat runs apply_count keeps (pure runs, neighbours merged)."""
    flat: list[int] = []
    previous = None
    for code in calls:
        failed, slow = code & FAILED, (code & SLOWED) >> 1
        if code == previous:
            flat[-3:] = [flat[-3] + 1, flat[-2] + failed, flat[-1] + slow]
        else:
            flat += [1, failed, slow]
        previous = code
    return flat


writes = st.lists(
    st.tuples(
        st.integers(0, 3),  # which of 4 processes writes
        st.integers(0, 12),  # its batched successes
        st.sampled_from([0, FAILED, SLOWED, FAILED | SLOWED]),
    ),
    max_size=40,
)


def replay(writes, size, max_runs):
    """Each write applied by apply_count and by the reference: (window, history) after each."""
    window = [0]
    history: list[int] = []
    seen = [0, 0, 0, 0]
    for process, successes, outcome in writes:
        window = apply_count(window, successes, outcome, seen[process], size, max_runs)
        history = reference(history, successes, outcome, seen[process])
        seen[process] = window[0]
        yield window, history


@settings(max_examples=400, deadline=None)
@given(size=st.integers(1, 12), writes=writes)
def test_runs_equal_the_newest_calls_of_the_reference_sequence(size, writes):
    for window, history in replay(writes, size, max_runs=1000):
        assert window[0] == len(history)
        assert window[1:] == runs_of(history[-size:] if history else [])
        assert parse_count(window) == window


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 200), writes=writes)
def test_the_run_cap_keeps_the_window_bounded_and_its_call_count_exact(size, writes):
    for window, history in replay(writes, size, max_runs=4):
        assert len(window) <= 1 + 3 * 4
        totals = count_totals(window)
        assert totals.calls == len(history[-size:])
        assert 0 <= totals.failures <= totals.calls and 0 <= totals.slow <= totals.calls
        assert parse_count(window) == window


def test_a_late_batch_never_pushes_out_failures_recorded_since_its_process_last_wrote():
    # Four processes were healthy; the dependency dies. Each one's first failure carries
    # the successes it batched before: they go before the others' fresh failures.
    window, seen = [0], [0, 0, 0, 0]
    for process in range(4):
        window = apply_count(window, 100, 0, seen[process], 5)
        seen[process] = window[0]
    for process in range(4):
        window = apply_count(window, 50, FAILED, seen[process], 5)
        seen[process] = window[0]
    assert count_totals(window) == Snapshot(5, 4, 0)  # S F F F F: one more failure trips
    window = apply_count(window, 0, FAILED, seen[0], 5)
    assert count_totals(window) == Snapshot(5, 5, 0)


def test_successes_after_a_process_saw_the_failures_do_end_the_streak():
    window = apply_count([0], 0, FAILED, 0, 5)
    window = apply_count(window, 0, FAILED, 0, 5)
    seen = window[0]  # this process's write came after both failures
    window = apply_count(window, 3, 0, seen, 5)
    assert window[1:] == [2, 2, 0, 3, 0, 0]  # F F S S S, oldest first


def test_malformed_values_read_as_an_empty_window():
    for value in (None, 7, "x", [], [1, 2], [0, 1, 2, 0], [0, 0, 0, 0], [-1], [0, 1, 0, 2]):
        assert parse_count(value) == [0]
    assert parse_count([9, 2, 1, 0]) == [9, 2, 1, 0]


def test_a_count_window_remembers_where_its_process_left_off():
    window = CountRuns("p", 5)
    change = window.change(Snapshot(1, 1, 0), 2, 0.0)
    assert (change.successes, change.outcome, change.seen) == (2, FAILED, 0)
    assert window.add_locally(change, 0.0) == Snapshot(3, 1, 0)
    assert window.seen == 3
    change = window.change(Snapshot(), 4, 0.0)
    assert (change.successes, change.outcome, change.seen) == (4, 0, 3)
    window.absorb({"p/count": [40, 5, 0, 0]}, 0.0, settled=False)
    assert window.estimate(0.0) == Snapshot(5, 0, 0)
    assert window.seen == 3  # a batch made before this read still goes after 3
    window.absorb({"p/count": [40, 5, 0, 0]}, 0.0)
    assert window.seen == 40  # with nothing batched: later successes follow what was read
    window.absorb({"p/count": "garbage"}, 0.0)
    assert window.estimate(0.0) == Snapshot()
    assert MAX_RUNS >= 8


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 12),
    writes=st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from([0, FAILED, SLOWED, FAILED | SLOWED])),
        max_size=30,
    ),
)
def test_append_to_count_is_apply_count_on_windows_apply_count_made(size, writes):
    window = [0]
    for successes, outcome in writes:
        if not (successes or outcome):
            continue
        expected = apply_count(window, successes, outcome, window[0], size)
        assert append_to_count(window, successes, outcome, window[0], size) == expected
        window = expected


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 12),
    writes=st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from([0, FAILED, SLOWED, FAILED | SLOWED])),
        max_size=30,
    ),
    outcome=st.sampled_from([FAILED, SLOWED, FAILED | SLOWED]),
)
def test_grown_by_is_apply_count_or_nothing(size, writes, outcome):
    window = [0]
    for successes, code in writes:
        if successes or code:
            window = apply_count(window, successes, code, window[0], size)
    grown = grown_by(window, count_totals(window).calls, outcome, size)
    expected = apply_count(window, 0, outcome, window[0], size)
    assert grown is None or (grown == expected and grown is not window)
    if grown is not None:  # nothing left the window: one call more
        assert count_totals(grown).calls == count_totals(window).calls + 1


def test_a_count_window_takes_its_own_failure_as_predicted_and_anything_else_parsed():
    window = CountRuns("p", 10)
    window.absorb({"p/count": [7, 3, 3, 0]}, 0.0)
    change = window.failure(0, 0.0)
    assert (change.successes, change.outcome, change.seen) == (0, FAILED, 7)
    assert change.known is window.window
    assert window.added(change, [8, 4, 4, 0], 0.0) == Snapshot(4, 4, 0)
    assert window.window == [8, 4, 4, 0] and window.seen == 8
    assert window.estimate(0.0) == Snapshot(4, 4, 0)
    # Another process wrote meanwhile: the window as returned (parsed, summed).
    change = window.failure(1, 0.0)
    assert change.outcome == FAILED | SLOWED
    assert window.added(change, [12, 3, 0, 0, 6, 6, 1, 1, 1, 1], 0.0) == Snapshot(10, 7, 2)
    assert window.seen == 12
    # Malformed: an empty window.
    assert window.added(window.failure(0, 0.0), [13, 3, 0, 0, 6, 6, 1, 1, 2, 1], 0.0) == Snapshot()
    assert window.added(window.failure(0, 0.0), "[1, 1, 1, 0]", 0.0) == Snapshot()
