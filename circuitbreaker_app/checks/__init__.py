"""System checks for the ``CIRCUITBREAKER`` setting (ids ``circuitbreaker_app.E0xx/W0xx``).

Importing this package registers the two checks, :func:`check_settings` (every key of the
setting; see :mod:`.setting`, which runs :mod:`.values`, :mod:`.redis_settings`,
:mod:`.definitions` and :mod:`.backends`) and :func:`check_celery` (:mod:`.probes`).
``AppConfig.ready()`` also runs the first through :func:`validate_settings`.
"""

from circuitbreaker_app.checks.backends import CONNECT_TIMEOUT_OPTIONS
from circuitbreaker_app.checks.base import HINT
from circuitbreaker_app.checks.probes import check_celery
from circuitbreaker_app.checks.redis_settings import SLOW_REDIS_TIMEOUT
from circuitbreaker_app.checks.setting import InvalidSettings, check_settings, validate_settings
from circuitbreaker_app.checks.values import MIN_TOKEN_LENGTH

__all__ = [
    "CONNECT_TIMEOUT_OPTIONS",
    "HINT",
    "MIN_TOKEN_LENGTH",
    "SLOW_REDIS_TIMEOUT",
    "InvalidSettings",
    "check_celery",
    "check_settings",
    "validate_settings",
]
