"""The Redis path of the store: redis-py directly, Lua scripts, SET NX permits, Redis time.

Runs in both suite variants: on PostgreSQL + Redis the cache's own server is used; on
SQLite + LocMem ``CIRCUITBREAKER["REDIS_URL"]`` points the store at the Redis of
``CB_REDIS_URL``. Round trips are counted by ``tests.helpers.FakeStore``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import replace

import pytest
import redis
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from circuitbreaker_app.checks import check_settings
from circuitbreaker_app.core import FakeClock, Outcome, Snapshot, State
from circuitbreaker_app.models import Circuit, CircuitEvent
from circuitbreaker_app.store import (
    CircuitStore,
    RedisLink,
    RedisUnavailable,
    generation_prefix,
    redis_url_for,
    state_key,
)
from circuitbreaker_app.store.backends import redis_link
from circuitbreaker_app.store.backends.redis import COUNT_LUA
from circuitbreaker_app.store.entry import CircuitEntry
from circuitbreaker_app.store.windows import MAX_RUNS, apply_count
from tests.helpers import FakeStore

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

REDIS_URL = os.environ.get("CB_REDIS_URL", "redis://127.0.0.1:6379/15")
FIVE_STRAIGHT = {
    "window_type": "count",
    "window_size": 5,
    "minimum_calls": 5,
    "failure_rate_threshold": 100,
    "wait_duration": 30,
    "half_open_max_calls": 2,
}


def purge(client: redis.Redis) -> None:
    """Delete this suite's keys (never FLUSHDB: the database may be shared)."""
    keys = list(client.scan_iter(match="*circuitbreaker/2/*", count=500))
    if keys:
        client.delete(*keys)


@pytest.fixture
def redis_path(settings):
    """The store on the Redis path in either variant; yields a raw client to inspect Redis."""
    if not settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "REDIS_URL": REDIS_URL}
    client = redis.Redis.from_url(REDIS_URL)
    purge(client)
    try:
        yield client
    finally:
        purge(client)
        client.close()


@pytest.fixture
def circuit(redis_path):
    return Circuit.objects.create(name="payments", **FIVE_STRAIGHT)


def fail(runtime, times=1):
    for _ in range(times):
        runtime.on_result(runtime.acquire(), Outcome.FAILURE, 0.0)


def succeed(runtime, times=1):
    for _ in range(times):
        runtime.on_result(runtime.acquire(), Outcome.SUCCESS, 0.0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- which path ---------------------------------------------------------------------------


def test_the_redis_path_is_chosen_for_a_redis_cache_or_redis_url(redis_path):
    store = CircuitStore()
    assert store.backend.name == "redis"
    assert store.redis is not None and store.redis.url == REDIS_URL


def test_other_caches_keep_the_generic_path(settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "x"}
    }
    settings.CIRCUITBREAKER = {}
    store = CircuitStore()
    assert store.redis is None
    assert store.backend.name == "locmem"


@pytest.mark.parametrize(
    ("backend", "location", "expected"),
    [
        ("django.core.cache.backends.redis.RedisCache", "redis://a:1/2", "redis://a:1/2"),
        ("django.core.cache.backends.redis.RedisCache", "redis://a/0,redis://b/0", "redis://a/0"),
        (
            "django.core.cache.backends.redis.RedisCache",
            ["rediss://a/0", "redis://b/0"],
            "rediss://a/0",
        ),
        (
            "django_redis.cache.RedisCache",
            "unix:///run/redis.sock?db=3",
            "unix:///run/redis.sock?db=3",
        ),
        ("django_redis.cache.RedisCache", "127.0.0.1:6379", None),  # not a URL: generic path
        ("django.core.cache.backends.db.DatabaseCache", "cb_cache", None),
    ],
)
def test_the_url_comes_from_the_cache_location(settings, backend, location, expected):
    settings.CIRCUITBREAKER = {}
    settings.CACHES = {**settings.CACHES, "other": {"BACKEND": backend, "LOCATION": location}}
    assert redis_url_for("other") == expected


def test_redis_url_wins_over_the_cache(settings):
    settings.CIRCUITBREAKER = {"REDIS_URL": "redis://elsewhere:6380/4"}
    assert redis_url_for("default") == "redis://elsewhere:6380/4"


def test_the_client_has_short_timeouts_and_no_retries(redis_path, settings):
    settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "REDIS_TIMEOUT": 0.1}
    link = CircuitStore().redis
    kwargs = link.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.1
    assert kwargs["socket_connect_timeout"] == 0.1
    assert kwargs["retry"].get_retries() == 0


# -- one round trip per failure, and it brings news -------------------------------------------


def test_a_failure_is_one_script_call_that_writes_the_count_window_with_a_ttl(circuit, redis_path):
    a = FakeStore()
    ra = a.runtime("payments")
    a.cache.reset()
    succeed(ra, 2)
    fail(ra)
    assert a.cache.calls == {"incr": 1}  # two pending successes ride along
    prefix = generation_prefix("payments", 0, circuit_id=ra.circuit_id)
    key = a.store.redis.make_key(f"{prefix}/count")
    assert json.loads(redis_path.get(key)) == [3, 2, 0, 0, 1, 1, 0]  # 3 calls: S S F
    ttl = redis_path.pttl(key)
    assert 86_000_000 < ttl <= 86_400_000
    redis_path.pexpire(key, 50_000)
    fail(ra)
    assert 86_000_000 < redis_path.pttl(key)  # every write renews the window's expiry


@examples(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(1, 9),
    writes=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 30), st.integers(0, 3)), max_size=30
    ),
    max_runs=st.sampled_from([2, 3, MAX_RUNS]),
)
def test_the_lua_script_and_apply_count_agree(redis_path, size, writes, max_runs):
    """backends/lua/count.lua is a port of windows.apply_count: random writes, same windows."""
    client = redis.Redis.from_url(REDIS_URL)
    script = client.register_script(COUNT_LUA)
    key = "circuitbreaker-test/lua-port"
    client.delete(key)
    expected, seen = [0], [0, 0, 0]
    for process, successes, outcome in writes:
        expected = apply_count(expected, successes, outcome, seen[process], size, max_runs)
        args = [successes, outcome, seen[process], size, 60_000, max_runs, -1, -1]
        got = json.loads(script(keys=[key], args=args)[0])
        assert got == expected
        seen[process] = got[0]
    client.delete(key)


@st.composite
def stored_windows(draw):
    """Any well-formed count window, neighbouring runs of one kind included."""
    runs = []
    for _ in range(draw(st.integers(0, 10))):
        n = draw(st.integers(1, 5))
        f = draw(st.sampled_from([0, n]) | st.integers(0, n))
        s = draw(st.sampled_from([0, n]) | st.integers(0, n))
        runs += [n, f, s]
    return [draw(st.integers(0, 60)), *runs]


@examples(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    window=stored_windows(),
    successes=st.sampled_from([0, 0, 0, 1, 4]),
    outcome=st.integers(0, 3),
    seen=st.integers(0, 70),
    size=st.integers(1, 40),
    max_runs=st.sampled_from([2, 3, MAX_RUNS]),
)
def test_the_lua_script_applies_one_write_to_any_stored_window_as_apply_count_does(
    redis_path, window, successes, outcome, seen, size, max_runs
):
    """count.lua's short way for a lone failure (the newest run grows, or one follows it)
    and its general steps give apply_count's window, whatever well-formed window is there;
    without successes, whatever ``seen`` the script gets (RedisCounters sends 0 then)."""
    client = redis.Redis.from_url(REDIS_URL)
    script = client.register_script(COUNT_LUA)
    key = "circuitbreaker-test/lua-port"
    expected = apply_count(window, successes, outcome, seen, size, max_runs)
    for sent in (seen, 0) if successes == 0 else (seen,):
        client.set(key, json.dumps(window))
        args = [successes, outcome, sent, size, 60_000, max_runs, -1, -1]
        got = json.loads(script(keys=[key], args=args)[0])
        assert got == expected
    client.delete(key)


def _window(store, runtime, redis_path):
    prefix = generation_prefix("payments", 0, circuit_id=runtime.circuit_id)
    return json.loads(redis_path.get(store.store.redis.make_key(f"{prefix}/count")))


def test_the_failures_of_a_circuit_send_one_command_packed_once(circuit, redis_path, monkeypatch):
    a, b = FakeStore(), FakeStore()
    ra, rb = a.runtime("payments"), b.runtime("payments")
    fail(ra)
    link = a.store.redis
    packed = []
    pack = link._packed
    monkeypatch.setattr(
        link, "_packed", lambda conn, command: packed.append(command) or pack(conn, command)
    )
    fail(ra)
    assert packed == []  # the first failure's command again: where it was seen is not sent
    fail(rb)  # another process writes: the next window is not the one ra expects
    fail(ra)
    assert packed == []
    assert _window(a, ra, redis_path) == ra.window.window == [4, 4, 4, 0]
    assert ra.window.totals == Snapshot(4, 4, 0)


@pytest.mark.parametrize("reader", ["hiredis's, read here", "none: redis-py reads"])
def test_a_failure_reads_its_reply_with_or_without_redis_py(
    circuit, redis_path, monkeypatch, reader
):
    a = FakeStore()
    ra = a.runtime("payments")
    link = a.store.redis
    if reader.startswith("none"):  # a redis-py whose parser this does not know
        monkeypatch.setattr(link, "_own_socket", lambda conn: link._kernel_timeouts(conn._sock))
    fail(ra)
    assert (link._own_reader is not None) is reader.startswith("hiredis")
    before = link.round_trips
    fail(ra, 2)
    assert link.round_trips == before + 2
    assert _window(a, ra, redis_path) == ra.window.window == [3, 3, 3, 0]


def test_a_server_that_forgot_the_scripts_gets_them_again_in_the_same_round_trip(
    circuit, redis_path, caplog
):
    a = FakeStore()
    ra = a.runtime("payments")
    fail(ra)
    redis_path.script_flush()  # what a restarted server knows: no script
    link = a.store.redis
    before = link.round_trips
    fail(ra)
    assert link.round_trips == before + 1  # EVALSHA, NOSCRIPT, EVAL: one round trip
    assert _window(a, ra, redis_path) == [2, 2, 2, 0]
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


def test_a_connection_the_server_closed_while_idle_is_replaced_not_an_outage(
    circuit, redis_path, monkeypatch, caplog
):
    monkeypatch.setattr(redis_link, "IDLE_CHECK", 0.0)  # "idle long enough" at every call
    a = FakeStore()
    ra = a.runtime("payments")
    fail(ra)
    db = a.store.redis.client.connection_pool.connection_kwargs.get("db", 0)
    for client in redis_path.client_list():
        if client["db"] == str(db) and client["cmd"] in ("evalsha", "eval"):
            redis_path.client_kill_filter(_id=client["id"])  # e.g. the server's ``timeout``
    fail(ra)
    assert _window(a, ra, redis_path) == [2, 2, 2, 0]
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


def test_a_failure_learns_of_another_process_trip_from_its_own_round_trip(
    circuit, django_assert_num_queries
):
    clock = FakeClock(1_000_000.0)
    a, b = FakeStore(clock), FakeStore(clock)
    ra, rb = a.runtime("payments"), b.runtime("payments")
    fail(ra, 5)
    assert ra.status.state is State.OPEN
    b.cache.reset()
    with django_assert_num_queries(0):
        fail(rb)  # B still trusts its CLOSED snapshot: the call ran and failed...
    assert rb.entry.status.state is State.OPEN  # ...and the script's answer carried the trip
    assert b.cache.calls == {"incr": 1}  # no compare-and-set to lose, no re-read
    assert CircuitEvent.objects.count() == 1


def test_news_from_a_script_never_rolls_a_process_back(circuit):
    clock = FakeClock(1_000_000.0)
    a = FakeStore(clock)
    ra = a.runtime("payments")
    fail(ra, 5)
    entry = a.store.cache.get(state_key("payments"))
    stale = {**entry, "state": "closed", "generation": 0, "retry_at": None}
    a.store.cache.set(state_key("payments"), stale)  # a cache entry that lags behind
    ra.record(True, False)  # the script returns the older entry: ignored
    assert ra.entry.generation == 1


# -- permits, publishing, the clock -------------------------------------------------------


def test_permits_are_set_nx_with_a_lease_and_freed_only_by_their_holder(circuit, redis_path):
    store = CircuitStore()
    counters = store.counters
    assert counters.claim("lease", 5.0, 111)
    assert not counters.claim("lease", 5.0, 222)
    assert 0 < redis_path.pttl(store.redis.make_key("lease")) <= 5000
    counters.release("lease", 222)  # a late holder whose lease was re-taken frees nothing
    assert counters.get_many(["lease"]) == {"lease": 111}
    counters.release("lease", 111)
    assert counters.get_many(["lease"]) == {}
    assert counters.claim("lease", 0.2, 333)
    time.sleep(0.3)  # the server expires it on its own clock
    assert counters.claim("lease", 0.2, 444)


def test_publishing_never_replaces_a_later_generation(circuit):
    store = CircuitStore()
    entry = store.load_entry("payments")
    key = state_key("payments")

    def at(generation: int, state: State, circuit_id: int = entry.circuit_id) -> CircuitEntry:
        status = replace(entry.status, generation=generation, state=state)
        return replace(entry, circuit_id=circuit_id, status=status)

    store.cache.publish(key, at(3, State.OPEN))
    assert not store.cache.publish(key, at(2, State.HALF_OPEN))
    assert store.cache.get(key)["generation"] == 3
    edited = replace(at(3, State.OPEN), config=replace(entry.config, window_size=42))
    assert store.cache.publish(key, edited)
    # same generation: a definition edit goes through
    assert store.cache.get(key)["config"]["window_size"] == 42
    assert store.cache.publish(key, at(0, State.CLOSED, entry.circuit_id + 1))
    assert store.cache.get(key)["generation"] == 0  # a re-created circuit starts over


def test_state_entries_are_json_beside_the_counters(circuit, redis_path, settings):
    store = CircuitStore()
    store.runtime("payments")
    raw = redis_path.get(store.redis.make_key(state_key("payments")))
    assert raw.startswith(b"{") and b'"generation":0' in raw
    if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        from django.core.cache import cache

        cache.clear()  # clearing the Django cache clears the breaker's keys too
        assert redis_path.get(store.redis.make_key(state_key("payments"))) is None


def test_decisions_use_the_redis_clock(circuit, redis_path):
    store = CircuitStore(wall=lambda: time.time() - 3600)  # this host runs an hour behind
    store.runtime("payments")  # the first read carries a TIME reading in its round trip
    seconds, micros = redis_path.time()
    assert abs(store.now() - (seconds + micros / 1e6)) < 0.5
    before = store.redis.round_trips
    store.refresh(store.runtime("payments"))
    assert store.redis.round_trips == before + 1  # refreshes stay one round trip


# -- outages at the link level ------------------------------------------------------------


def test_after_an_error_redis_is_skipped_without_io_until_the_retry_time():
    link = RedisLink(f"redis://127.0.0.1:{closed_port()}/0", make_key=str, timeout=0.1)
    link.retry_after = 0.2
    with pytest.raises(redis.ConnectionError):
        link.run(link.client.ping)
    started = time.perf_counter()
    for _ in range(100):
        with pytest.raises(RedisUnavailable):
            link.run(link.client.ping)
    assert link.round_trips == 1
    assert time.perf_counter() - started < 0.05
    time.sleep(0.25)
    with pytest.raises(redis.ConnectionError):
        link.run(link.client.ping)  # tried again once the retry time has passed
    assert link.round_trips == 2


def test_a_script_call_to_a_server_that_stops_answering_times_out_as_an_outage():
    """The script calls' own connection leaves timeouts to the kernel (no poll per call):
    a server that answers the handshake, then never a script, costs one short timeout,
    then an outage."""
    import threading

    from circuitbreaker_app.store.backends.redis import RECORD

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)

        def serve() -> None:  # answers the handshake (HELLO 3, CLIENT …); a script: silence
            conn, _ = server.accept()
            with conn:
                while (chunk := conn.recv(65536)) and b"EVALSHA" not in chunk:
                    hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"
                    conn.sendall(hello if b"HELLO" in chunk else b"-ERR unknown subcommand\r\n")
                conn.recv(65536)  # until the client gives up

        threading.Thread(target=serve, daemon=True).start()
        link = RedisLink(f"redis://127.0.0.1:{server.getsockname()[1]}/0", str, timeout=0.1)
        raised: list[BaseException] = []

        def call() -> None:
            try:
                link.evalsha(RECORD, ["bucket"], [1, 1000, -1, -1])
            except BaseException as exc:  # what it raised is the point
                raised.append(exc)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        caller.join(5)
        assert not caller.is_alive()  # a blocking socket without its timeouts hangs here
        assert len(raised) == 1 and isinstance(raised[0], link.errors), raised
        with pytest.raises(RedisUnavailable):
            link.evalsha(RECORD, ["bucket"], [1, 1000, -1, -1])  # skipped until retry time
        assert link.round_trips == 1


# -- transitions ---------------------------------------------------------------------------


def test_a_move_computed_before_another_thread_moved_is_refused(circuit):
    store = CircuitStore()
    runtime = store.runtime("payments")
    late = runtime.status.moved_to(State.OPEN, store.now(), runtime.config)  # from gen 0
    assert store.move_to("payments", State.FORCED_OPEN, "maintenance")  # gen 1 meanwhile
    assert not runtime.transition(late, "failure_rate_above_threshold", None)
    events = list(CircuitEvent.objects.values_list("to_state", "generation"))
    assert events == [("forced_open", 1)]
    assert runtime.status.state is State.FORCED_OPEN


# -- settings ------------------------------------------------------------------------------


def ids(settings, value):
    settings.CIRCUITBREAKER = value
    return {message.id for message in check_settings()}


def test_checks_validate_redis_url_and_timeout(settings):
    assert "circuitbreaker_app.E020" in ids(settings, {"REDIS_URL": "http://cache:6379"})
    assert "circuitbreaker_app.E020" in ids(settings, {"REDIS_URL": 6379})
    assert "circuitbreaker_app.E021" in ids(settings, {"REDIS_TIMEOUT": 0})
    assert "circuitbreaker_app.E021" in ids(settings, {"REDIS_TIMEOUT": float("nan")})
    assert "circuitbreaker_app.E021" in ids(settings, {"REDIS_TIMEOUT": 10**400})
    assert "circuitbreaker_app.W020" in ids(settings, {"REDIS_TIMEOUT": 3})
    good = ids(settings, {"REDIS_URL": "rediss://u:p@cache:6380/1", "REDIS_TIMEOUT": 0.1})
    assert not good & {"circuitbreaker_app.E020", "circuitbreaker_app.E021"}
