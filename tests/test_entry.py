"""The shared entry (store/entry.py): one CircuitEntry, built from a row, from the settings
alone, or from what the cache holds, and written back in the format 0.2 wrote, so that
processes of two versions can share a cache during a rolling upgrade. Anything at a state
key that is not a well-formed entry of ours is a miss (None), never an error."""

from __future__ import annotations

import json
import math
from dataclasses import FrozenInstanceError, asdict
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circuitbreaker_app.core import CircuitConfig, CircuitStatus, State
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store.entry import PROVISIONAL_ID, CircuitEntry
from circuitbreaker_app.store.keys import state_key
from tests.helpers import FakeStore

#: The keys of an entry as 0.2 writes them (what Redis's Lua scripts and older processes read).
WIRE_KEYS = {
    "id",
    "state",
    "generation",
    "open_count",
    "opened_at",
    "retry_at",
    "changed_at",
    "forced_until",
    "config",
}
CONFIG = CircuitConfig(window_type="count", window_size=4, minimum_calls=2, wait_duration=5.0)
OPEN = CircuitStatus(
    state=State.OPEN,
    generation=3,
    open_count=2,
    opened_at=1_700_000_000.25,
    retry_at=1_700_000_010.25,
    changed_at=1_700_000_000.25,
)
#: A well-formed entry as 0.2 wrote it (JSON values only).
GOOD = CircuitEntry(7, OPEN, CONFIG).to_json()


def test_an_entry_survives_a_round_trip_through_json():
    forced = CircuitStatus(State.FORCED_OPEN, 4, 2, None, None, 1_700_000_001.0, 1_700_000_900.5)
    for entry in (CircuitEntry(7, OPEN, CONFIG), CircuitEntry(8, forced, CircuitConfig())):
        text = json.dumps(entry.to_json(), allow_nan=False)  # what the Redis path stores
        assert CircuitEntry.from_json(json.loads(text)) == entry
        assert CircuitEntry.from_json(entry.to_json()) == entry  # what a Django cache pickles


def test_the_wire_format_is_the_one_0_2_writes():
    raw = CircuitEntry(7, OPEN, CONFIG).to_json()
    assert set(raw) == WIRE_KEYS
    assert raw["id"] == 7 and raw["state"] == "open" and raw["generation"] == 3
    assert (raw["open_count"], raw["retry_at"], raw["forced_until"]) == (2, 1_700_000_010.25, None)
    assert raw["config"] == asdict(CONFIG)


def test_an_entry_written_before_0_2_has_no_end_for_forced_states_and_still_reads():
    old = {key: value for key, value in GOOD.items() if key != "forced_until"}
    entry = CircuitEntry.from_json(old)
    assert entry is not None
    assert entry.status == OPEN and entry.status.forced_until is None
    assert entry.circuit_id == 7 and entry.config == CONFIG


def test_a_process_takes_an_entry_written_before_0_2_instead_of_reloading_it(db):
    """A rolling upgrade: an older process published this entry; a new one uses it (the
    row says CLOSED at generation 0: a miss would have reloaded that)."""
    row = Circuit.objects.create(name="payments", window_size=4, minimum_calls=2)
    fake = FakeStore(clock=None)
    retry_at = fake.store.now() + 30
    old = {**GOOD, "id": row.pk, "retry_at": retry_at, "config": row.definition()}
    del old["forced_until"]
    fake.store.cache.set(state_key("payments"), old, timeout=None)
    runtime = fake.runtime("payments")
    assert runtime.entry.status.state is State.OPEN and runtime.entry.generation == 3
    assert runtime.retry_after == pytest.approx(30)


def test_keys_the_entry_does_not_know_are_ignored():
    raw = {**GOOD, "written_by": "0.3", "config": {**GOOD["config"], "colour": "blue"}}
    assert CircuitEntry.from_json(raw) == CircuitEntry(7, OPEN, CONFIG)


def test_the_config_is_parsed_once_when_the_entry_is_read():
    entry = CircuitEntry.from_json(GOOD)
    assert entry is not None
    assert isinstance(entry.config, CircuitConfig)
    assert entry.config is entry.with_status(CircuitStatus()).config  # shared, never re-parsed


def test_an_entry_is_frozen_and_with_status_keeps_the_circuit_and_its_definition():
    entry = CircuitEntry(7, OPEN, CONFIG)
    with pytest.raises(FrozenInstanceError):
        entry.circuit_id = 8  # type: ignore[misc]
    closed = entry.with_status(CircuitStatus(generation=4))
    assert (closed.circuit_id, closed.config, closed.generation) == (7, CONFIG, 4)
    assert entry.status is OPEN  # the original is unchanged


def test_from_row_holds_the_rows_state_and_definition(db):
    row = Circuit.objects.create(name="payments", window_size=7, minimum_calls=3)
    opened = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    Circuit.objects.filter(pk=row.pk).update(
        state="forced_open",
        generation=5,
        open_count=2,
        opened_at=opened,
        changed_at=opened,
        forced_until=opened + timedelta(minutes=15),
    )
    row.refresh_from_db()
    entry = CircuitEntry.from_row(row)
    assert entry.circuit_id == row.pk
    assert entry.status == CircuitStatus(
        state=State.FORCED_OPEN,
        generation=5,
        open_count=2,
        opened_at=opened.timestamp(),
        retry_at=None,
        changed_at=opened.timestamp(),
        forced_until=opened.timestamp() + 900,
    )
    assert entry.config == row.config()
    assert entry.to_json()["config"] == row.definition()  # what 0.2 put in the cache


def test_a_provisional_entry_is_closed_and_defined_by_the_settings(db, settings):
    settings.CIRCUITBREAKER = {
        "DEFAULTS": {"window_size": 9, "minimum_calls": 9},
        "CIRCUITS": {"payments": {"minimum_calls": 3, "wait_duration": 60}},
    }
    entry = CircuitEntry.provisional("payments")
    assert entry.circuit_id == PROVISIONAL_ID
    assert entry.status == CircuitStatus()  # CLOSED, generation 0
    assert (entry.config.window_size, entry.config.minimum_calls) == (9, 3)
    assert entry.config.wait_duration == 60
    assert Circuit.objects.count() == 0  # nothing written


def test_a_provisional_entry_with_invalid_settings_uses_the_models_defaults(db, settings):
    settings.CIRCUITBREAKER = {"CIRCUITS": {"payments": {"window_size": 0}}}
    assert CircuitEntry.provisional("payments").config == Circuit(name="payments").config()


MALFORMED = {
    "a string": "hello",
    "a list": [1, 2],
    "a number": 12,
    "None": None,
    "an empty dict": {},
    "the entry's JSON text": json.dumps(GOOD),
    "no id": {k: v for k, v in GOOD.items() if k != "id"},
    "no state": {k: v for k, v in GOOD.items() if k != "state"},
    "no generation": {k: v for k, v in GOOD.items() if k != "generation"},
    "no open_count": {k: v for k, v in GOOD.items() if k != "open_count"},
    "no config": {k: v for k, v in GOOD.items() if k != "config"},
    "an unknown state": {**GOOD, "state": "bogus"},
    "a state in upper case": {**GOOD, "state": "OPEN"},
    "a state that is a list": {**GOOD, "state": ["open"]},
    "a state that is a dict": {**GOOD, "state": {"open": 1}},
    "an id that is text": {**GOOD, "id": "7"},
    "an id that is a bool": {**GOOD, "id": True},
    "an id that is a float": {**GOOD, "id": 7.0},
    "a generation that is text": {**GOOD, "generation": "3"},
    "a negative generation": {**GOOD, "generation": -1},
    "a generation that is a float": {**GOOD, "generation": 3.0},
    "a generation that is a bool": {**GOOD, "generation": True},
    "a negative open_count": {**GOOD, "open_count": -2},
    "a time that is text": {**GOOD, "retry_at": "soon"},
    "a time that is NaN": {**GOOD, "opened_at": math.nan},
    "a time that is infinite": {**GOOD, "retry_at": math.inf},
    "a time far beyond any date": {**GOOD, "changed_at": 1e12},
    "a forced end that is a list": {**GOOD, "forced_until": [1]},
    "a config that is a list": {**GOOD, "config": [4, 2]},
    "a config that is text": {**GOOD, "config": "count"},
    "a config with an invalid value": {**GOOD, "config": {**GOOD["config"], "window_size": 0}},
    "a config with a value of the wrong type": {
        **GOOD,
        "config": {**GOOD["config"], "window_size": "four"},
    },
    "a config with an unknown window type": {
        **GOOD,
        "config": {**GOOD["config"], "window_type": "fortnight"},
    },
}


@pytest.mark.parametrize("raw", list(MALFORMED.values()), ids=list(MALFORMED))
def test_every_malformed_shape_is_a_miss(raw):
    assert CircuitEntry.from_json(raw) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            key: JSON | st.sampled_from([GOOD[key]]) for key in sorted(WIRE_KEYS - {"config"})
        }
        | {"config": st.dictionaries(st.sampled_from(sorted(GOOD["config"])), JSON)},
    )
    | JSON
)
def test_whatever_a_cache_holds_reads_as_an_entry_or_a_miss_never_an_error(raw):
    entry = CircuitEntry.from_json(raw)
    if entry is not None:
        assert CircuitEntry.from_json(entry.to_json()) == entry
