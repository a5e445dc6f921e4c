"""Checks of single ``CIRCUITBREAKER`` values: numbers, flags, the status token, hosts."""

from __future__ import annotations

from typing import Any

from django.core.checks import Warning

from circuitbreaker_app.checks.base import is_positive, settings_error

#: Shorter status tokens are guessable; the check warns (W003).
MIN_TOKEN_LENGTH = 20


def number_checks(raw: dict[str, Any]) -> list[Any]:
    """STATE_TTL and PROBE_INTERVAL (E003, E004), MAX_CIRCUITS (E005), AUTO_CREATE (E010)."""
    found: list[Any] = []
    for key, n in (("STATE_TTL", 3), ("PROBE_INTERVAL", 4)):
        if key in raw and not is_positive(raw[key]):
            found.append(
                settings_error(
                    n,
                    f"CIRCUITBREAKER[{key!r}] must be a positive number of "
                    f"seconds, but was {raw[key]!r}.",
                )
            )
    max_circuits = raw.get("MAX_CIRCUITS", 1)
    if not isinstance(max_circuits, int) or isinstance(max_circuits, bool) or max_circuits < 1:
        found.append(
            settings_error(
                5,
                "CIRCUITBREAKER['MAX_CIRCUITS'] must be a positive integer, "
                f"but was {max_circuits!r}.",
            )
        )
    if "AUTO_CREATE" in raw and not isinstance(raw["AUTO_CREATE"], bool):
        found.append(
            settings_error(
                10,
                "CIRCUITBREAKER['AUTO_CREATE'] must be True or False, "
                f"but was {raw['AUTO_CREATE']!r}.",
            )
        )
    return found


def db_timeout_checks(raw: dict[str, Any]) -> list[Any]:
    """DB_TIMEOUT: a positive number of seconds, at most 30 (E041)."""
    if "DB_TIMEOUT" in raw and (not is_positive(raw["DB_TIMEOUT"]) or raw["DB_TIMEOUT"] > 30):
        return [
            settings_error(
                41,
                "CIRCUITBREAKER['DB_TIMEOUT'] must be a positive number of seconds (at most "
                f"30), but was {raw['DB_TIMEOUT']!r}.",
                "The default, 0.5, bounds what a hung database can add to a guarded call.",
            )
        ]
    return []


def status_and_metrics_checks(raw: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    token = raw.get("STATUS_TOKEN")
    if isinstance(token, str) and token.strip() and token != token.strip():
        found.append(
            settings_error(
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
            settings_error(
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
            settings_error(
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


def probe_host_checks(raw: dict[str, Any]) -> list[Any]:
    """PROBE_HOSTS: None, or a list of host names / fnmatch patterns (E040)."""
    hosts = raw.get("PROBE_HOSTS")
    if hosts is None:
        return []
    if isinstance(hosts, list | tuple) and all(
        isinstance(host, str) and host.strip() == host and host for host in hosts
    ):
        return []
    return [
        settings_error(
            40,
            "CIRCUITBREAKER['PROBE_HOSTS'] must be None or a list of host names or patterns "
            f"(non-empty strings without surrounding spaces), but was {hosts!r}.",
            "For example ['status.example.com', '*.svc.cluster.local'].",
        )
    ]
