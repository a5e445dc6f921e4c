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

``rediss+cluster://`` and ``rediss+sentinel://`` talk TLS to every node (and, for Sentinel,
to the sentinels too). Options go in the query string, each at most once:

* ``sentinel_username``, ``sentinel_password``: sentinels that need ``AUTH`` (their own
  ``requirepass``/ACL user); the URL's ``user:pass@`` is for the data nodes only, because
  a sentinel without a password refuses an ``AUTH``;
* with ``rediss+``: ``ssl_ca_certs`` (a CA bundle file), ``ssl_certfile`` and
  ``ssl_keyfile`` (a client certificate), ``ssl_cert_reqs`` (``required``, the default,
  ``optional`` or ``none``) and ``ssl_check_hostname`` (``true`` or ``false``), as redis-py
  names them.

A one-server URL takes redis-py's own options (``rediss://cache:6380/0?ssl_ca_certs=…``):
any keyword argument of the connection redis-py makes for its scheme; the ``ssl_*`` ones
only with ``rediss://``.

:func:`parse_redis_url` validates without I/O (the system check ``E030`` uses it) and
:func:`redis_client` builds the redis-py client with the store's short timeouts and no
retries. :func:`mask_redis_url` hides the passwords wherever a URL is shown.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = (*SINGLE_SCHEMES, *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)
DEFAULT_PORTS = {
    **dict.fromkeys(CLUSTER_SCHEMES, 6379),
    **dict.fromkeys(SENTINEL_SCHEMES, 26379),
}
#: Query options of a Sentinel URL: the sentinels' own credentials.
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
#: Query options of a ``rediss+`` URL (redis-py's names), each with the values it takes
#: (None: any text, e.g. a file path).
TLS_OPTIONS: dict[str, tuple[str, ...] | None] = {
    "ssl_ca_certs": None,
    "ssl_certfile": None,
    "ssl_keyfile": None,
    "ssl_cert_reqs": ("required", "optional", "none"),
    "ssl_check_hostname": ("true", "false"),
}
#: Query options whose value is a secret (masked by :func:`mask_redis_url`).
SECRET_OPTIONS = ("sentinel_password",)


class RedisURLError(ValueError):
    """A ``REDIS_URL`` the store cannot use; the message says what is wrong."""


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``REDIS_URL``: ``kind`` is ``single``, ``cluster`` or ``sentinel``."""

    kind: str
    url: str = field(repr=False)
    hosts: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: TLS to every node (``rediss+cluster://``, ``rediss+sentinel://``).
    tls: bool = False
    #: The TLS options of the query string, as redis-py keyword arguments.
    tls_options: dict[str, Any] = field(default_factory=dict)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def mask_redis_url(url: str) -> str:
    """``url`` without its passwords (the data nodes' and the sentinels'), for messages."""
    scheme, sep, rest = url.partition("://")
    rest, question, query = rest.partition("?")
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    if question:
        parts = []
        for part in query.split("&"):
            name, equals, _ = part.partition("=")
            parts.append(f"{name}=***" if equals and name in SECRET_OPTIONS else part)
        query = "&".join(parts)
    return f"{scheme}{sep}{rest}{question}{query}"


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
        _check_single(url, scheme)
        return RedisTarget("single", url)
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if "#" in rest or "#" in query:
        raise RedisURLError(f"{scheme}:// URLs take no fragment")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    hosts = tuple(_host_port(part.strip(), scheme) for part in netloc.split(",") if part.strip())
    if not hosts:
        raise RedisURLError(f"no hosts in {scheme}:// URL (write {scheme}://host:port,…/)")
    tls = scheme.startswith("rediss+")
    options = _options(query, scheme, tls)
    tls_options = {name: value for name, value in options.items() if name in TLS_OPTIONS}
    parts = [part for part in path.split("/") if part]
    if scheme in CLUSTER_SCHEMES:
        if parts and parts != ["0"]:
            raise RedisURLError(
                f"Redis Cluster has only database 0, but the URL names {'/'.join(parts)!r}"
            )
        return RedisTarget(
            "cluster", url, hosts, username=username, password=password, tls=tls,
            tls_options=tls_options,
        )  # fmt: skip
    if not parts:
        raise RedisURLError(
            "the service name is missing (write redis+sentinel://host:port,…/SERVICE/DB)"
        )
    if len(parts) > 2:
        raise RedisURLError(f"expected /SERVICE/DB after the hosts, got /{'/'.join(parts)}")
    db_text = parts[1] if len(parts) == 2 else "0"
    if not db_text.isdigit():
        raise RedisURLError(f"the database number must be an integer ≥ 0, not {db_text!r}")
    if "sentinel_username" in options and "sentinel_password" not in options:
        raise RedisURLError("sentinel_username needs a sentinel_password")
    return RedisTarget(
        "sentinel",
        url,
        hosts,
        service=unquote(parts[0]),
        db=int(db_text),
        username=username,
        password=password,
        tls=tls,
        tls_options=tls_options,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
    )


def _check_single(url: str, scheme: str) -> None:
    """A one-server URL is redis-py's own (``Redis.from_url``): its query options must be
    keyword arguments of the connection it makes, or the client fails at every command
    (``TypeError``), never at start. Checked here, with redis-py's own URL parser, when
    redis-py is installed (check ``E022`` says so when it is not)."""
    try:
        from redis.connection import parse_url
    except ImportError:
        return
    try:
        kwargs = parse_url(url)
    except ValueError as exc:
        raise RedisURLError(str(exc).rstrip(".")) from None
    accepted = _connection_arguments(scheme)
    for name, value in kwargs.items():
        if name in accepted:
            allowed = TLS_OPTIONS.get(name) if scheme == "rediss" else None
            if allowed is not None and str(value).lower() not in allowed:
                raise RedisURLError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        elif name in _connection_arguments("rediss") - _connection_arguments("redis"):
            raise RedisURLError(f"option {name!r} needs a rediss:// URL")
        else:
            raise RedisURLError(
                f"unknown option {name!r} (redis-py's {scheme}:// connection takes no {name})"
            )


@functools.cache
def _connection_arguments(scheme: str) -> frozenset[str]:
    """The keyword arguments redis-py's connection pool and connection for ``scheme`` take."""
    import inspect

    from redis.connection import (
        Connection,
        ConnectionPool,
        SSLConnection,
        UnixDomainSocketConnection,
    )

    connection = {
        "redis": Connection,
        "rediss": SSLConnection,
        "unix": UnixDomainSocketConnection,
    }[scheme]
    names = {"connection_class"}
    for klass in (*connection.__mro__, ConnectionPool):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for parameter in list(inspect.signature(init).parameters.values())[1:]:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                names.add(parameter.name)
    return frozenset(names)


def _options(query: str, scheme: str, tls: bool) -> dict[str, Any]:
    """The query string's options (see the module docstring), checked and decoded."""
    known = [
        *(SENTINEL_OPTIONS if scheme in SENTINEL_SCHEMES else ()),
        *(TLS_OPTIONS if tls else ()),
    ]
    options: dict[str, Any] = {}
    # Split by hand: ``parse_qsl`` would read a "+" in a password as a space (form
    # encoding); here, as in the user:password part, only %XX escapes are decoded.
    pairs = [part.partition("=") for part in query.split("&")] if query else []
    if any(not equals or not name for name, equals, _ in pairs):
        raise RedisURLError("malformed query string (write ?name=value&…)")
    for name, value in ((unquote(name), unquote(value)) for name, _, value in pairs):
        if name not in known:
            if name in SENTINEL_OPTIONS or name in TLS_OPTIONS:
                needs = (
                    "redis+sentinel:// or rediss+sentinel://"
                    if name in SENTINEL_OPTIONS
                    else "rediss+"
                )
                raise RedisURLError(f"option {name!r} needs a {needs} URL")
            raise RedisURLError(
                f"unknown option {name!r}"
                + (
                    f"; {scheme}:// takes {', '.join(known)}"
                    if known
                    else f"; {scheme}:// takes none"
                )
            )
        if name in options:
            raise RedisURLError(f"option {name!r} is given twice")
        if not value:
            raise RedisURLError(f"option {name!r} has no value")
        allowed = TLS_OPTIONS.get(name)
        if allowed is not None and value.lower() not in allowed:
            raise RedisURLError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
        options[name] = value.lower() == "true" if name == "ssl_check_hostname" else value
    return options


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
        from redis.connection import ConnectionPool, parse_url

        # Not Redis.from_url(url, **options): there the URL's options (a cache LOCATION's
        # ``?socket_timeout=5``) win over the keyword arguments, and the store's short
        # timeouts and no retries must hold whatever the URL says.
        pool = ConnectionPool(
            **{**parse_url(url), "retry_on_timeout": False, "health_check_interval": 0, **options}
        )
        client = redis.Redis(connection_pool=pool)
        client.auto_close_connection_pool = True  # as from_url: closing it closes the pool
        return client
    if target.tls:
        options.update(ssl=True, **target.tls_options)
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.kind == "cluster":
        from redis.cluster import ClusterNode, RedisCluster

        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
            **credentials,
            **options,
        )
    # The sentinels: the same timeouts, TLS and no retries (redis-py's default retries with
    # a backoff of seconds: a sentinel that refuses or hangs would cost a guarded call that
    # long), and their own credentials, if any.
    asking = dict(options)
    if target.sentinel_password is not None:
        asking.update(username=target.sentinel_username, password=target.sentinel_password)
    sentinel = _sentinel_class()(list(target.hosts), sentinel_kwargs=asking, **options)
    return sentinel.master_for(target.service, db=target.db, health_check_interval=0, **credentials)


@functools.cache
def _sentinel_class() -> Any:
    """redis-py's ``Sentinel`` whose ``MasterNotFoundError`` says why each sentinel failed.

    redis-py (8.x) writes each failed sentinel into that message as the ``repr`` of its
    client (kilobytes of connection settings) and of the error, which names only the
    error's class: "network:ConnectionError", never "certificate verify failed" or
    "Connection refused". Here each sentinel's client remembers its last error, and the
    message lists those, one short line per sentinel."""
    from redis import Redis
    from redis.exceptions import ConnectionError, TimeoutError
    from redis.sentinel import MasterNotFoundError, Sentinel

    class SentinelClient(Redis):
        #: Why the last ``SENTINEL MASTERS`` failed ("Type: message"), None if it answered.
        failure: str | None = None

        def sentinel_masters(self) -> Any:
            try:
                masters = super().sentinel_masters()
            except (ConnectionError, TimeoutError) as exc:
                self.failure = f"{type(exc).__name__}: {exc}"
                raise
            self.failure = None
            return masters

    class ExplainedSentinel(Sentinel):
        def __init__(self, sentinels: list[tuple[str, int]], **kwargs: Any) -> None:
            super().__init__(sentinels, **kwargs)
            self.sentinels = [
                SentinelClient(host, port, **self.sentinel_kwargs) for host, port in sentinels
            ]

        def discover_master(self, service_name: str) -> Any:
            for client in self.sentinels:
                client.failure = None
            try:
                return super().discover_master(service_name)
            except MasterNotFoundError:
                failures = [client.failure for client in self.sentinels if client.failure]
                reason = "; ".join(failures) if failures else "no sentinel names a healthy one"
                raise MasterNotFoundError(
                    f"No master found for {service_name!r}: {reason}"
                ) from None

    return ExplainedSentinel
