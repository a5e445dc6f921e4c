"""Count windows as runs of outcomes: the arithmetic every backend applies to a count
window in one atomic step (``backends/lua/count.lua`` is a line-by-line port of
:func:`apply_count`), and the shortcut of a failure's
common write (:func:`grown_by`).

A count window is a flat list ``[seq, n1, f1, s1, n2, f2, s2, ...]``: ``seq`` counts every
call recorded in this generation, then runs oldest first, each ``n`` calls of which ``f``
failed and ``s`` were slow. A run is "pure" when all or none of its calls failed and all
or none were slow; only the cap of :data:`MAX_RUNS` makes mixed ones.
"""

from __future__ import annotations

from operator import le
from typing import Any

from circuitbreaker_app.core import Snapshot

#: Runs a count window keeps before merging its two oldest (then only approximately
#: ordered). Patterns of calls that need more are rare: failures come in streaks and
#: successes in batches.
MAX_RUNS = 32
#: Outcome codes of :func:`apply_count` (bit flags).
FAILED = 1
SLOWED = 2


def _split(run: list[int], older: int) -> tuple[list[int], list[int]]:
    """Cut ``run`` after its ``older`` oldest calls (a mixed run shares out its counts)."""
    n, f, s = run
    newer = n - older
    f_newer = (2 * f * newer + n) // (2 * n)
    s_newer = (2 * s * newer + n) // (2 * n)
    return [older, f - f_newer, s - s_newer], [newer, f_newer, s_newer]


def _pure(run: list[int]) -> bool:
    n, f, s = run
    return f in (0, n) and s in (0, n)


def _same_kind(a: list[int], b: list[int]) -> bool:
    return _pure(a) and _pure(b) and (a[1] > 0) == (b[1] > 0) and (a[2] > 0) == (b[2] > 0)


def parse_count(value: Any) -> list[int]:
    """A count window read from a store, or an empty one for anything malformed.

    Every check loops in C (``map``, ``min``): a failure parses the window it wrote."""
    if type(value) is not list or len(value) % 3 != 1 or set(map(type, value)) != {int}:
        return [0]
    calls = value[1::3]
    if min(value) < 0 or (calls and min(calls) <= 0):
        return [0]
    if not all(map(le, value[2::3], calls)) or not all(map(le, value[3::3], calls)):
        return [0]
    return value


def count_totals(window: list[int]) -> Snapshot:
    """(calls, failures, slow) of a count window."""
    return Snapshot(sum(window[1::3]), sum(window[2::3]), sum(window[3::3]))


def apply_count(
    window: list[int],
    successes: int,
    outcome: int,
    seen: int,
    size: int,
    max_runs: int = MAX_RUNS,
) -> list[int]:
    """``window`` after a batch of ``successes`` and then one ``outcome`` (0 for none, else
    :data:`FAILED` | :data:`SLOWED`) from a process whose previous write ended at ``seen``.

    The successes go before the calls recorded after ``seen`` (see the module docstring),
    the outcome goes last, and the window keeps its newest ``size`` calls.
    """
    seq = window[0]
    runs = [window[i : i + 3] for i in range(1, len(window), 3)]
    if successes > 0:
        back = max(0, seq - seen)
        at = len(runs)
        while back > 0 and at > 0:
            n = runs[at - 1][0]
            if n <= back:
                back -= n
                at -= 1
            else:
                older, newer = _split(runs[at - 1], n - back)
                runs[at - 1 : at] = [older, newer]
                back = 0
        runs.insert(at, [successes, 0, 0])
        seq += successes
    if outcome:
        runs.append([1, outcome & FAILED, (outcome & SLOWED) >> 1])
        seq += 1
    merged: list[list[int]] = []
    for run in runs:
        if merged and _same_kind(merged[-1], run):
            last = merged[-1]
            merged[-1] = [last[0] + run[0], last[1] + run[1], last[2] + run[2]]
        else:
            merged.append(run)
    total = sum(run[0] for run in merged)
    while total > size:
        excess = total - size
        if merged[0][0] <= excess:
            total -= merged.pop(0)[0]
        else:
            merged[0] = _split(merged[0], excess)[1]
            total = size
    while len(merged) > max_runs:
        a, b = merged[0], merged[1]
        merged[0:2] = [[a[0] + b[0], a[1] + b[1], a[2] + b[2]]]
    return [seq, *(value for run in merged for value in run)]


def append_to_count(
    window: list[int], successes: int, outcome: int, seen: int, size: int
) -> list[int]:
    """:func:`apply_count` for a window :func:`apply_count` made (no two neighbouring runs
    of one kind), which a backend knows when it wrote the window itself. The common write
    of a failure (see :func:`grown_by`) is a copy with three numbers changed; anything
    else is :func:`apply_count`'s."""
    if not successes and outcome:
        grown = grown_by(window, sum(window[1::3]), outcome, size)
        if grown is not None:
            return grown
    return apply_count(window, successes, outcome, seen, size)


def grown_by(window: list[int], calls: int, outcome: int, size: int) -> list[int] | None:
    """``apply_count(window, 0, outcome, seen, size)`` for a well-formed ``window`` holding
    ``calls`` calls, when that is the common write of a failure — the outcome joins the
    newest run and nothing leaves the window: a copy with three numbers changed (no run
    table, no sum); else None."""
    if calls >= size or len(window) < 4:
        return None
    n, f, s = window[-3], window[-2], window[-1]
    failed, slowed = outcome & FAILED, (outcome & SLOWED) >> 1
    if not ((f == n if failed else f == 0) and (s == n if slowed else s == 0)):
        return None
    grown = window.copy()
    grown[0] += 1
    grown[-3] = n + 1
    grown[-2] = f + failed
    grown[-1] = s + slowed
    return grown
