"""The fleet's call totals on real Redis: two processes flush, one scrape sums them.

Two ``CircuitStore`` objects stand for two processes (each with its own runtimes and
unflushed counts) sharing one Redis; ``breaker()`` handles follow whichever store is
installed, as in a forked worker.
"""

from __future__ import annotations

import os

import pytest
import redis

from circuitbreaker_app import CircuitOpenError, breaker
from circuitbreaker_app.models import Circuit
from tests.helpers import FakeStore, scraped_calls

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

REDIS_URL = os.environ.get("CB_REDIS_URL", "redis://127.0.0.1:6379/15")


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


@pytest.fixture
def redis_path(settings):
    """The store on the Redis path in either suite variant."""
    if not settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        settings.CIRCUITBREAKER = {**settings.CIRCUITBREAKER, "REDIS_URL": REDIS_URL}
    client = redis.Redis.from_url(REDIS_URL)

    def purge() -> None:
        keys = list(client.scan_iter(match="*circuitbreaker/2/*", count=500))
        if keys:
            client.delete(*keys)

    purge()
    yield client
    purge()
    client.close()


def test_a_scrape_shows_the_calls_of_every_process(redis_path, registry):
    Circuit.objects.create(
        name="payments",
        window_type="count",
        window_size=10,
        minimum_calls=4,
        failure_rate_threshold=50,
        wait_duration=30,
    )
    a, b = FakeStore(), FakeStore()
    a.install()
    for _ in range(300):
        breaker("payments").call(lambda: "ok")
    with pytest.raises(Boom):
        breaker("payments").call(boom)
    b.install()
    for _ in range(200):
        breaker("payments").call(lambda: "ok")
    # a's failure was one round trip that also shared a's batched successes; b's 200 wait
    assert scraped_calls(registry, "payments", "success") == 300
    assert scraped_calls(registry, "payments", "failure") == 1
    a.advance(1.0)  # STATE_TTL: the next call of each process flushes what it counted
    b.advance(1.0)
    breaker("payments").call(lambda: "ok")  # b
    a.install()
    breaker("payments").call(lambda: "ok")  # a
    # b's refresh shared its 200; a had nothing batched, and its call, past a's flush
    # time, shared itself (b's last call waits for b's next flush)
    assert scraped_calls(registry, "payments", "success") == 300 + 200 + 1
    assert scraped_calls(registry, "payments", "failure") == 1
    # The last ten calls the fleet wrote are successes (b's 200 came after a's failure), so
    # five more failures open the circuit (5 of 10, the 50 % threshold); rejections are
    # counted and flushed too.
    for _ in range(5):
        with pytest.raises(Boom):
            breaker("payments").call(boom)
    for _ in range(25):
        with pytest.raises(CircuitOpenError):
            breaker("payments").call(lambda: "never")
    a.store.flush()
    b.store.flush()
    assert scraped_calls(registry, "payments", "success") == 502
    assert scraped_calls(registry, "payments", "failure") == 6
    assert scraped_calls(registry, "payments", "rejected") == 25


def test_the_tally_rides_in_the_round_trip_of_the_flush_and_of_a_failure(redis_path):
    Circuit.objects.create(name="payments", window_size=100, minimum_calls=50)
    fake = FakeStore().install()
    breaker("payments").call(lambda: "ok")  # loads the circuit
    fake.cache.reset()
    with pytest.raises(Boom):
        breaker("payments").call(boom)
    assert fake.cache.calls == {"incr": 1}  # one script: the window and the tally
    for _ in range(10):
        breaker("payments").call(lambda: "ok")
    fake.advance(1.0)
    fake.cache.reset()
    breaker("payments").call(lambda: "ok")
    assert fake.cache.calls == {"get_many": 1, "incr": 1}  # refresh, and one flush
    totals = fake.store.read_tallies(["payments"])["payments"]
    assert (totals["success"], totals["failure"]) == (1 + 10, 1)
