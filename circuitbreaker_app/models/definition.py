"""What a circuit's definition is made of: its fields, its name's rule, its messages.

Shared by the model, the ``CIRCUITBREAKER`` checks, the audit log and the admin form, so
they agree on which fields a definition has without importing the model class.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app.core.config import Message

NAME_PATTERN = r"^[A-Za-z0-9._:-]+\Z"
validate_circuit_name = RegexValidator(
    NAME_PATTERN,
    _("Use only letters, digits and the characters . _ : - (no spaces)."),
    code="invalid_name",
)


def translate_message(message: str) -> str:
    """A core validation message in the active language (see ``core.config.Message``)."""
    if isinstance(message, Message):
        return gettext(message.template) % message.params
    return message


#: Model fields that make up a :class:`~circuitbreaker_app.core.CircuitConfig`.
DECISION_FIELDS = (
    "window_type",
    "window_size",
    "minimum_calls",
    "failure_rate_threshold",
    "slow_call_duration",
    "slow_call_rate_threshold",
    "wait_duration",
    "backoff_multiplier",
    "max_wait_duration",
    "half_open_max_calls",
    "trial_mode",
    "trial_lease",
)
#: Everything an operator may define (and ``CIRCUITBREAKER["CIRCUITS"]`` may set).
DEFINITION_FIELDS = ("description", *DECISION_FIELDS, "probe_url", "probe_timeout")
