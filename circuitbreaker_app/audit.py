"""The audit trail of what operators do to circuit definitions (DESIGN §4b).

State moves are audited where they happen (the store's compare-and-set writes their
event). This module records the other two things an operator can do to a circuit:
edit its definition and delete it. Each becomes one :class:`CircuitEvent` naming the
acting user (when known) and the changed fields as ``{field: [old, new]}``; probe URLs
are stored masked, so the log never holds a credential.
"""

from __future__ import annotations

from typing import Any

from circuitbreaker_app.core import State

#: States an operator put a circuit in (DESIGN §3 "Forced states"). Undoing one, by
#: deleting the circuit or by editing how it decides, needs ``force_circuit``.
OPERATOR_STATES = frozenset({State.FORCED_OPEN, State.FORCED_CLOSED, State.DISABLED})

#: The permission that guards every change to how a circuit behaves right now.
FORCE_PERMISSION = "circuitbreaker_app.force_circuit"


def shown(field: str, value: Any) -> Any:
    """``value`` as the audit log keeps it (probe URLs masked)."""
    from circuitbreaker_app.models import mask_url

    if field == "probe_url" and isinstance(value, str):
        return mask_url(value)
    return value


def changes_between(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[Any]]:
    """``{field: [old, new]}`` for every field whose value differs."""
    return {
        field: [shown(field, old.get(field)), shown(field, value)]
        for field, value in new.items()
        if old.get(field) != value
    }


def _username(actor: Any) -> str:
    return actor.get_username() if actor is not None else "code"


def record_edit(
    name: str,
    circuit_id: int,
    state: str,
    generation: int,
    changes: dict[str, list[Any]],
    actor: Any,
    using: str,
) -> None:
    """One event for a definition edit (nothing when no field changed)."""
    from circuitbreaker_app.models import CircuitEvent

    if not changes:
        return
    CircuitEvent.objects.using(using).create(
        circuit_id=circuit_id,
        circuit_name=name,
        from_state=state,
        to_state=state,
        reason=f"definition edited by {_username(actor)}: {', '.join(changes)}"[:200],
        generation=generation,
        actor=actor,
        changes=changes,
    )


def circuit_deleted(sender: Any, instance: Any, using: str, **kwargs: Any) -> None:
    """``post_delete`` receiver: one event naming the deleted circuit, its last state and
    definition, and who deleted it (``Circuit.delete(actor=…)``; None from code)."""
    from circuitbreaker_app.models import DEFINITION_FIELDS, CircuitEvent

    actor = getattr(instance, "_cb_actor", None)
    CircuitEvent.objects.using(using).create(
        circuit=None,
        circuit_name=instance.name,
        from_state=instance.state,
        to_state=instance.state,
        reason=f"circuit deleted by {_username(actor)}"[:200],
        generation=instance.generation,
        actor=actor,
        changes={
            field: [shown(field, getattr(instance, field)), None] for field in DEFINITION_FIELDS
        },
    )
