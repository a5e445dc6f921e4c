"""``last_good``: serve the last successful answer of the same call while a dependency is down.

Real ``breaker()`` handles on the test store (fake clock, counted cache); the answers live
in the store's shared cache, written through ``store.remember``.
"""

from __future__ import annotations

import logging
import threading

import pytest
from asgiref.sync import async_to_sync

from circuitbreaker_app import CircuitOpenError, State, breaker
from circuitbreaker_app.fallbacks import LastGood, last_good
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import get_store
from circuitbreaker_app.store.keys import answer_key
from tests.helpers import FakeStore
from tests.test_async import watch

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake():
    Circuit.objects.create(
        name="stock",
        window_type="count",
        window_size=2,
        minimum_calls=2,
        failure_rate_threshold=100,
        wait_duration=30,
    )
    return FakeStore().install()


class Upstream:
    """A partner whose answers and failures the test sets; counts the calls that reach it."""

    def __init__(self) -> None:
        self.level = 7
        self.down = False
        self.calls = 0

    def stock(self, sku: str) -> dict[str, object]:
        self.calls += 1
        if self.down:
            raise ConnectionError("partner down")
        return {"sku": sku, "level": self.level}


def count_answer_writes(fake: FakeStore) -> list[str]:
    """The keys of every answer written to the shared cache from now on."""
    written: list[str] = []
    remember = fake.store.remember_pickled

    def counted(name: str, key: str, data: bytes, ttl: float) -> bool:
        written.append(key)
        return remember(name, key, data, ttl)

    fake.store.remember_pickled = counted
    return written


def test_a_rejection_is_answered_with_the_last_good_result_of_the_same_call(fake):
    partner = Upstream()
    stock = breaker("stock", fallback=last_good(ttl=300))(partner.stock)
    assert stock("A1") == {"sku": "A1", "level": 7}
    assert stock("B2") == {"sku": "B2", "level": 7}
    partner.down, partner.level = True, 0
    for _ in range(2):  # recorded failures: answered from the last good results
        assert stock("A1") == {"sku": "A1", "level": 7}
    assert breaker("stock").state is State.OPEN
    calls = partner.calls
    assert stock("B2") == {"sku": "B2", "level": 7}  # a rejection, answered
    assert partner.calls == calls  # the open circuit sent nothing
    with pytest.raises(CircuitOpenError):
        stock("C3")  # never succeeded: nothing to serve, the original error


def test_without_a_kept_answer_the_original_failure_is_raised(fake):
    guarded = breaker("stock", fallback=last_good())

    def down() -> None:
        raise ConnectionError("partner down")

    with pytest.raises(ConnectionError, match="partner down"):
        guarded.call(down)


def test_answers_expire_after_ttl_and_stale_reports_their_age(fake):
    partner = Upstream()
    served = []
    fallback = last_good(ttl=60, refresh=5, stale=lambda value, age: served.append(age) or value)
    stock = breaker("stock", fallback=fallback)(partner.stock)
    stock("A1")
    partner.down = True
    fake.advance(20)
    assert stock("A1")["level"] == 7
    fake.advance(3)  # within refresh: this process reuses what it read, aged
    assert stock("A1")["level"] == 7
    assert served == [pytest.approx(20), pytest.approx(23)]
    fake.advance(40)  # 63 s old: too old to serve
    with pytest.raises((ConnectionError, CircuitOpenError)):
        stock("A1")


def test_a_success_is_stored_at_most_once_per_refresh_per_key(fake):
    partner = Upstream()
    written = count_answer_writes(fake)
    stock = breaker("stock", fallback=last_good(ttl=300, refresh=10))(partner.stock)
    for _ in range(50):
        stock("A1")
    assert len(written) == 1  # 50 successes inside refresh: one write
    stock("B2")
    assert len(written) == 2  # another key
    fake.advance(9.9)
    stock("A1")
    assert len(written) == 2
    fake.advance(0.1)
    partner.level = 9
    stock("A1")
    assert written == [
        f"tests.test_fallbacks.Upstream.stock({sku!r},)[]" for sku in "A1 B2 A1".split()
    ]
    partner.down = True
    assert stock("A1")["level"] == 9  # the renewed answer


def test_ignored_errors_and_errors_outside_record_are_not_answered(fake):
    stock = breaker("stock", record=(ConnectionError,), ignore=(KeyError,), fallback=last_good())
    assert stock.call(lambda: 1) == 1
    with pytest.raises(KeyError):
        stock.call(lambda: {}["x"])
    with pytest.raises(ValueError):
        stock.call(lambda: int("x"))

    @stock
    def parse(text: str) -> int:
        return {"1": 1}[text] if text.isdigit() else int(text)

    assert parse("1") == 1
    for _ in range(2):  # the first call loads the circuit, the second is the wrapper's own
        with pytest.raises(KeyError):
            parse("2")
        with pytest.raises(ValueError):
            parse("x")


def test_keys_decide_which_calls_are_the_same(fake):
    partner = Upstream()
    by_sku = last_good(key=lambda sku, **options: sku)
    stock = breaker("stock", fallback=by_sku)(partner.stock)
    stock("A1")
    partner.down = True
    assert stock("A1")["sku"] == "A1"
    assert by_sku.shared_key(partner.stock, ("A1",), {}) == "A1"
    default = last_good()
    assert default.shared_key(partner.stock, ("A1",), {"b": 2, "a": 1}) == (
        "tests.test_fallbacks.Upstream.stock('A1',)[('a', 1), ('b', 2)]"
    )


def test_unhashable_arguments_still_have_a_key(fake):
    answered = []

    def total(items: list[int]) -> int:
        if answered:
            raise ConnectionError("down")
        answered.append(items)
        return sum(items)

    guarded = breaker("stock", fallback=last_good())
    assert guarded.call(total, [1, 2]) == 3
    assert guarded.call(total, [1, 2]) == 3  # failed: answered by the kept result
    with pytest.raises(ConnectionError):
        guarded.call(total, [3])  # another key: nothing kept


def test_unpicklable_results_are_never_stored_and_warned_about_once(fake, caplog):
    guarded = breaker("stock", fallback=last_good(refresh=0))
    lock = threading.Lock()
    with caplog.at_level(logging.WARNING, logger="circuitbreaker_app"):
        for _ in range(3):
            assert guarded.call(lambda: lock) is lock
    warnings = [r for r in caplog.records if "cannot keep" in r.getMessage()]
    assert len(warnings) == 1

    def down() -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        guarded.call(down)


def test_garbage_under_an_answer_key_is_a_miss(fake):
    fallback = last_good()
    guarded = breaker("stock", fallback=fallback)

    def level() -> int:
        return 5

    guarded.call(level)
    key = answer_key("stock", fallback.shared_key(level, (), {}))
    for garbage in ("junk", {"at": "x", "v": "y"}, {"at": 0, "v": "!!"}, [1, 2], None):
        get_store().cache.set(key, garbage)
        assert get_store().recall("stock", fallback.shared_key(level, (), {}), 300) is None
    fresh = breaker("stock", fallback=last_good())  # a new process's view: reads the cache

    def down() -> int:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        fresh.call(down)


def test_another_process_serves_what_one_stored(fake):
    partner = Upstream()
    breaker("stock", fallback=last_good())(partner.stock)("A1")
    other = breaker("stock", fallback=LastGood())(partner.stock)  # no memory of its own
    partner.down = True
    assert other("A1") == {"sku": "A1", "level": 7}


def test_a_rejection_flood_reads_the_cache_once_per_refresh(fake):
    partner = Upstream()
    writer = breaker("stock", fallback=last_good())(partner.stock)
    writer("A1")
    partner.down = True
    reader = breaker("stock", fallback=LastGood(refresh=10))(partner.stock)
    for _ in range(2):
        reader("A1")  # failures, answered; the circuit opens
    assert breaker("stock").state is State.OPEN
    reads = fake.cache.calls["get"]
    for _ in range(100):
        assert reader("A1")["level"] == 7
    assert fake.cache.calls["get"] == reads


def test_async_acall_stores_and_serves_off_the_event_loop(fake):
    cache = watch(fake)
    partner = Upstream()

    @breaker("stock", fallback=last_good())
    async def stock(sku: str) -> dict[str, object]:
        return partner.stock(sku)

    async def scenario() -> list[object]:
        seen = [await stock("A1")]
        partner.down = True
        seen += [await stock("A1") for _ in range(3)]  # 2 failures, then a rejection
        try:
            await stock("Z9")
        except CircuitOpenError as exc:
            seen.append(exc.state.value)
        return seen

    assert async_to_sync(scenario)() == [{"sku": "A1", "level": 7}] * 4 + ["open"]
    assert cache.on_loop == []
    assert "set" in cache.ops


def test_breakers_without_last_good_keep_the_plain_hot_path():
    assert breaker("plain")._plain
    assert breaker("plain", fallback=lambda exc: None)._plain
    assert not breaker("plain", fallback=last_good())._plain


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"ttl": 0}, ValueError, "'ttl'"),
        ({"ttl": -1}, ValueError, "'ttl'"),
        ({"ttl": float("nan")}, ValueError, "'ttl'"),
        ({"ttl": "300"}, TypeError, "'ttl'"),
        ({"refresh": -1}, ValueError, "'refresh'"),
        ({"refresh": True}, TypeError, "'refresh'"),
        ({"ttl": 5, "refresh": 10}, ValueError, "must not exceed"),
        ({"key": "sku"}, TypeError, "'key'"),
        ({"stale": 1}, TypeError, "'stale'"),
    ],
)
def test_bad_options_name_the_option(options, error, match):
    with pytest.raises(error, match=match):
        last_good(**options)


def test_calls_with_keyword_arguments_are_stored_once_per_refresh_too(fake):
    written = count_answer_writes(fake)
    guarded = breaker("stock", fallback=last_good(refresh=10))

    def level(sku: str, warehouse: str = "main") -> int:
        return 3

    for _ in range(20):
        guarded.call(level, "A1", warehouse="north")
        guarded.call(level, sku="A1", warehouse="south")
    assert len(written) == 2  # two keys, each stored once
    fake.advance(10)
    guarded.call(level, "A1", warehouse="north")
    assert len(written) == 3


def test_a_new_store_starts_afresh(fake):
    """Refresh times are on the store's clock: a replaced store (settings changed, fork, a
    test's own) must not inherit them, or the first successes would go unstored."""
    partner = Upstream()
    fallback = last_good(refresh=60)
    stock = breaker("stock", fallback=fallback)(partner.stock)
    stock("A1")
    # As if the next store's cache held nothing.
    get_store().forget_answer("stock", fallback.shared_key(partner.stock, ("A1",), {}))
    FakeStore().install()  # its clock starts where the first one did
    stock("A1")  # stored again, in the new store
    partner.down = True
    reader = breaker("stock", fallback=LastGood())(partner.stock)  # reads the cache
    assert reader("A1") == {"sku": "A1", "level": 7}


def test_a_decorated_closed_success_is_done_in_the_wrapper(fake):
    """A function decorated with a last_good handle does its closed successes in its own
    frame (a count, a lookup of the refresh time), like a plain handle's: ``_guard`` sees
    only the first call (the circuit loaded) and what the wrapper cannot do."""
    partner = Upstream()
    written = count_answer_writes(fake)
    handle = breaker("stock", fallback=last_good(ttl=300, refresh=10))
    guarded: list[tuple[object, ...]] = []
    guard = handle._guard
    handle._guard = lambda fn, args, kwargs: guarded.append(args) or guard(fn, args, kwargs)
    stock = handle(partner.stock)
    assert stock.breaker is handle
    stock("A1")
    runtime = get_store().runtime("stock")
    for _ in range(50):
        assert stock("A1") == {"sku": "A1", "level": 7}
    stock("B2")
    assert guarded == [("A1",)]  # the first call only
    assert (partner.calls, runtime.pending) == (52, 52)  # every success counted
    assert len(written) == 2  # A1 and B2, each once
    fake.advance(10)
    partner.level = 9
    stock("A1")  # the refresh flushes the counts; the renewed answer is stored
    assert len(written) == 3
    assert runtime.window.window[0] == 52
    partner.down = True
    assert stock("A1")["level"] == 9  # a failure in the wrapper, answered
    assert guarded == [("A1",), ("A1",)]  # the refresh (stale snapshot) went to _guard


def test_a_decorated_call_with_keyword_arguments_goes_through_guard(fake):
    written = count_answer_writes(fake)
    handle = breaker("stock", fallback=last_good(refresh=10))
    guarded: list[dict[str, object]] = []
    guard = handle._guard
    handle._guard = lambda fn, args, kwargs: guarded.append(kwargs) or guard(fn, args, kwargs)

    @handle
    def level(sku: str, warehouse: str = "main") -> int:
        return 3

    for _ in range(20):
        assert level("A1", warehouse="north") == 3
    assert len(guarded) == 20
    assert len(written) == 1  # stored once per refresh, as through the wrapper
    for _ in range(20):
        level("A1")
    assert len(guarded) == 20  # positional calls: the wrapper's
    assert len(written) == 2


def test_refresh_times_are_tracked_for_at_most_max_keys_calls(fake, monkeypatch):
    monkeypatch.setattr("circuitbreaker_app.fallbacks.MAX_KEYS", 3)
    written = count_answer_writes(fake)
    fallback = last_good(refresh=10)
    guarded = breaker("stock", fallback=fallback)

    def level(sku: object, warehouse: str = "main") -> int:
        return 3

    for sku in ("A", "B", "C"):
        guarded.call(level, sku)
    guarded.call(level, "A")
    assert len(written) == 3  # within refresh: not stored again
    guarded.call(level, ["D"])  # a fourth key (unhashable: by its text): start over
    assert fallback._tracked == {"stock": 1}
    assert fallback._due["stock"] == {} and len(fallback._due_keys["stock"]) == 1
    guarded.call(level, "A")  # forgotten: stored again
    guarded.call(level, "E", warehouse="north")
    assert len(written) == 6
    assert fallback._tracked == {"stock": 3}
    guarded.call(level, "F")  # a fourth again: a new table for the function
    assert fallback._due["stock"] == {level: {("F",): pytest.approx(fake.clock() + 10)}}
    assert len(written) == 7


def test_a_decorated_function_keeps_its_table_and_past_max_keys_still_stores_right(
    fake, monkeypatch
):
    monkeypatch.setattr("circuitbreaker_app.fallbacks.MAX_KEYS", 2)
    written = count_answer_writes(fake)
    fallback = last_good(refresh=10)
    handle = breaker("stock", fallback=fallback)

    def level(sku: str) -> int:
        return 3

    def price(sku: str) -> int:
        return 4

    def rating(sku: str) -> int:
        return 5

    guarded_level, guarded_price, guarded_rating = handle(level), handle(price), handle(rating)
    table = fallback._due["stock"][level]
    assert fallback._due["stock"] == {level: {}, price: {}}  # rating: past MAX_KEYS
    guarded_level("A")
    guarded_price("A")
    guarded_level("A")
    assert len(written) == 2
    guarded_level("B")  # a third key: start over, the held tables emptied in place
    assert fallback._due["stock"] == {level: {("B",): fake.clock() + 10}, price: {}}
    assert fallback._due["stock"][level] is table
    guarded_level("A")  # forgotten: stored again
    assert len(written) == 4
    for _ in range(3):
        guarded_rating("A")  # an unheld table: every success asks, stored once
    assert len(written) == 5
    fake.advance(10)
    guarded_rating("A")
    assert len(written) == 6
