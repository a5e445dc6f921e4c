"""The ``CIRCUITBREAKER`` setting's system check, and the same check run at start-up.

:func:`check_settings` runs the checks of the other modules of this package in a fixed
order; :func:`validate_settings` turns its errors into :class:`InvalidSettings`.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import ERROR, register
from django.core.exceptions import ImproperlyConfigured

from circuitbreaker_app import conf
from circuitbreaker_app.checks.backends import backend_checks
from circuitbreaker_app.checks.base import settings_error
from circuitbreaker_app.checks.definitions import circuit_definition_checks
from circuitbreaker_app.checks.redis_settings import redis_checks
from circuitbreaker_app.checks.values import (
    db_timeout_checks,
    number_checks,
    probe_host_checks,
    status_and_metrics_checks,
)


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Report every invalid ``CIRCUITBREAKER`` value with a precise message."""
    raw = conf.user_settings()
    if not isinstance(raw, dict):
        return [settings_error(1, f"CIRCUITBREAKER must be a dict, not {type(raw).__name__}.")]
    errors: list[Any] = []
    unknown = sorted(set(raw) - set(conf.DEFAULTS), key=repr)
    if unknown:
        errors.append(
            settings_error(
                2,
                f"CIRCUITBREAKER has unknown key(s): {', '.join(map(repr, unknown))}.",
                f"Known keys: {', '.join(conf.DEFAULTS)}.",
            )
        )
    errors.extend(number_checks(raw))
    errors.extend(status_and_metrics_checks(raw))
    errors.extend(probe_host_checks(raw))
    errors.extend(db_timeout_checks(raw))
    errors.extend(redis_checks(raw))
    cache_alias = conf.get("CACHE")
    cache_ok = isinstance(cache_alias, str) and cache_alias in settings.CACHES
    if not cache_ok:
        errors.append(
            settings_error(
                6,
                f"CIRCUITBREAKER['CACHE'] names the cache {cache_alias!r}, which is not in CACHES.",
            )
        )
    db_alias = conf.get("DATABASE")
    db_ok = isinstance(db_alias, str) and db_alias in settings.DATABASES
    if not db_ok:
        errors.append(
            settings_error(
                7,
                f"CIRCUITBREAKER['DATABASE'] names the database {db_alias!r}, "
                "which is not in DATABASES.",
            )
        )
    errors.extend(circuit_definition_checks(conf.get("DEFAULTS"), conf.get("CIRCUITS")))
    if cache_ok and db_ok:
        errors.extend(backend_checks(cache_alias, db_alias))
    return errors


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
