"""Create the circuits of ``CIRCUITBREAKER["CIRCUITS"]`` that do not exist yet.

Existing rows are never touched: what operators changed in the admin wins.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from circuitbreaker_app import conf


def sync_circuits(using: str | None = None) -> list[str]:
    """Create missing circuits from settings; return the names created.

    Raises ValidationError (naming the circuit) when a definition is invalid; nothing is
    written for that circuit.
    """
    from circuitbreaker_app.models import Circuit

    using = using or conf.get("DATABASE")
    defaults = dict(conf.get("DEFAULTS") or {})
    created = []
    existing = set(Circuit.objects.using(using).values_list("name", flat=True))
    for name, fields in (conf.get("CIRCUITS") or {}).items():
        if name in existing:
            continue
        circuit = Circuit(name=name, **{**defaults, **(fields or {})})
        try:
            circuit.full_clean(validate_unique=False)
        except ValidationError as exc:
            raise ValidationError(f"CIRCUITBREAKER['CIRCUITS'][{name!r}]: {exc.messages}") from exc
        try:
            with transaction.atomic(using=using):
                circuit.save(using=using, force_insert=True)
        except IntegrityError:
            continue  # another process created it meanwhile
        created.append(name)
    return created


def sync_after_migrate(using: str = "default", **kwargs: Any) -> None:
    """``post_migrate`` receiver: sync on the database the breaker writes to."""
    if using != conf.get("DATABASE"):
        return
    sync_circuits(using=using)
