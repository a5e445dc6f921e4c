"""System checks for the ``CIRCUITBREAKER`` setting (ids ``circuitbreaker_app.E0xx/W0xx``)."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register
from django.core.exceptions import ValidationError

from circuitbreaker_app import conf
from circuitbreaker_app.core.config import check_name

ATOMIC_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.redis.RedisCache",
    "django.core.cache.backends.memcached.PyMemcacheCache",
    "django.core.cache.backends.memcached.PyLibMCCache",
    "django_redis.cache.RedisCache",
)
HINT = "See the configuration reference in README.md."


def _error(n: int, msg: str, hint: str = HINT) -> Error:
    return Error(msg, hint=hint, id=f"circuitbreaker_app.E{n:03d}")


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _definition_errors(fields: Any, where: str) -> list[str]:
    from circuitbreaker_app.models import DEFINITION_FIELDS, Circuit

    if not isinstance(fields, dict):
        return [f"{where} must be a dict of circuit fields, not {type(fields).__name__}"]
    unknown = sorted(set(fields) - set(DEFINITION_FIELDS))
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
    unknown = sorted(set(raw) - set(conf.DEFAULTS))
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
    cache_alias = conf.get("CACHE")
    if cache_alias not in settings.CACHES:
        errors.append(
            _error(
                6,
                f"CIRCUITBREAKER['CACHE'] names the cache {cache_alias!r}, which is not in CACHES.",
            )
        )
    db_alias = conf.get("DATABASE")
    if db_alias not in settings.DATABASES:
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
    if cache_alias in settings.CACHES and db_alias in settings.DATABASES:
        errors.extend(_backend_checks(cache_alias, db_alias))
    return errors


def _backend_checks(cache_alias: str, db_alias: str) -> list[Any]:
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
    elif backend not in ATOMIC_CACHES and not engine.endswith(("sqlite3", "postgresql")):
        found.append(
            _error(
                12,
                f"The cache {cache_alias!r} ({backend}) has no atomic incr, and "
                f"the database {db_alias!r} ({engine}) cannot hold the shared "
                "counters instead.",
                "Use Redis or memcached, or a SQLite/PostgreSQL database.",
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
