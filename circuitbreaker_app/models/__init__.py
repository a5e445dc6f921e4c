"""Circuit definitions with their durable state, and the append-only event log.

One module per model (:mod:`.circuit`, :mod:`.event`, :mod:`.counter`, :mod:`.sample`),
plus what a definition is made of (:mod:`.definition`) and how a probe URL is shown
(:mod:`.masking`). Everything is importable from here, as it always was:
``from circuitbreaker_app.models import Circuit``.
"""

from circuitbreaker_app.models.circuit import Circuit
from circuitbreaker_app.models.counter import CircuitCounter
from circuitbreaker_app.models.definition import (
    DECISION_FIELDS,
    DEFINITION_FIELDS,
    NAME_PATTERN,
    translate_message,
    validate_circuit_name,
)
from circuitbreaker_app.models.event import CircuitEvent
from circuitbreaker_app.models.masking import MASK, mask_url
from circuitbreaker_app.models.sample import CircuitSample

__all__ = [
    "DECISION_FIELDS",
    "DEFINITION_FIELDS",
    "MASK",
    "NAME_PATTERN",
    "Circuit",
    "CircuitCounter",
    "CircuitEvent",
    "CircuitSample",
    "mask_url",
    "translate_message",
    "validate_circuit_name",
]
