"""``REDIS_URL`` names one server, a Redis Cluster or a Sentinel service (DESIGN §4c)."""

from __future__ import annotations

import pytest
from redis.connection import SSLConnection
from redis.exceptions import RedisClusterException
from redis.sentinel import MasterNotFoundError, SentinelManagedSSLConnection

from circuitbreaker_app import breaker
from circuitbreaker_app.checks import check_settings
from circuitbreaker_app.store import CircuitStore, RedisUnavailable
from circuitbreaker_app.store.backends.redis_url import (
    RedisTarget,
    RedisURLError,
    mask_redis_url,
    parse_redis_url,
    redis_client,
)
from tests.conftest import _unavailable
from tests.loopback import closed_port
from tests.topologies import LocalSentinel, binaries_missing, redis_tls_missing


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://cache:6380/2", "unix:///run/redis.sock?db=1"]
)
def test_single_server_urls_are_left_to_redis_py(url):
    assert parse_redis_url(url) == RedisTarget("single", url)


def test_single_server_urls_take_redis_pys_connection_options():
    url = (
        "rediss://u:p@cache:6380/2?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem"
        "&ssl_keyfile=/k.pem&ssl_cert_reqs=optional&ssl_check_hostname=false"
        "&client_name=web&max_connections=20"
    )
    assert parse_redis_url(url) == RedisTarget("single", url)
    assert parse_redis_url("unix:///run/redis.sock?db=1&socket_timeout=2").kind == "single"


def test_a_cluster_url_lists_its_start_nodes():
    target = parse_redis_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001, [::1]:7002 ,node4/")
    assert target.kind == "cluster"
    assert target.hosts == (
        ("10.0.0.1", 7000),
        ("10.0.0.2", 7001),
        ("::1", 7002),
        ("node4", 6379),
    )
    assert parse_redis_url("redis+cluster://a:1").hosts == (("a", 1),)
    assert parse_redis_url("redis+cluster://a:1/0").db == 0


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database():
    target = parse_redis_url("redis+sentinel://s1:26379,s2,s3:26380/payments-cache/3")
    assert target.kind == "sentinel"
    assert target.hosts == (("s1", 26379), ("s2", 26379), ("s3", 26380))
    assert (target.service, target.db) == ("payments-cache", 3)
    assert parse_redis_url("redis+sentinel://s1/mymaster").db == 0


def test_credentials_go_to_the_data_nodes_and_are_never_shown():
    target = parse_redis_url("redis+sentinel://app:p%40ss@s1:26379/mymaster/0")
    assert (target.username, target.password) == ("app", "p@ss")
    assert "p@ss" not in repr(target)
    assert parse_redis_url("redis+cluster://:secret@a:1/").password == "secret"


def test_sentinels_with_a_password_of_their_own_get_it_from_the_query_string():
    target = parse_redis_url(
        "redis+sentinel://app:data%40pw@s1,s2/mymaster/1"
        "?sentinel_username=watch&sentinel_password=s%26cret+1"
    )
    assert (target.username, target.password) == ("app", "data@pw")
    # A "+" is a plus, as in the user:password part (not a space, as in a form).
    assert (target.sentinel_username, target.sentinel_password) == ("watch", "s&cret+1")
    assert "s&cret" not in repr(target) and "data@pw" not in repr(target)
    client = redis_client(target.url, 0.1)
    master = client.connection_pool.connection_kwargs
    assert (master["username"], master["password"]) == ("app", "data@pw")
    for sentinel in client.connection_pool.sentinel_manager.sentinels:
        asked = sentinel.connection_pool.connection_kwargs
        assert (asked["username"], asked["password"]) == ("watch", "s&cret+1")
    # Without the option the sentinels are asked without AUTH (one without a password
    # refuses it), whatever the data nodes need.
    plain = redis_client("redis+sentinel://:pw@s1/mymaster", 0.1).connection_pool
    for sentinel in plain.sentinel_manager.sentinels:
        assert sentinel.connection_pool.connection_kwargs.get("password") is None


def test_rediss_urls_talk_tls_to_every_node_and_the_sentinels():
    target = parse_redis_url(
        "rediss+cluster://a:7000,b:7001/?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=none"
        "&ssl_check_hostname=false"
    )
    assert (target.kind, target.tls) == ("cluster", True)
    assert target.tls_options == {
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_cert_reqs": "none",
        "ssl_check_hostname": False,
    }
    assert parse_redis_url("redis+cluster://a/").tls is False
    client = redis_client("rediss+sentinel://s1:26380/mymaster/0?ssl_ca_certs=/etc/ca.pem", 0.1)
    pool = client.connection_pool
    assert pool.connection_class is SentinelManagedSSLConnection
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    for sentinel in pool.sentinel_manager.sentinels:
        assert sentinel.connection_pool.connection_class is SSLConnection
        assert sentinel.connection_pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"


def test_passwords_are_masked_in_urls_that_are_shown():
    url = "rediss+sentinel://app:pw1@s1,s2/m/0?ssl_ca_certs=/ca.pem&sentinel_password=pw2"
    assert mask_redis_url(url) == (
        "rediss+sentinel://***@s1,s2/m/0?ssl_ca_certs=/ca.pem&sentinel_password=***"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://cache:6379", "unknown scheme 'http://'"),
        ("cache:6379", "is not a URL"),
        (6379, "is not a URL"),
        ("redis+cluster:///", "no hosts"),
        ("redis+cluster://,/", "no hosts"),
        ("redis+sentinel:///mymaster/0", "no hosts"),
        ("redis+cluster://a:0/", "bad port '0'"),
        ("redis+cluster://a:65536/", "bad port '65536'"),
        ("redis+cluster://a:port/", "bad port 'port'"),
        ("redis+cluster://:7000/", "host missing"),
        ("redis+cluster://a:7000/2", "only database 0"),
        (
            "redis+cluster://a:7000/?timeout=1",
            "unknown option 'timeout'; redis+cluster:// takes none",
        ),
        ("redis+cluster://a:7000/#x", "no fragment"),
        ("redis+sentinel://s1/m/0?timeout=1", "unknown option 'timeout'"),
        ("redis+cluster://a/?sentinel_password=x", "'sentinel_password' needs a redis+sentinel"),
        ("redis+sentinel://s1/m/0?ssl_ca_certs=/ca.pem", "'ssl_ca_certs' needs a rediss+"),
        ("rediss+sentinel://s1/m?sentinel_password=a&sentinel_password=b", "given twice"),
        ("rediss+sentinel://s1/m?sentinel_password=", "'sentinel_password' has no value"),
        ("rediss+sentinel://s1/m?sentinel_username=app", "sentinel_username needs a sentinel_pas"),
        ("rediss+cluster://a/?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of required,"),
        ("rediss+cluster://a/?ssl_check_hostname=1", "ssl_check_hostname must be one of true,"),
        ("rediss+cluster://a/?ssl_ca_certs", "malformed query string"),
        ("redis+sentinel://s1:26379", "service name is missing"),
        ("redis+sentinel://s1:26379/", "service name is missing"),
        ("redis+sentinel://s1:26379/mymaster/x", "must be an integer"),
        ("redis+sentinel://s1:26379/mymaster/0/1", "expected /SERVICE/DB"),
        # One server: redis-py's URL, whose options must be its connection's arguments.
        ("rediss://cache:6380/0?ssl_ca_cert=/ca.pem", "unknown option 'ssl_ca_cert'"),
        ("redis://cache:6379/0?ssl_ca_certs=/ca.pem", "'ssl_ca_certs' needs a rediss://"),
        ("unix:///run/redis.sock?ssl_certfile=/c.pem", "'ssl_certfile' needs a rediss://"),
        ("rediss://cache:6380/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of required,"),
        ("redis://cache:6379/0?sentinel_password=x", "unknown option 'sentinel_password'"),
        ("redis://cache:6379/0?db=two", "Invalid value for 'db'"),
        ("unix:///run/redis.sock?socket_keepalive=true", "unknown option 'socket_keepalive'"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, says):
    with pytest.raises(RedisURLError) as caught:
        parse_redis_url(url)
    assert says in str(caught.value)


def _checks(settings, url):
    settings.CIRCUITBREAKER = {"REDIS_URL": url}
    return [(message.id, message.msg) for message in check_settings()]


def test_the_system_check_accepts_every_topology(settings):
    for url in (
        "redis://127.0.0.1:6379/0",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001/",
        "redis+sentinel://127.0.0.1:26379/mymaster/0",
    ):
        assert _checks(settings, url) == []


def test_the_system_check_accepts_passwords_and_tls(settings):
    for url in (
        "redis+sentinel://:pw@127.0.0.1:26379/mymaster/0?sentinel_password=spw",
        "rediss+cluster://127.0.0.1:7000/?ssl_ca_certs=/etc/ca.pem",
        "rediss+sentinel://127.0.0.1:26379/mymaster?ssl_cert_reqs=none",
    ):
        assert _checks(settings, url) == []


def test_the_system_check_reports_a_malformed_url_without_its_password(settings):
    ((check_id, message),) = _checks(settings, "redis+sentinel://:hunter2@s1:26379")
    assert check_id == "circuitbreaker_app.E030"
    assert "service name is missing" in message
    assert "hunter2" not in message
    ((check_id, message),) = _checks(
        settings, "redis+sentinel://s1/m/0?sentinel_password=hunter3&x=1"
    )
    assert check_id == "circuitbreaker_app.E030" and "unknown option 'x'" in message
    assert "hunter3" not in message
    ((check_id, message),) = _checks(settings, "redis+cluster://a:99999/")
    assert check_id == "circuitbreaker_app.E030" and "bad port '99999'" in message
    ((check_id, message),) = _checks(settings, "rediss://:hunter5@cache:6380/0?ssl_ca_cert=/x")
    assert check_id == "circuitbreaker_app.E030" and "unknown option 'ssl_ca_cert'" in message
    assert "hunter5" not in message
    ((check_id, message),) = _checks(settings, "redis+sentinal://:hunter4@s1/m/0")
    assert check_id == "circuitbreaker_app.E020" and "hunter4" not in message
    ((check_id, message),) = _checks(settings, "memcached://a:11211/")
    assert check_id == "circuitbreaker_app.E020" and "redis+cluster://" in message


# -- the clients ---------------------------------------------------------------------------


def _no_retries(kwargs: dict) -> None:
    assert kwargs["socket_timeout"] == 0.1
    assert kwargs["socket_connect_timeout"] == 0.1
    assert kwargs["retry"].get_retries() == 0


def test_a_single_server_client_has_short_timeouts_and_no_retries_whatever_the_url_says():
    """redis-py lets a URL's options win over ``from_url``'s keyword arguments: a cache
    ``LOCATION`` with ``?socket_timeout=5`` gave the breaker 5 s timeouts."""
    url = "rediss://127.0.0.1:1/0?socket_timeout=5&socket_connect_timeout=5"
    url += "&health_check_interval=30&retry_on_timeout=true&ssl_ca_certs=/etc/ca.pem"
    kwargs = redis_client(url, 0.1).connection_pool.connection_kwargs
    _no_retries(kwargs)
    assert (kwargs["health_check_interval"], kwargs["retry_on_timeout"]) == (0, False)
    assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"  # the other options stay
    # redis-py 8 goes back to this one after a maintenance notification's relaxed timeout.
    assert kwargs.get("orig_socket_timeout", 0.1) == 0.1


def test_a_sentinel_client_has_short_timeouts_and_no_retries():
    client = redis_client("redis+sentinel://127.0.0.1:1,127.0.0.1:2/payments/3", 0.1)
    pool = client.connection_pool
    assert (pool.service_name, pool.connection_kwargs["db"]) == ("payments", 3)
    _no_retries(pool.connection_kwargs)
    for sentinel in pool.sentinel_manager.sentinels:
        _no_retries(sentinel.connection_pool.connection_kwargs)


def test_a_sentinel_group_that_cannot_be_asked_says_why_for_each_sentinel():
    """redis-py 8 writes a failed sentinel into ``MasterNotFoundError`` as the repr of its
    client (kilobytes of settings) and of its error ("network:ConnectionError": the
    reason is lost); the store's outage warning shows one short reason per sentinel."""
    ports = [closed_port(), closed_port()]
    url = f"redis+sentinel://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/payments/0"
    client = redis_client(url, 0.1)
    with pytest.raises(MasterNotFoundError) as caught:
        client.ping()
    message = str(caught.value)
    assert message.startswith("No master found for 'payments': ConnectionError: ")
    assert message.count("Connection refused") == 2, message
    assert all(f"127.0.0.1:{port}" in message for port in ports)
    assert "network:" not in message and len(message) < 400, message


@pytest.mark.django_db
def test_a_cache_location_redis_py_cannot_use_is_an_outage_not_an_error(settings, caplog):
    """The cache's ``LOCATION`` (no check reads it) with an option redis-py's connection
    does not take: redis-py would raise ``TypeError`` at every command; the store finds
    the URL unusable when it makes the client, logs why once and skips Redis meanwhile."""
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"rediss://127.0.0.1:{closed_port()}/0?ssl_ca_cert=/ca.pem",
        },
    }
    settings.CIRCUITBREAKER = {}
    store = CircuitStore()
    assert store.redis is not None and store.redis.kind == "single"
    with pytest.raises(RedisURLError, match="unknown option 'ssl_ca_cert'"):
        store.redis.mget(["key"])
    with pytest.raises(RedisUnavailable):
        store.redis.mget(["key"])  # skipped until the retry time
    assert breaker("payments").call(lambda: "ok") == "ok"
    with pytest.raises(ZeroDivisionError):
        breaker("payments").call(lambda: 1 / 0)  # the user's error, not Redis's


@pytest.mark.redis_topology
def test_a_cluster_client_has_short_timeouts_and_no_retries(redis_topologies):
    client = redis_client(redis_topologies("cluster").url, 0.1)
    try:
        assert len(client.get_primaries()) == 3
        for node in client.get_nodes():
            _no_retries(node.redis_connection.connection_pool.connection_kwargs)
    finally:
        client.close()


@pytest.mark.django_db
def test_a_cluster_that_is_down_at_start_is_an_outage_not_an_error(settings, monkeypatch):
    attempts = []

    def counted(url: str, timeout: float):
        attempts.append(url)
        return redis_client(url, timeout)

    monkeypatch.setattr("circuitbreaker_app.store.backends.redis_link.redis_client", counted)
    settings.CIRCUITBREAKER = {"REDIS_URL": f"redis+cluster://127.0.0.1:{closed_port()}/"}
    store = CircuitStore()  # making the store connects to nothing
    assert attempts == []
    with pytest.raises(RedisClusterException):
        store.redis.mget(["key"])  # the slot map cannot be read
    for _ in range(100):
        with pytest.raises(RedisUnavailable):
            store.redis.mget(["key"])  # skipped without I/O until the retry time
    assert len(attempts) == 1
    assert breaker("payments").call(lambda: "ok") == "ok"  # guarded calls go on


@pytest.mark.redis_topology
@pytest.mark.django_db
def test_a_password_protected_sentinel_group_is_reached_with_the_urls_credentials(settings):
    """The data nodes need one password, the sentinels another: with both in the URL the
    store records outcomes on the primary; with the sentinels' left out it finds Redis
    unreachable (an outage: guarded calls go on), so each password is really used."""
    with LocalSentinel(password="data pw", sentinel_password="sentinel:pw") as group:
        assert "sentinel_password=sentinel%3Apw" in group.url
        settings.CIRCUITBREAKER = {"REDIS_URL": group.url}
        store = CircuitStore()
        guarded = breaker("payments")
        for _ in range(3):
            with pytest.raises(ZeroDivisionError):
                guarded.call(lambda: 1 / 0)
        runtime = store.runtime("payments")
        store.refresh(runtime)
        assert runtime.snapshot().failures == 3  # read back through the sentinels
        primary = group.current_primary().client()
        try:
            assert primary.dbsize() > 0
        finally:
            primary.close()

        settings.CIRCUITBREAKER = {"REDIS_URL": group.url.partition("?")[0]}
        store = CircuitStore()
        with pytest.raises(MasterNotFoundError, match="AuthenticationError"):
            store.redis.mget(["key"])  # the sentinels refuse to name the primary
        assert breaker("payments").call(lambda: "ok") == "ok"


@pytest.mark.redis_topology
@pytest.mark.django_db
def test_a_sentinel_group_that_speaks_only_tls_is_reached_with_rediss(settings):
    """Every server and sentinel of the group listens for TLS only, with a certificate of a
    CA made for the test: ``rediss+sentinel://…?ssl_ca_certs=`` reaches it (the sentinels
    and the primary), and the same URL without TLS finds Redis unreachable."""
    if binaries_missing("openssl"):
        _unavailable("openssl not installed (it makes the test's certificates)")
    missing = redis_tls_missing()
    if missing:
        _unavailable(missing)
    with LocalSentinel(tls=True, password="pw") as group:
        assert group.url.startswith("rediss+sentinel://:pw@")
        settings.CIRCUITBREAKER = {"REDIS_URL": group.url}
        store = CircuitStore()
        for _ in range(2):
            with pytest.raises(ZeroDivisionError):
                breaker("payments").call(lambda: 1 / 0)
        runtime = store.runtime("payments")
        store.refresh(runtime)
        assert runtime.snapshot().failures == 2

        plain = "redis+sentinel://" + group.url.partition("://")[2].partition("?")[0]
        settings.CIRCUITBREAKER = {"REDIS_URL": plain}
        with pytest.raises(MasterNotFoundError):
            CircuitStore().redis.mget(["key"])
        assert breaker("payments").call(lambda: "ok") == "ok"
