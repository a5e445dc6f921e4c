"""Checks of the circuit definitions in DEFAULTS and CIRCUITS, by the model's own rules."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from circuitbreaker_app.checks.base import settings_error
from circuitbreaker_app.core.config import check_name


def definition_errors(fields: Any, where: str) -> list[str]:
    """What is wrong with ``fields`` as a circuit definition, read at ``where``: the
    messages of ``Circuit.full_clean()``, so the checks and the admin form agree."""
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


def circuit_definition_checks(defaults: Any, circuits: Any) -> list[Any]:
    """DEFAULTS (E008) and each CIRCUITS entry merged over DEFAULTS (E009)."""
    errors: list[Any] = []
    for message in definition_errors(defaults or {}, "CIRCUITBREAKER['DEFAULTS']"):
        errors.append(settings_error(8, message + "."))
    circuits = circuits or {}
    if not isinstance(circuits, dict):
        errors.append(
            settings_error(
                9,
                "CIRCUITBREAKER['CIRCUITS'] must be a dict {name: {field: "
                f"value}}, not {type(circuits).__name__}.",
            )
        )
        circuits = {}
    defaults = defaults if isinstance(defaults, dict) else {}
    for name, fields in circuits.items():
        try:
            check_name(name)
        except (TypeError, ValueError) as exc:
            errors.append(settings_error(9, f"CIRCUITBREAKER['CIRCUITS']: {exc}."))
            continue
        merged = {**defaults, **fields} if isinstance(fields, dict) else fields
        for message in definition_errors(merged, f"CIRCUITBREAKER['CIRCUITS'][{name!r}]"):
            errors.append(settings_error(9, message + "."))
    return errors
