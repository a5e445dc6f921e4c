"""The counters contract (``store/backends/base.py``), run on every backend.

One test class, parametrized over the backends the factory (``backends.connect``) picks:
LocMem, the database (``CircuitCounter`` table) and Redis. A new backend passes this
class before anything else (pybreaker's storage-based test case is the model).
"""

from __future__ import annotations

import time
import uuid

import pytest
from django.test import override_settings

from circuitbreaker_app.core import CircuitConfig, CircuitStatus, Snapshot, State
from circuitbreaker_app.store import backends
from circuitbreaker_app.store.entry import CircuitEntry
from circuitbreaker_app.store.keys import generation_prefix, state_key
from circuitbreaker_app.store.windows import (
    FAILED,
    SLOWED,
    BucketAdd,
    CountAdd,
    CountRuns,
    apply_count,
    count_totals,
    pack,
    unpack,
)
from tests.helpers import BACKENDS, backend_settings

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path):
    with override_settings(**backend_settings(request.param, tmp_path)):
        from django.conf import settings

        made = backends.connect(
            settings.CIRCUITBREAKER["CACHE"],
            "default",
            now=time.time,
            wall=time.time,
            clock_sink=None,
        )
        assert made.name == request.param
        yield made


@pytest.fixture
def prefix() -> str:
    """Keys no other test uses (Redis is shared by the whole run)."""
    return generation_prefix(f"contract-{uuid.uuid4().hex[:12]}", 0, circuit_id=1)


class TestCountersContract:
    """What the store relies on, whichever backend holds the counters."""

    def test_the_factory_names_the_backend_it_picks(self, backend):
        from django.conf import settings

        assert backends.backend_name(settings.CIRCUITBREAKER["CACHE"]) == backend.name

    def test_incr_creates_then_adds(self, backend, prefix):
        counters = backend.counters
        assert counters.incr(f"{prefix}/a", 3, 60, known=False) == 3
        assert counters.incr(f"{prefix}/a", 4, 60) == 7
        assert counters.incr(f"{prefix}/b", 5, 60, known=True) == 5  # "known" is a hint
        assert counters.get_many([f"{prefix}/a", f"{prefix}/b", f"{prefix}/c"]) == {
            f"{prefix}/a": 7,
            f"{prefix}/b": 5,
        }

    def test_a_claim_is_exclusive_until_released_by_its_holder(self, backend, prefix):
        counters = backend.counters
        key = f"{prefix}/trial0"
        assert counters.claim(key, 60, 11)
        assert not counters.claim(key, 60, 22)
        counters.release(key, 22)  # not the holder: frees nothing
        assert not counters.claim(key, 60, 33)
        counters.release(key, 11)
        assert counters.claim(key, 60, 44)
        assert counters.get_many([key]) == {key: 44}

    def test_delete_removes_a_key_and_tolerates_a_missing_one(self, backend, prefix):
        counters = backend.counters
        counters.incr(f"{prefix}/a", 1, 60)
        counters.delete(f"{prefix}/a")
        counters.delete(f"{prefix}/never")
        assert counters.get_many([f"{prefix}/a"]) == {}
        assert counters.get_many([]) == {}

    def test_add_count_is_apply_count_in_one_step(self, backend, prefix):
        counters = backend.counters
        key = f"{prefix}/count"
        expected = [0]
        writes = [(2, FAILED, 0), (0, FAILED, 3), (3, 0, 4), (1, FAILED, 0)]
        for successes, outcome, seen in writes:
            change = CountAdd(key, 60, successes, outcome, seen, 5, expected)
            expected = apply_count(expected, successes, outcome, seen, 5)
            assert counters.add_count(change) == expected
        assert counters.get_many([key]) == {key: expected}
        assert count_totals(expected).calls == 5

    def test_writers_of_one_count_window_see_each_others_writes(self, backend, prefix):
        # Two stores of one process (two counters objects on one backend) and one store
        # writing in turn: each write is apply_count on the window as the last one left it,
        # its totals are the window's, and a read gets the plain window.
        from django.conf import settings

        other = backends.connect(
            settings.CIRCUITBREAKER["CACHE"],
            "default",
            now=time.time,
            wall=time.time,
            clock_sink=None,
        ).counters
        key = f"{prefix}/count"
        expected = [0]
        writers = [backend.counters, backend.counters, other, backend.counters, other, other]
        for step, counters in enumerate(writers * 2):
            successes, outcome = step % 2, (FAILED if step % 3 else SLOWED)
            change = CountAdd(key, 60, successes, outcome, expected[0], 7, expected)
            expected = apply_count(expected, successes, outcome, expected[0], 7)
            window, _ = counters.add(change, True, None)
            assert window == expected
            assert CountRuns(prefix, 7).added(change, window, 0.0) == count_totals(expected)
            read = other.get_many([key])[key]
            assert type(read) is list and read == expected

    def test_add_records_a_bucket_or_a_count_window(self, backend, prefix):
        counters = backend.counters
        bucket = BucketAdd(f"{prefix}/t1", 60, pack(Snapshot(1, 1, 0)) + 2, 1)
        value, entry = counters.add(bucket, False, None)
        assert unpack(value) == Snapshot(3, 1, 0) and entry is None
        count = CountAdd(f"{prefix}/count", 60, 2, FAILED, 0, 10, [0])
        window, entry = counters.add(count, False, None)
        assert window == apply_count([0], 2, FAILED, 0, 10) and entry is None

    def test_add_hands_back_a_newer_state_entry_or_nothing(self, backend, prefix):
        # A backend that reads the watched state entry in the same round trip returns it
        # when its generation (or circuit) is not the writer's; others return None.
        name = f"contract-{uuid.uuid4().hex[:12]}"
        status = CircuitStatus(State.OPEN, generation=3, open_count=1)
        newer = CircuitEntry(7, status, CircuitConfig())
        backend.cache.set(state_key(name), newer.to_json(), timeout=60)
        change = BucketAdd(f"{prefix}/t1", 60, 1, 1)
        _, entry = backend.counters.add(change, True, (state_key(name), 2, 7))
        assert entry in (None, newer)
        _, entry = backend.counters.add(change, True, (state_key(name), 3, 7))
        assert entry is None  # the writer knows this generation already

    def test_values_are_kept_apart_per_key(self, backend, prefix):
        counters = backend.counters
        counters.incr(f"{prefix}/a", 1, 60)
        counters.claim(f"{prefix}/b", 60, 9)
        counters.add_count(CountAdd(f"{prefix}/c", 60, 1, 0, 0, 3, [0]))
        assert counters.get_many([f"{prefix}/a", f"{prefix}/b", f"{prefix}/c"]) == {
            f"{prefix}/a": 1,
            f"{prefix}/b": 9,
            f"{prefix}/c": [1, 1, 0, 0],
        }

    def test_purge_and_after_fork_keep_live_values(self, backend, prefix):
        counters = backend.counters
        counters.incr(f"{prefix}/a", 2, 60)
        counters.purge_expired()
        counters.after_fork()
        assert counters.get_many([f"{prefix}/a"]) == {f"{prefix}/a": 2}

    def test_through_a_counting_cache_keeps_the_values(self, backend, prefix):
        from circuitbreaker_app.testing import CountingCache

        counting = CountingCache(backend.cache)
        counters = backend.counters.through(counting)
        assert counters.incr(f"{prefix}/a", 2, 60, known=False) == 2
        assert counters.get_many([f"{prefix}/a"]) == {f"{prefix}/a": 2}
        # Operations in the cache (or standing for cache calls) are counted; a database
        # table's are queries, counted by django_assert_num_queries instead.
        assert counting.total == (2 if counters.in_cache else 0)
