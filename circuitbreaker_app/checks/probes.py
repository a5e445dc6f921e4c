"""W030: probes are asked for (by the settings or by stored circuits) without Celery."""

from __future__ import annotations

from typing import Any

from django.core.checks import Warning, register

from circuitbreaker_app import conf
from circuitbreaker_app.core.config import TRIAL_PROBE
from circuitbreaker_app.extras import celery_installed, install_hint


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
