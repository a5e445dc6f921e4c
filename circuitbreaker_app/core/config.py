"""The definition of one circuit as a frozen, validated dataclass.

Validation messages name the field and the value, so the same rules serve
``breaker()`` options, model ``clean()`` (one message per field) and system checks.
Each message is a :class:`Message`: English text that also keeps its template and values,
so the admin can show it in the user's language while the core imports nothing from Django.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

WINDOW_COUNT = "count"
WINDOW_TIME = "time"
WINDOW_TYPES = (WINDOW_COUNT, WINDOW_TIME)
TRIAL_LIVE = "live"
TRIAL_PROBE = "probe"
TRIAL_MODES = (TRIAL_LIVE, TRIAL_PROBE)

DEFAULT_WINDOW_TYPE = WINDOW_COUNT
DEFAULT_WINDOW_SIZE = 20
DEFAULT_MINIMUM_CALLS = 10
DEFAULT_FAILURE_RATE_THRESHOLD = 50.0
DEFAULT_SLOW_CALL_DURATION: float | None = None
DEFAULT_SLOW_CALL_RATE_THRESHOLD = 100.0
DEFAULT_WAIT_DURATION = 30.0
DEFAULT_BACKOFF_MULTIPLIER = 2.0
DEFAULT_MAX_WAIT_DURATION = 600.0
DEFAULT_HALF_OPEN_MAX_CALLS = 3
DEFAULT_TRIAL_MODE = TRIAL_LIVE
DEFAULT_TRIAL_LEASE = 30.0

#: Upper bounds keep shared counters small and catch typos such as 10**9.
MAX_WINDOW_SIZE = 100_000
MAX_SECONDS = 86_400.0 * 7
MAX_HALF_OPEN_CALLS = 1_000


def gettext_noop(template: str) -> str:
    """Mark ``template`` for ``makemessages`` (which knows this name); return it unchanged."""
    return template


class Message(str):
    """A validation message in English that keeps its ``template`` and ``params``.

    It is the English text wherever a ``str`` is expected (exceptions, system checks, logs);
    ``gettext(message.template) % message.params`` is the same text in another language.
    """

    template: str
    params: dict[str, Any]

    def __new__(cls, template: str, **params: Any) -> Message:
        message = super().__new__(cls, template % params)
        message.template = template
        message.params = params
        return message


#: Circuit names: what fits in cache keys, URLs and log lines without escaping.
NAME_RE = re.compile(r"[A-Za-z0-9._:-]{1,100}")


def check_name(name: object) -> str:
    """Return ``name`` if it is a valid circuit name, else raise TypeError/ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"a circuit name must be a str, but was {name!r}")
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            "a circuit name must be 1 to 100 letters, digits or . _ : - characters, "
            f"but was {name!r}"
        )
    return name


class ConfigError(ValueError):
    """An invalid circuit setting; ``field`` names it so forms can attach the message."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def _is_number(value: Any) -> bool:
    """A real int or a finite float (bool, NaN and infinities are not numbers here)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True  # may exceed float range: math.isfinite() would overflow
    return isinstance(value, float) and math.isfinite(value)


def _integer(low: int, high: int) -> Callable[[str, Any], str | None]:
    def check(name: str, value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return Message(
                gettext_noop("%(name)s must be an integer, but was %(value)s"),
                name=name,
                value=repr(value),
            )
        if not low <= value <= high:
            return Message(
                gettext_noop("%(name)s must be between %(low)s and %(high)s, but was %(value)s"),
                name=name,
                low=low,
                high=high,
                value=repr(value),
            )
        return None

    return check


def _seconds(*, allow_zero: bool, optional: bool = False) -> Callable[[str, Any], str | None]:
    def check(name: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if not _is_number(value):
            return Message(
                gettext_noop("%(name)s must be a finite number of seconds, but was %(value)s"),
                name=name,
                value=repr(value),
            )
        if value < 0 and allow_zero:
            return Message(
                gettext_noop("%(name)s must be 0 or more, but was %(value)s"),
                name=name,
                value=repr(value),
            )
        if value <= 0 and not allow_zero:
            return Message(
                gettext_noop("%(name)s must be greater than 0, but was %(value)s"),
                name=name,
                value=repr(value),
            )
        if value > MAX_SECONDS:
            return Message(
                gettext_noop("%(name)s must be at most %(max)s seconds, but was %(value)s"),
                name=name,
                max=f"{MAX_SECONDS:g}",
                value=repr(value),
            )
        return None

    return check


def _percent(name: str, value: Any) -> str | None:
    if not _is_number(value) or not 0 < value <= 100:
        return Message(
            gettext_noop("%(name)s must be greater than 0 and at most 100, but was %(value)s"),
            name=name,
            value=repr(value),
        )
    return None


def _multiplier(name: str, value: Any) -> str | None:
    if not _is_number(value) or not 1 <= value <= 100:
        return Message(
            gettext_noop("%(name)s must be a number from 1 to 100, but was %(value)s"),
            name=name,
            value=repr(value),
        )
    return None


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str | None]:
    def check(name: str, value: Any) -> str | None:
        if value not in options:
            return Message(
                gettext_noop("%(name)s must be one of %(options)s, but was %(value)s"),
                name=name,
                options=", ".join(options),
                value=repr(value),
            )
        return None

    return check


FIELD_CHECKS: dict[str, Callable[[str, Any], str | None]] = {
    "window_type": _choice(WINDOW_TYPES),
    "window_size": _integer(1, MAX_WINDOW_SIZE),
    "minimum_calls": _integer(1, MAX_WINDOW_SIZE),
    "failure_rate_threshold": _percent,
    "slow_call_duration": _seconds(allow_zero=False, optional=True),
    "slow_call_rate_threshold": _percent,
    "wait_duration": _seconds(allow_zero=True),
    "backoff_multiplier": _multiplier,
    "max_wait_duration": _seconds(allow_zero=True),
    "half_open_max_calls": _integer(1, MAX_HALF_OPEN_CALLS),
    "trial_mode": _choice(TRIAL_MODES),
    "trial_lease": _seconds(allow_zero=False),
}


def validate_fields(values: Mapping[str, Any]) -> dict[str, str]:
    """Return ``{field: message}`` for every invalid value in ``values`` (empty when valid).

    Unknown keys are errors too. Cross-field rules are checked only when both fields
    are individually valid, so each field gets at most one message.
    """
    errors: dict[str, str] = {}
    for name, value in values.items():
        check = FIELD_CHECKS.get(name)
        if check is None:
            errors[name] = Message(
                gettext_noop("%(name)s is not a circuit setting (known: %(known)s)"),
                name=name,
                known=", ".join(FIELD_CHECKS),
            )
            continue
        message = check(name, value)
        if message:
            errors[name] = message
    merged: dict[str, Any] = {f.name: f.default for f in fields(CircuitConfig)}
    merged.update({k: v for k, v in values.items() if k in FIELD_CHECKS})

    def ok(*names: str) -> bool:
        return not any(n in errors for n in names)

    if (
        ok("window_type", "window_size", "minimum_calls")
        and merged["window_type"] == WINDOW_COUNT
        and merged["minimum_calls"] > merged["window_size"]
    ):
        errors["minimum_calls"] = Message(
            gettext_noop(
                "minimum_calls (%(minimum)s) cannot exceed the window_size (%(size)s) "
                "of a count window: the circuit could never open"
            ),
            minimum=merged["minimum_calls"],
            size=merged["window_size"],
        )
    if ok("wait_duration", "max_wait_duration") and (
        merged["max_wait_duration"] < merged["wait_duration"]
    ):
        errors["max_wait_duration"] = Message(
            gettext_noop("max_wait_duration (%(max)s) must be at least wait_duration (%(wait)s)"),
            max=merged["max_wait_duration"],
            wait=merged["wait_duration"],
        )
    return errors


@dataclass(frozen=True, slots=True)
class CircuitConfig:
    """How one circuit decides; every value is checked on construction."""

    window_type: str = DEFAULT_WINDOW_TYPE
    window_size: int = DEFAULT_WINDOW_SIZE
    minimum_calls: int = DEFAULT_MINIMUM_CALLS
    failure_rate_threshold: float = DEFAULT_FAILURE_RATE_THRESHOLD
    slow_call_duration: float | None = DEFAULT_SLOW_CALL_DURATION
    slow_call_rate_threshold: float = DEFAULT_SLOW_CALL_RATE_THRESHOLD
    wait_duration: float = DEFAULT_WAIT_DURATION
    backoff_multiplier: float = DEFAULT_BACKOFF_MULTIPLIER
    max_wait_duration: float = DEFAULT_MAX_WAIT_DURATION
    half_open_max_calls: int = DEFAULT_HALF_OPEN_MAX_CALLS
    trial_mode: str = DEFAULT_TRIAL_MODE
    trial_lease: float = DEFAULT_TRIAL_LEASE

    def __post_init__(self) -> None:
        errors = validate_fields({f.name: getattr(self, f.name) for f in fields(self)})
        if errors:
            name, message = next(iter(errors.items()))
            raise ConfigError(name, message)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> CircuitConfig:
        """Build a config from a dict, ignoring keys that are not decision settings."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def wait_for(self, open_count: int) -> float:
        """Seconds to stay open for the ``open_count``-th consecutive open (1-based).

        ``wait_duration × backoff_multiplier^(open_count−1)``, capped at ``max_wait_duration``.
        """
        exponent = max(0, open_count - 1)
        try:
            wait = self.wait_duration * float(self.backoff_multiplier) ** exponent
        except OverflowError:
            return self.max_wait_duration if self.wait_duration else 0.0
        return min(wait, self.max_wait_duration)

    def is_slow(self, duration: float) -> bool:
        """True when a call of ``duration`` seconds counts as slow."""
        return self.slow_call_duration is not None and duration >= self.slow_call_duration
