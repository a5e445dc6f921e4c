"""DESIGN §3, "Batching never changes a decision", through real ``breaker()`` handles.

A process counts its successes in memory and writes them in batches (DESIGN §4). These
tests pin down that the batch is invisible: a batched success leaves a time window when
it would have had it been written at once, and the window an operator reads (the
runtime's snapshot, ``circuits show --json``, the status endpoint) is the window the
decision uses, never more than ``window_size`` calls in a count window.
"""

from __future__ import annotations

import json
from io import StringIO

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.core.management import call_command

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.fallbacks import last_good
from circuitbreaker_app.models import Circuit, CircuitEvent
from tests.helpers import FakeStore, window_snapshot

pytestmark = pytest.mark.django_db(transaction=True)

TIME_2S = {
    "window_type": "time",
    "window_size": 2,
    "minimum_calls": 2,
    "failure_rate_threshold": 100,
    "wait_duration": 30,
}


def ok() -> str:
    return "ok"


def boom() -> None:
    raise ConnectionError("upstream down")


def run(handle, letters: str) -> None:
    """Guard one call per letter: S succeeds, F fails (DESIGN §3 notation)."""
    for letter in letters:
        if letter == "S":
            handle.call(ok)
        else:
            with pytest.raises((ConnectionError, CircuitOpenError)):
                handle.call(boom)


def shown(name: str) -> dict:
    """The live window ``circuits show --json`` prints in this process."""
    out = StringIO()
    call_command("circuits", "show", name, "--json", stdout=out)
    return json.loads(out.getvalue())


def window_of(data: dict) -> tuple[int, int, float]:
    return data["calls"], data["failures"], data["failure_rate"]


def test_batched_successes_leave_a_time_window_on_time():
    # Issue 13, defect 1: S S, a pause longer than the window, then F F must open the
    # circuit: the window holds only the two failures.
    Circuit.objects.create(name="payments", **TIME_2S)
    process = FakeStore().install()
    payments = breaker("payments")
    run(payments, "SS")
    process.advance(3.2)
    run(payments, "FF")
    assert payments.state is State.OPEN
    event = CircuitEvent.objects.get(to_state="open")
    assert (event.calls, event.failure_rate) == (2, 100.0)


def test_bursts_of_successes_apart_report_only_the_last_burst_in_a_time_window():
    Circuit.objects.create(name="payments", **{**TIME_2S, "minimum_calls": 10})
    process = FakeStore().install()
    payments = breaker("payments")
    for burst in range(3):
        if burst:
            process.advance(3.2)
        run(payments, "S" if burst else "SS")
    assert window_of(shown("payments")) == (1, 0, 0.0)
    process.advance(0.5)
    run(payments, "F")
    assert window_of(shown("payments")) == (2, 1, 50.0)


COUNT_10 = {
    "window_type": "count",
    "window_size": 10,
    "minimum_calls": 10,
    "failure_rate_threshold": 70,
    "wait_duration": 30,
}


def test_the_reported_count_window_is_the_decision_window():
    # Issue 13, defect 2: after S S F F F F F F S S S S a window of 10 holds the last 10
    # calls (6 failed, 60 %), however many of its successes are still batched in memory.
    Circuit.objects.create(name="payments", **COUNT_10)
    FakeStore().install()
    payments = breaker("payments")
    run(payments, "SSFFFFFFSSSS")
    assert window_of(shown("payments")) == (10, 6, 60.0)
    # Then failures, until 7 of the last 10 have failed (the 19th call): after every call
    # the reported window is the last 10 calls, and the circuit opens when they say so.
    calls = "SSFFFFFFSSSS"
    for _ in range(7):
        assert payments.state is State.CLOSED
        run(payments, "F")
        calls += "F"
        last = calls[-10:]
        if payments.state is State.CLOSED:
            assert window_of(shown("payments"))[:2] == (len(last), last.count("F"))
    assert last.count("F") == 7 and payments.state is State.OPEN
    trip = CircuitEvent.objects.get(to_state="open")
    assert (trip.calls, trip.failure_rate) == (10, 70.0)
    assert shown("payments")["at_trip"]["calls"] == 10


def test_the_status_endpoint_reports_the_decision_window(client):
    Circuit.objects.create(name="payments", **{**COUNT_10, "window_size": 4, "minimum_calls": 4})
    FakeStore().install()
    payments = breaker("payments")
    run(payments, "SSFSSSS")
    user = User.objects.create_user("staff", password="pw", is_staff=True, is_superuser=True)
    client.force_login(user)
    data = client.get("/circuits/status/").json()
    (row,) = [c for c in data["circuits"] if c["name"] == "payments"]
    assert (row["calls"], row["failures"]) == (4, 0)


# -- a batched success is dated when its call ends --------------------------------------

#: Two calls with one failure open it: 50 % of at least 2 calls.
TIME_2S_HALF = {**TIME_2S, "failure_rate_threshold": 50}


def _takes(process: FakeStore, seconds: float):
    """A sync and an async function that succeed after ``seconds`` (the clock moves)."""

    def sync() -> str:
        process.advance(seconds)
        return "ok"

    async def coroutine() -> str:
        process.advance(seconds)
        return "ok"

    return sync, coroutine


def _with_block(handle, fn) -> None:
    with handle:
        fn()


async def _async_with_block(handle, fn) -> None:
    async with handle:
        await fn()


#: Each way of guarding a call: (handle options, how one call through a handle is made);
#: a fallback given as ``last_good`` is made afresh for each test.
WAYS = {
    "call": ({}, lambda handle, fn, afn: handle.call(fn)),
    "decorated": ({}, lambda handle, fn, afn: handle(fn)()),
    "with": ({}, lambda handle, fn, afn: _with_block(handle, fn)),
    "is_failure": ({"is_failure": lambda result: False}, lambda h, fn, afn: h.call(fn)),
    "fallback": ({"fallback": lambda exc: None}, lambda handle, fn, afn: handle(fn)()),
    "last_good": ({"fallback": last_good}, lambda handle, fn, afn: handle.call(fn)),
    "last_good decorated": ({"fallback": last_good}, lambda handle, fn, afn: handle(fn)()),
    "acall": ({}, lambda handle, fn, afn: async_to_sync(handle.acall)(afn)),
    "async decorated": ({}, lambda handle, fn, afn: async_to_sync(handle(afn))()),
    "async with": ({}, lambda handle, fn, afn: async_to_sync(_async_with_block)(handle, afn)),
    "acall, is_failure": (
        {"is_failure": lambda result: False},
        lambda handle, fn, afn: async_to_sync(handle.acall)(afn),
    ),
}


@pytest.mark.parametrize("timed", [False, True], ids=["plain", "slow calls timed"])
@pytest.mark.parametrize("way", sorted(WAYS))
@pytest.mark.parametrize(
    ("starts", "takes", "pause"),
    [(0.75, 0.5, 1.25), (0.0, 2.5, 0.0)],
    ids=["crosses a second", "outlasts the window"],
)
def test_a_batched_success_counts_in_the_second_it_ended(way, timed, starts, takes, pause):
    # DESIGN §3, "Batching never changes a decision": a success is counted when its call
    # ends, as a failure is. A success that starts at .75 and ends at 1.25 is in the
    # window until 3.0; one that runs from 0 to 2.5 is in it at 2.5. Dated at the start
    # of the call, both would have left a 2 s window by 2.5, and the failure then would
    # be 1 call of 1 (fewer than the minimum of 2), not 1 failure in 2 calls (50 %).
    options, guard = WAYS[way]
    config = {**TIME_2S_HALF, "slow_call_duration": 10.0 if timed else None}
    Circuit.objects.create(name="payments", **config)
    process = FakeStore().install()
    process.clock.set(1_000_000.0 + starts)
    if options.get("fallback") is last_good:
        options = {"fallback": last_good()}
    handle = breaker("payments", **options)
    quick, aquick = _takes(process, 0.0)
    guard(handle, quick, aquick)  # the handle knows its runtime: the call after is warm
    sync, coroutine = _takes(process, takes)
    guard(handle, sync, coroutine)
    process.advance(pause)
    assert window_snapshot("payments").calls == 1  # the long success, ended at 1.25 / 2.5
    run(breaker("payments"), "F")
    assert breaker("payments").state is State.OPEN
    event = CircuitEvent.objects.get(to_state="open")
    assert (event.calls, event.failure_rate) == (2, 50.0)
