"""Whatever is in the shared cache, a guarded call never fails because of it (DESIGN §4).

A missing, malformed or foreign value at any key of a circuit (its state entry, window
buckets, count window, trial permits and trial marks) is a miss: the state is reloaded
from the database and rewritten, counters start again from empty. Tried on every
backend, first with the shapes a new user tried (issue 13), then with hypothesis writing
garbage into every shared key of a circuit.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import uuid

import pytest
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.core import FakeClock
from circuitbreaker_app.models import Circuit, CircuitCounter
from circuitbreaker_app.store import reset_store
from circuitbreaker_app.store.entry import CircuitEntry
from circuitbreaker_app.store.keys import generation_prefix, state_key
from tests.helpers import BACKENDS, FakeStore, backend_settings

pytestmark = pytest.mark.django_db(transaction=True)

CONFIG = {
    "window_type": "count",
    "window_size": 4,
    "minimum_calls": 2,
    "failure_rate_threshold": 50,
    "wait_duration": 1,
    "half_open_max_calls": 2,
}
VALID = {
    "id": 1,
    "state": "closed",
    "generation": 0,
    "open_count": 0,
    "opened_at": None,
    "retry_at": None,
    "changed_at": None,
    "config": {"window_type": "count", "window_size": 4, "minimum_calls": 2},
}
#: What a new user wrote at a circuit's state key (issue 13): each made every call fail.
MALFORMED_ENTRIES = [
    "hello",
    [1, 2],
    {},
    {"state": "bogus"},
    {**VALID, "config": {**VALID["config"], "window_size": 0}},
    {**VALID, "generation": "3"},
    {**VALID, "state": ["closed"]},
    {**VALID, "retry_at": "soon"},
    12,
    None,
]


def ok() -> str:
    return "ok"


def boom() -> None:
    raise ConnectionError("upstream down")


def guard(name: str, letters: str) -> None:
    """Guarded calls (S succeeds, F fails): nothing but the call's own error or a rejection
    may come out."""
    handle = breaker(name)
    for letter in letters:
        try:
            handle.call(ok if letter == "S" else boom)
        except (ConnectionError, CircuitOpenError):
            pass


def write(process: FakeStore, key: str, value: object) -> None:
    """Put ``value`` at the store key ``key`` wherever this backend keeps that key."""
    store = process.store
    if not store.counters.in_cache and key != state_key(key.split("{")[1].split("}")[0]):
        # the database backend keeps counters in their table: garbage goes there
        data = value if isinstance(value, str) else repr(value)
        # PostgreSQL text cannot hold NUL, so no such garbage can be found there.
        data = data.replace("\x00", "")
        CircuitCounter.objects.update_or_create(
            key=key, defaults={"value": 0, "data": data, "expires_at": store.now() + 3600}
        )
        return
    if isinstance(value, bytes):
        if store.redis is not None:  # not even JSON
            store.redis.client.set(store.redis.make_key(key), value)
        return
    store.cache.set(key, value, timeout=None)


def shared_keys(name: str, now: float) -> list[str]:
    """Every key a circuit (created already) uses in its first generations."""
    keys = [state_key(name)]
    circuit_id = Circuit.objects.get(name=name).pk
    for generation in range(3):
        prefix = generation_prefix(name, generation, circuit_id=circuit_id)
        keys.append(f"{prefix}/count")
        keys += [f"{prefix}/t{math.floor(now) - back}" for back in range(3)]
        keys += [f"{prefix}/trial{slot}" for slot in range(2)]
        keys += [f"{prefix}/ok{slot}" for slot in range(2)]
    return keys


@pytest.fixture(params=BACKENDS)
def process(request, tmp_path):
    with override_settings(**backend_settings(request.param, tmp_path)):
        fake = FakeStore(FakeClock(1_000_000.0)).install()
        yield fake
        reset_store()


@pytest.mark.parametrize("garbage", MALFORMED_ENTRIES, ids=repr)
@pytest.mark.parametrize("when", ["before first use", "after first use"])
def test_a_malformed_state_entry_is_a_miss_rewritten_from_the_database(process, garbage, when):
    Circuit.objects.create(name="payments", **CONFIG)
    if when == "after first use":
        guard("payments", "S")
        process.advance(1.0)  # the next call refreshes the snapshot
    write(process, state_key("payments"), garbage)
    guard("payments", "SFSF")
    assert CircuitEntry.from_json(process.store.cache.get(state_key("payments"))) is not None
    # The circuit still decides: F S F F in a window of 4, minimum 2, 50 %.
    assert breaker("payments").state is State.OPEN


def test_garbage_that_is_not_even_json_is_a_miss_too(process):
    Circuit.objects.create(name="payments", **CONFIG)
    for key in shared_keys("payments", process.clock()):
        write(process, key, b"\x80\x81 not json")
    guard("payments", "SSFF")
    assert breaker("payments").state is State.OPEN


def test_garbage_in_the_permits_never_sticks_a_circuit_in_half_open(process):
    Circuit.objects.create(name="payments", **CONFIG)
    guard("payments", "FF")
    assert breaker("payments").state is State.OPEN
    for key in shared_keys("payments", process.clock()):
        if "/trial" in key or "/ok" in key:
            write(process, key, "garbage")
    process.advance(1.0)
    guard("payments", "SS")  # two trials: the garbage neither blocks nor counts as one
    assert breaker("payments").state is State.CLOSED


# -- fuzz -------------------------------------------------------------------------------------

GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.binary(max_size=12),
    st.lists(st.integers(min_value=-5, max_value=2**40), max_size=7),
    st.dictionaries(st.sampled_from(sorted(VALID)), st.integers() | st.text(max_size=5)),
    st.builds(
        lambda field, value: {**VALID, field: value},
        st.sampled_from(sorted(VALID)),
        st.none() | st.integers(-3, 3) | st.text(max_size=8) | st.just({"window_size": 0}),
    ),
)
FUZZ_EXAMPLES = int(os.environ.get("CB_FUZZ_EXAMPLES") or 40)
# Names never used before: Redis keeps a circuit's counters across test runs.
names = (f"fuzz-{uuid.uuid4().hex[:8]}-{n}" for n in itertools.count())


@given(
    config=st.fixed_dictionaries(
        {"window_type": st.sampled_from(["count", "time"]), "window_size": st.integers(2, 5)}
    ),
    garbage=st.lists(GARBAGE, min_size=1, max_size=40),
    script=st.lists(st.sampled_from(["S", "F", "wait", "pause"]), max_size=25),
)
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_garbage_in_every_shared_key_never_fails_a_guarded_call(process, config, garbage, script):
    name = next(names)
    Circuit.objects.create(name=name, **{**CONFIG, **config, "minimum_calls": 2})
    if script[:1] == ["S"]:
        guard(name, "S")  # sometimes the process knows the circuit before the garbage
    keys = shared_keys(name, process.clock())
    for key, value in zip(keys, itertools.cycle(garbage), strict=False):
        write(process, key, value)
    for step in script:
        if step in ("S", "F"):
            guard(name, step)
        else:
            process.advance(1.0 if step == "pause" else 0.25)
    process.advance(1.0)
    guard(name, "S")  # a refresh: whatever was at the state key is a good entry again
    assert CircuitEntry.from_json(process.store.cache.get(state_key(name))) is not None


def test_the_beat_task_rewrites_a_malformed_entry_through_the_publish_path(process):
    from circuitbreaker_app.tasks import resync_cache

    Circuit.objects.create(name="payments", **CONFIG)
    Circuit.objects.create(name="search", **CONFIG)
    guard("payments", "S")
    guard("search", "S")
    write(process, state_key("payments"), "hello")
    assert resync_cache(process.store) == 1
    entry = CircuitEntry.from_json(process.store.cache.get(state_key("payments")))
    assert entry is not None and entry.circuit_id == Circuit.objects.get(name="payments").pk


# -- a database row made invalid behind the model's back -----------------------------------


def invalidate(name: str) -> None:
    """An UPDATE that bypasses the model's validation (a data migration, psql): the row no
    longer makes a valid definition."""
    Circuit.objects.filter(name=name).update(window_size=0)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_resync_skips_a_row_made_invalid_and_repairs_the_others(process, caplog):
    from circuitbreaker_app.tasks import resync_cache

    for name in ("payments", "search", "users"):
        Circuit.objects.create(name=name, **CONFIG)
        guard(name, "S")
        write(process, state_key(name), "hello")
    invalidate("search")
    with caplog.at_level(logging.INFO, logger="circuitbreaker_app"):
        assert resync_cache(process.store) == 2
    for name in ("payments", "users"):
        entry = CircuitEntry.from_json(process.store.cache.get(state_key(name)))
        assert entry is not None and entry.circuit_id == Circuit.objects.get(name=name).pk
    assert process.store.cache.get(state_key("search")) == "hello"  # nothing published
    [error] = errors(caplog)
    assert "'search'" in error and "window_size" in error


@pytest.mark.parametrize("when", ["before first use", "after first use"])
def test_a_row_made_invalid_never_fails_a_guarded_call(process, caplog, when):
    Circuit.objects.create(name="payments", **CONFIG)
    if when == "after first use":
        guard("payments", "S")
    invalidate("payments")
    write(process, state_key("payments"), "hello")  # a miss: the next read goes to the row
    with caplog.at_level(logging.INFO, logger="circuitbreaker_app"):
        for _ in range(3):
            guard("payments", "SSSS")
            process.advance(1.0)  # each call after this refreshes, reading the row again
        rows = process.store.refresh_rows(Circuit.objects.filter(name="payments"))
    # The last valid definition this process knew decides, else the settings' (as with a
    # database that cannot answer on first use); nothing is published from the row.
    held = process.runtime("payments").entry.config
    if when == "after first use":
        assert held.window_size == CONFIG["window_size"]
    else:
        assert held == CircuitEntry.provisional("payments").config
    assert rows["payments"] is process.runtime("payments")
    assert process.store.cache.get(state_key("payments")) == "hello"
    [error] = errors(caplog)  # once, however many reads
    assert "'payments'" in error and "window_size" in error
    # Repaired (here through the model): the next refresh takes it and publishes it.
    circuit = Circuit.objects.get(name="payments")
    circuit.window_size = 4
    circuit.save()
    process.advance(1.0)
    guard("payments", "S")
    entry = CircuitEntry.from_json(process.store.cache.get(state_key("payments")))
    assert entry is not None and entry.circuit_id == circuit.pk
    assert process.runtime("payments").circuit_id == circuit.pk
