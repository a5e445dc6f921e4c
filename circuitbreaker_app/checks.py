"""System checks for the ``CIRCUITBREAKER`` setting (ids ``circuitbreaker_app.E0xx/W0xx``)."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.core.checks import ERROR, Error, Warning, register
from django.core.exceptions import ImproperlyConfigured, ValidationError

from circuitbreaker_app import conf
from circuitbreaker_app.core.config import TRIAL_PROBE, check_name
from circuitbreaker_app.extras import celery_installed, install_hint

HINT = "See the settings reference, docs/reference/settings.md."


def _error(n: int, msg: str, hint: str = HINT) -> Error:
    return Error(msg, hint=hint, id=f"circuitbreaker_app.E{n:03d}")


def _positive(value: Any) -> bool:
    """A finite number > 0 (not a bool; an int too big for a float is not finite)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:
        return False


def _definition_errors(fields: Any, where: str) -> list[str]:
    from circuitbreaker_app.models import DEFINITION_FIELDS, Circuit

    if not isinstance(fields, dict):
        return [f"{where} must be a dict of circuit fields, not {type(fields).__name__}"]
    unknown = sorted(set(fields) - set(DEFINITION_FIELDS), key=repr)
    if unknown:
        return [f"{where} has unknown field(s) {', '.join(map(repr, unknown))}"]
    try:
        Circuit(name="check", **fields).full_clean(validate_unique=False)
    except ValidationError as exc:
        return [f"{where}: {field}: {'; '.join(msgs)}" for field, msgs in exc.message_dict.items()]
    except (TypeError, ValueError) as exc:
        return [f"{where}: {exc}"]
    return []


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Report every invalid ``CIRCUITBREAKER`` value with a precise message."""
    raw = conf.user_settings()
    if not isinstance(raw, dict):
        return [_error(1, f"CIRCUITBREAKER must be a dict, not {type(raw).__name__}.")]
    errors: list[Any] = []
    unknown = sorted(set(raw) - set(conf.DEFAULTS), key=repr)
    if unknown:
        errors.append(
            _error(
                2,
                f"CIRCUITBREAKER has unknown key(s): {', '.join(map(repr, unknown))}.",
                f"Known keys: {', '.join(conf.DEFAULTS)}.",
            )
        )
    for key, n in (("STATE_TTL", 3), ("PROBE_INTERVAL", 4)):
        if key in raw and not _positive(raw[key]):
            errors.append(
                _error(
                    n,
                    f"CIRCUITBREAKER[{key!r}] must be a positive number of "
                    f"seconds, but was {raw[key]!r}.",
                )
            )
    max_circuits = raw.get("MAX_CIRCUITS", 1)
    if not isinstance(max_circuits, int) or isinstance(max_circuits, bool) or max_circuits < 1:
        errors.append(
            _error(
                5,
                "CIRCUITBREAKER['MAX_CIRCUITS'] must be a positive integer, "
                f"but was {max_circuits!r}.",
            )
        )
    if "AUTO_CREATE" in raw and not isinstance(raw["AUTO_CREATE"], bool):
        errors.append(
            _error(
                10,
                "CIRCUITBREAKER['AUTO_CREATE'] must be True or False, "
                f"but was {raw['AUTO_CREATE']!r}.",
            )
        )
    errors.extend(_status_and_metrics_checks(raw))
    errors.extend(_probe_host_checks(raw))
    if "DB_TIMEOUT" in raw and (not _positive(raw["DB_TIMEOUT"]) or raw["DB_TIMEOUT"] > 30):
        errors.append(
            _error(
                41,
                "CIRCUITBREAKER['DB_TIMEOUT'] must be a positive number of seconds (at most "
                f"30), but was {raw['DB_TIMEOUT']!r}.",
                "The default, 0.5, bounds what a hung database can add to a guarded call.",
            )
        )
    errors.extend(_redis_checks(raw))
    cache_alias = conf.get("CACHE")
    cache_ok = isinstance(cache_alias, str) and cache_alias in settings.CACHES
    if not cache_ok:
        errors.append(
            _error(
                6,
                f"CIRCUITBREAKER['CACHE'] names the cache {cache_alias!r}, which is not in CACHES.",
            )
        )
    db_alias = conf.get("DATABASE")
    db_ok = isinstance(db_alias, str) and db_alias in settings.DATABASES
    if not db_ok:
        errors.append(
            _error(
                7,
                f"CIRCUITBREAKER['DATABASE'] names the database {db_alias!r}, "
                "which is not in DATABASES.",
            )
        )
    for message in _definition_errors(conf.get("DEFAULTS") or {}, "CIRCUITBREAKER['DEFAULTS']"):
        errors.append(_error(8, message + "."))
    circuits = conf.get("CIRCUITS") or {}
    if not isinstance(circuits, dict):
        errors.append(
            _error(
                9,
                "CIRCUITBREAKER['CIRCUITS'] must be a dict {name: {field: "
                f"value}}, not {type(circuits).__name__}.",
            )
        )
        circuits = {}
    defaults = conf.get("DEFAULTS") if isinstance(conf.get("DEFAULTS"), dict) else {}
    for name, fields in circuits.items():
        try:
            check_name(name)
        except (TypeError, ValueError) as exc:
            errors.append(_error(9, f"CIRCUITBREAKER['CIRCUITS']: {exc}."))
            continue
        merged = {**defaults, **fields} if isinstance(fields, dict) else fields
        for message in _definition_errors(merged, f"CIRCUITBREAKER['CIRCUITS'][{name!r}]"):
            errors.append(_error(9, message + "."))
    if cache_ok and db_ok:
        errors.extend(_backend_checks(cache_alias, db_alias))
    return errors


#: Shorter status tokens are guessable; the check warns (W003).
MIN_TOKEN_LENGTH = 20


def _status_and_metrics_checks(raw: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    token = raw.get("STATUS_TOKEN")
    if isinstance(token, str) and token.strip() and token != token.strip():
        found.append(
            _error(
                15,
                "CIRCUITBREAKER['STATUS_TOKEN'] has leading or trailing whitespace "
                f"({len(token) - len(token.lstrip())} before, "
                f"{len(token) - len(token.rstrip())} after): no request can send it, so "
                "the token never matches.",
                "Strip it where it is read, e.g. os.environ['CB_STATUS_TOKEN'].strip() or "
                "Path(...).read_text().strip() (a file usually ends with a newline).",
            )
        )
    elif token is not None and (not isinstance(token, str) or not token.strip()):
        found.append(
            _error(
                13,
                "CIRCUITBREAKER['STATUS_TOKEN'] must be None or a non-empty string, "
                f"but was {token!r}.",
                "Use a long random string, e.g. from `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`, read from the environment.",
            )
        )
    elif isinstance(token, str) and len(token) < MIN_TOKEN_LENGTH:
        found.append(
            Warning(
                f"CIRCUITBREAKER['STATUS_TOKEN'] is only {len(token)} characters long.",
                hint=f"Use at least {MIN_TOKEN_LENGTH} random characters "
                "(secrets.token_urlsafe(32)).",
                id="circuitbreaker_app.W003",
            )
        )
    if "METRICS" in raw and not isinstance(raw["METRICS"], bool):
        found.append(
            _error(
                14,
                f"CIRCUITBREAKER['METRICS'] must be True or False, but was {raw['METRICS']!r}.",
            )
        )
    elif raw.get("METRICS") is True:
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            found.append(
                Warning(
                    "CIRCUITBREAKER['METRICS'] is True but prometheus_client is not installed, "
                    "so no metrics are exported.",
                    hint="pip install 'django-circuitbreaker-app[metrics]', or set METRICS "
                    "to False.",
                    id="circuitbreaker_app.W004",
                )
            )
    return found


def _probe_host_checks(raw: dict[str, Any]) -> list[Any]:
    """PROBE_HOSTS: None, or a list of host names / fnmatch patterns (E040)."""
    hosts = raw.get("PROBE_HOSTS")
    if hosts is None:
        return []
    if isinstance(hosts, list | tuple) and all(
        isinstance(host, str) and host.strip() == host and host for host in hosts
    ):
        return []
    return [
        _error(
            40,
            "CIRCUITBREAKER['PROBE_HOSTS'] must be None or a list of host names or patterns "
            f"(non-empty strings without surrounding spaces), but was {hosts!r}.",
            "For example ['status.example.com', '*.svc.cluster.local'].",
        )
    ]


#: A Redis client timeout above this lets an outage add noticeable latency to calls (W020).
SLOW_REDIS_TIMEOUT = 1.0


def _redis_checks(raw: dict[str, Any]) -> list[Any]:
    """REDIS_URL (None, or a single-server, Cluster or Sentinel URL with redis-py installed)
    and REDIS_TIMEOUT (a positive number of seconds)."""
    from circuitbreaker_app.store import mask_redis_url
    from circuitbreaker_app.store.backends.redis_url import SCHEMES, RedisURLError, parse_redis_url

    found: list[Any] = []
    url = raw.get("REDIS_URL")
    scheme = url.partition("://")[0].lower() if isinstance(url, str) else None
    if url is not None and scheme not in SCHEMES:
        found.append(
            _error(
                20,
                "CIRCUITBREAKER['REDIS_URL'] must be None or a URL starting with "
                f"{', '.join(name + '://' for name in SCHEMES)}, but was {url!r}.",
                "For example 'redis://127.0.0.1:6379/0'; leave it unset to use the "
                "CACHE's own Redis server.",
            )
        )
    elif url is not None:
        try:
            parse_redis_url(url)
        except RedisURLError as exc:
            found.append(
                _error(
                    30,
                    f"CIRCUITBREAKER['REDIS_URL'] {mask_redis_url(url)!r} is malformed: {exc}.",
                    "Cluster: 'redis+cluster://host1:6379,host2:6379/'; Sentinel: "
                    "'redis+sentinel://host1:26379,host2:26379/SERVICE/0'.",
                )
            )
        try:
            import redis  # noqa: F401
        except ImportError:
            found.append(
                _error(
                    22,
                    "CIRCUITBREAKER['REDIS_URL'] is set but the redis package is not installed.",
                    "pip install 'django-circuitbreaker-app[redis]'.",
                )
            )
    if "REDIS_TIMEOUT" in raw:
        timeout = raw["REDIS_TIMEOUT"]
        if not _positive(timeout) or timeout > 60:
            found.append(
                _error(
                    21,
                    "CIRCUITBREAKER['REDIS_TIMEOUT'] must be a positive number of seconds "
                    f"(at most 60), but was {timeout!r}.",
                )
            )
        elif timeout > SLOW_REDIS_TIMEOUT:
            found.append(
                Warning(
                    f"CIRCUITBREAKER['REDIS_TIMEOUT'] is {timeout!r} s: while Redis hangs, a "
                    "guarded call can wait that long (once per second per process).",
                    hint="Keep it well under a second (the default is 0.25).",
                    id="circuitbreaker_app.W020",
                )
            )
    return found


def _backend_checks(cache_alias: str, db_alias: str) -> list[Any]:
    from circuitbreaker_app.store import backend_name

    backend = settings.CACHES[cache_alias].get("BACKEND", "")
    engine = settings.DATABASES[db_alias].get("ENGINE", "")
    found: list[Any] = []
    if backend == "django.core.cache.backends.dummy.DummyCache":
        found.append(
            _error(
                11,
                f"The cache {cache_alias!r} is a DummyCache: circuits cannot "
                "share state through it.",
                "Point CIRCUITBREAKER['CACHE'] at a real cache.",
            )
        )
    elif backend_name(cache_alias) == "database" and not engine.endswith(("sqlite3", "postgresql")):
        found.append(
            _error(
                12,
                f"The cache {cache_alias!r} ({backend}) cannot hold the shared counters "
                "(only Redis and the per-process LocMem can update them atomically), and "
                f"the database {db_alias!r} ({engine}) cannot hold them instead.",
                "Use Redis, or a SQLite/PostgreSQL database.",
            )
        )
    if backend == "django.core.cache.backends.locmem.LocMemCache" and any(
        name.startswith("CELERY_") for name in dir(settings)
    ):
        found.append(
            Warning(
                f"The cache {cache_alias!r} is a LocMemCache, which each process keeps to itself, "
                "but Celery is configured: workers and web processes will not share circuit state.",
                hint="Use Redis, or a database or file cache, for CIRCUITBREAKER['CACHE'].",
                id="circuitbreaker_app.W001",
            )
        )
    found.extend(_connect_timeout_checks(db_alias))
    if settings.DATABASES[db_alias].get("ATOMIC_REQUESTS"):
        found.append(
            Warning(
                f"DATABASES[{db_alias!r}] has ATOMIC_REQUESTS: a request that fails rolls back the "
                "transition its failures caused.",
                hint="Add a second alias to the same database without ATOMIC_REQUESTS and set "
                "CIRCUITBREAKER['DATABASE'] to it.",
                id="circuitbreaker_app.W002",
            )
        )
    return found


#: Database engines whose driver waits for a connection without bound unless told, and the
#: OPTIONS key that bounds it.
CONNECT_TIMEOUT_OPTIONS = {
    "postgresql": "connect_timeout",
    "postgis": "connect_timeout",
    "mysql": "connect_timeout",
}


def _connect_timeout_checks(db_alias: str) -> list[Any]:
    """W040: the breaker's database alias has no connect timeout (PostgreSQL, MySQL)."""
    database = settings.DATABASES[db_alias]
    engine = str(database.get("ENGINE", "")).rsplit(".", 1)[-1]
    option = CONNECT_TIMEOUT_OPTIONS.get(engine)
    if option is None or (database.get("OPTIONS") or {}).get(option):
        return []
    return [
        Warning(
            f"DATABASES[{db_alias!r}] has no OPTIONS[{option!r}]: while the database accepts "
            "connections but does not answer, opening a connection waits without bound, "
            "and the breaker's first query after an outage starts with it.",
            hint=f"Set DATABASES[{db_alias!r}]['OPTIONS'][{option!r}] to a few seconds "
            "(e.g. 2), or point CIRCUITBREAKER['DATABASE'] at an alias that has it.",
            id="circuitbreaker_app.W040",
        )
    ]


class InvalidSettings(ImproperlyConfigured):
    """Raised when the app loads with invalid ``CIRCUITBREAKER`` settings."""


def validate_settings() -> None:
    """Run :func:`check_settings` and raise :class:`InvalidSettings` on any error.

    Called from ``AppConfig.ready()``, so a site with invalid settings fails at start —
    runserver, gunicorn and Celery alike, none of which runs the system checks — and
    never at a guarded call. Errors listed in ``SILENCED_SYSTEM_CHECKS`` are skipped.
    """
    silenced = set(getattr(settings, "SILENCED_SYSTEM_CHECKS", ()))
    errors = [
        message
        for message in check_settings()
        if message.level >= ERROR and message.id not in silenced
    ]
    if errors:
        lines = "\n".join(f"  {message.id}: {message.msg}" for message in errors)
        raise InvalidSettings(f"invalid CIRCUITBREAKER settings:\n{lines}")


def _probe_definitions(raw: dict[str, Any]) -> list[str]:
    """Where ``CIRCUITBREAKER`` asks for probes: ``DEFAULTS`` or a ``CIRCUITS`` entry."""
    found = []
    entries = [("DEFAULTS", raw.get("DEFAULTS"))]
    circuits = raw.get("CIRCUITS")
    if isinstance(circuits, dict):
        entries += [(f"CIRCUITS[{name!r}]", fields) for name, fields in circuits.items()]
    for where, fields in entries:
        if isinstance(fields, dict) and (
            fields.get("trial_mode") == TRIAL_PROBE or fields.get("probe_url")
        ):
            found.append(where)
    return found


def _probe_circuits_in_database(databases: Any) -> list[str]:
    """Names of stored circuits that are probed (only when ``check`` may use the database)."""
    db_alias = conf.get("DATABASE")
    if not databases or db_alias not in databases:
        return []
    from django.db import DatabaseError
    from django.db.models import Q

    from circuitbreaker_app.models import Circuit

    try:
        query = Circuit.objects.using(db_alias).filter(Q(trial_mode=TRIAL_PROBE) | ~Q(probe_url=""))
        return sorted(query.values_list("name", flat=True)[:5])
    except DatabaseError:  # not migrated yet: migrate runs the checks first
        return []


@register()
def check_celery(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """Probes run as Celery tasks: warn when they are asked for and Celery is missing."""
    if celery_installed():
        return []
    raw = conf.user_settings()
    if not isinstance(raw, dict):
        return []  # E001 says so
    reasons = _probe_definitions(raw)
    if "PROBE_INTERVAL" in raw:
        reasons.insert(0, "PROBE_INTERVAL")
    names = _probe_circuits_in_database(databases)
    if names:
        reasons.append(f"circuits {', '.join(map(repr, names))} in the database")
    if not reasons:
        return []
    return [
        Warning(
            f"Probes need Celery, which is not installed; asked for by {', '.join(reasons)}. "
            "Open circuits will not be probed, and circuits with trial_mode 'probe' stay open.",
            hint=f"Install Celery with {install_hint('celery')} and run a worker with beat.",
            id="circuitbreaker_app.W030",
        )
    ]
