"""``CIRCUITBREAKER["REDIS_URL"]``: which Redis deployment the store talks to (DESIGN §4c).

Three topologies, one setting:

=============================================  ==============================================
``redis://``, ``rediss://``, ``unix://``        one server (redis-py's ``Redis.from_url``)
``redis+cluster://[user:pass@]h1:p1,h2:p2/``    Redis Cluster: the nodes to start from; the
                                                client learns the slot map and follows
                                                MOVED/ASK redirects (``RedisCluster``)
``redis+sentinel://[user:pass@]h1:p1,h2:p2/``   Sentinel: the sentinels to ask, the service
``SERVICE[/DB]``                                name they watch and the database number; the
                                                client asks them for the current primary
                                                on every new connection (``master_for``)
=============================================  ==============================================

:func:`parse_redis_url` validates without I/O (the system check ``E030`` uses it) and
:func:`redis_client` builds the redis-py client with the store's short timeouts and no
retries. Credentials in the URL are for the data nodes (the sentinels are asked without).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEME = "redis+cluster"
SENTINEL_SCHEME = "redis+sentinel"
SCHEMES = (*SINGLE_SCHEMES, CLUSTER_SCHEME, SENTINEL_SCHEME)
DEFAULT_PORTS = {CLUSTER_SCHEME: 6379, SENTINEL_SCHEME: 26379}


class RedisURLError(ValueError):
    """A ``REDIS_URL`` the store cannot use; the message says what is wrong."""


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``REDIS_URL``: ``kind`` is ``single``, ``cluster`` or ``sentinel``."""

    kind: str
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def _host_port(text: str, scheme: str) -> tuple[str, int]:
    if text.startswith("["):  # [::1]:6379
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else rest
        if rest and not rest.startswith(":"):
            raise RedisURLError(f"bad host {text!r}")
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise RedisURLError(f"host missing in {text!r}")
    if not port_text:
        return host, DEFAULT_PORTS[scheme]
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RedisURLError(f"bad port {port_text!r} in {text!r} (1-65535)")
    return host, int(port_text)


def parse_redis_url(url: Any) -> RedisTarget:
    """Check ``url`` and say what it points at; :class:`RedisURLError` when it is unusable."""
    if not isinstance(url, str) or "://" not in url:
        raise RedisURLError(f"{url!r} is not a URL")
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise RedisURLError(
            f"unknown scheme {scheme + '://'!r}; use one of "
            + ", ".join(f"{name}://" for name in SCHEMES)
        )
    if scheme in SINGLE_SCHEMES:
        return RedisTarget("single", url)
    netloc, _, path = rest.partition("/")
    if "?" in path or "#" in path or "?" in netloc:
        raise RedisURLError(f"{scheme}:// URLs take no query string or fragment")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    hosts = tuple(_host_port(part.strip(), scheme) for part in netloc.split(",") if part.strip())
    if not hosts:
        raise RedisURLError(f"no hosts in {scheme}:// URL (write {scheme}://host:port,…/)")
    parts = [part for part in path.split("/") if part]
    if scheme == CLUSTER_SCHEME:
        if parts and parts != ["0"]:
            raise RedisURLError(
                f"Redis Cluster has only database 0, but the URL names {'/'.join(parts)!r}"
            )
        return RedisTarget("cluster", url, hosts, username=username, password=password)
    if not parts:
        raise RedisURLError(
            "the service name is missing (write redis+sentinel://host:port,…/SERVICE/DB)"
        )
    if len(parts) > 2:
        raise RedisURLError(f"expected /SERVICE/DB after the hosts, got /{'/'.join(parts)}")
    db_text = parts[1] if len(parts) == 2 else "0"
    if not db_text.isdigit():
        raise RedisURLError(f"the database number must be an integer ≥ 0, not {db_text!r}")
    return RedisTarget(
        "sentinel",
        url,
        hosts,
        service=unquote(parts[0]),
        db=int(db_text),
        username=username,
        password=password,
    )


def redis_client(url: str, timeout: float) -> Any:
    """A redis-py client for ``url``: socket timeouts of ``timeout`` s and no retries.

    redis-py's default retries sleep between attempts, which would turn an outage into
    seconds per guarded call; the store marks Redis down instead and skips it for a
    second. A cluster client still follows MOVED/ASK redirects (they are answers, not
    errors) and re-reads the slot map after a connection error; a sentinel-managed client
    asks the sentinels for the primary again on its next connection, so after a failover
    the first call that fails is the only one.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    target = parse_redis_url(url)
    options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }
    if target.kind == "single":
        return redis.Redis.from_url(url, retry_on_timeout=False, health_check_interval=0, **options)
    credentials = {"username": target.username, "password": target.password}
    if target.kind == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
            **credentials,
            **options,
        )
    from redis.sentinel import Sentinel

    sentinel = Sentinel(
        list(target.hosts),
        sentinel_kwargs={"socket_connect_timeout": timeout, "socket_timeout": timeout},
        **options,
    )
    return sentinel.master_for(target.service, db=target.db, health_check_interval=0, **credentials)
