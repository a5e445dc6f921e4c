"""Checks of REDIS_URL and REDIS_TIMEOUT: the Redis the breaker counts on, if its own."""

from __future__ import annotations

from typing import Any

from django.core.checks import Warning

from circuitbreaker_app.checks.base import is_positive, settings_error

#: A Redis client timeout above this lets an outage add noticeable latency to calls (W020).
SLOW_REDIS_TIMEOUT = 1.0


def redis_checks(raw: dict[str, Any]) -> list[Any]:
    """REDIS_URL (None, or a single-server, Cluster or Sentinel URL with redis-py installed)
    and REDIS_TIMEOUT (a positive number of seconds)."""
    from circuitbreaker_app.store import mask_redis_url
    from circuitbreaker_app.store.backends.redis_url import SCHEMES, RedisURLError, parse_redis_url

    found: list[Any] = []
    url = raw.get("REDIS_URL")
    scheme = url.partition("://")[0].lower() if isinstance(url, str) else None
    if url is not None and scheme not in SCHEMES:
        found.append(
            settings_error(
                20,
                "CIRCUITBREAKER['REDIS_URL'] must be None or a URL starting with "
                f"{', '.join(name + '://' for name in SCHEMES)}, but was "
                f"{(mask_redis_url(url) if isinstance(url, str) else url)!r}.",
                "For example 'redis://127.0.0.1:6379/0'; leave it unset to use the "
                "CACHE's own Redis server.",
            )
        )
    elif url is not None:
        try:
            parse_redis_url(url)
        except RedisURLError as exc:
            found.append(
                settings_error(
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
                settings_error(
                    22,
                    "CIRCUITBREAKER['REDIS_URL'] is set but the redis package is not installed.",
                    "pip install 'django-circuitbreaker-app[redis]'.",
                )
            )
    if "REDIS_TIMEOUT" in raw:
        timeout = raw["REDIS_TIMEOUT"]
        if not is_positive(timeout) or timeout > 60:
            found.append(
                settings_error(
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
