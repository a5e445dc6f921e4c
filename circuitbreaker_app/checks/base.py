"""What every ``CIRCUITBREAKER`` check shares: the error constructor and number test."""

from __future__ import annotations

import math
from typing import Any

from django.core.checks import Error

HINT = "See the settings reference, docs/reference/settings.md."


def settings_error(n: int, msg: str, hint: str = HINT) -> Error:
    """The error ``circuitbreaker_app.E<n>`` (three digits), pointing at the reference."""
    return Error(msg, hint=hint, id=f"circuitbreaker_app.E{n:03d}")


def is_positive(value: Any) -> bool:
    """A finite number > 0 (not a bool; an int too big for a float is not finite)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:
        return False
