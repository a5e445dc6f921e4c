"""CircuitConfig validation, validate_fields, check_name and the backoff of wait_for."""

from __future__ import annotations

import dataclasses
import math

import pytest

from circuitbreaker_app.core.config import (
    MAX_HALF_OPEN_CALLS,
    MAX_SECONDS,
    MAX_WINDOW_SIZE,
    CircuitConfig,
    ConfigError,
    check_name,
    validate_fields,
)

NAN = float("nan")
INF = float("inf")
HUGE = 10**30  # an int that still fits in a float

INTEGER_FIELDS = {
    "window_size": MAX_WINDOW_SIZE,
    "minimum_calls": MAX_WINDOW_SIZE,
    "half_open_max_calls": MAX_HALF_OPEN_CALLS,
}
SECONDS_FIELDS = {
    # field: zero allowed?
    "slow_call_duration": False,
    "wait_duration": True,
    "max_wait_duration": True,
    "trial_lease": False,
}
PERCENT_FIELDS = ("failure_rate_threshold", "slow_call_rate_threshold")


def _bad_values() -> list[tuple[str, object]]:
    cases: list[tuple[str, object]] = []
    for name, high in INTEGER_FIELDS.items():
        for value in (-1, 0, high + 1, HUGE, NAN, INF, True, False, "10", 1.5, 2.0, None):
            cases.append((name, value))
    for name, zero_ok in SECONDS_FIELDS.items():
        for value in (-1, -0.5, NAN, INF, -INF, True, "1", MAX_SECONDS + 1, HUGE):
            cases.append((name, value))
        if not zero_ok:
            cases += [(name, 0), (name, 0.0)]
    for name in PERCENT_FIELDS:
        for value in (0, 0.0, -1, 100.0001, 101, NAN, INF, True, "50", HUGE, None):
            cases.append((name, value))
    for value in (0, 0.5, 0.999, -1, 100.5, NAN, INF, True, "2", HUGE, None):
        cases.append(("backoff_multiplier", value))
    for value in ("sliding", "", "COUNT", None, 1):
        cases.append(("window_type", value))
    for value in ("dry", "", "LIVE", None, True):
        cases.append(("trial_mode", value))
    return cases


BAD_VALUES = _bad_values()


def _case_id(case: tuple[str, object]) -> str:
    name, value = case
    return f"{name}={value!r}"[:40]


@pytest.mark.parametrize("case", BAD_VALUES, ids=[_case_id(c) for c in BAD_VALUES])
def test_invalid_value_is_rejected_naming_field_and_value(case: tuple[str, object]) -> None:
    name, value = case
    errors = validate_fields({name: value})
    assert list(errors) == [name]
    assert errors[name].startswith(name)
    assert repr(value) in errors[name]

    with pytest.raises(ConfigError) as info:
        CircuitConfig(**{name: value})  # type: ignore[arg-type]
    assert info.value.field == name
    assert str(info.value) == errors[name]
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "name",
    ["failure_rate_threshold", "backoff_multiplier", "wait_duration", "slow_call_duration"],
)
def test_int_too_large_for_a_float_gives_a_message_not_overflow(name: str) -> None:
    # 10**400 does not fit in a float: math.isfinite() on it raises OverflowError.
    errors = validate_fields({name: 10**400})
    assert list(errors) == [name]
    assert errors[name].startswith(name)
    with pytest.raises(ConfigError):
        CircuitConfig(**{name: 10**400})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("window_size", 1),
        ("window_size", MAX_WINDOW_SIZE),
        ("minimum_calls", 1),
        ("half_open_max_calls", 1),
        ("half_open_max_calls", MAX_HALF_OPEN_CALLS),
        ("slow_call_duration", None),
        ("slow_call_duration", 0.001),
        ("slow_call_duration", 2),
        ("slow_call_duration", MAX_SECONDS),
        ("wait_duration", 0),
        ("wait_duration", 0.5),
        ("max_wait_duration", 600),
        ("max_wait_duration", MAX_SECONDS),
        ("trial_lease", 0.001),
        ("trial_lease", MAX_SECONDS),
        ("failure_rate_threshold", 0.0001),
        ("failure_rate_threshold", 100),
        ("failure_rate_threshold", 100.0),
        ("slow_call_rate_threshold", 100),
        ("backoff_multiplier", 1),
        ("backoff_multiplier", 1.0),
        ("backoff_multiplier", 100),
        ("window_type", "count"),
        ("window_type", "time"),
        ("trial_mode", "live"),
        ("trial_mode", "probe"),
    ],
)
def test_valid_value_is_accepted(name: str, value: object) -> None:
    values = {name: value}
    if name == "window_size":
        values["minimum_calls"] = 1  # a count window must be able to reach minimum_calls
    if name == "wait_duration":
        values["max_wait_duration"] = value
    assert validate_fields(values) == {}
    config = CircuitConfig(**values)  # type: ignore[arg-type]
    assert getattr(config, name) == value


def test_threshold_boundaries() -> None:
    assert "failure_rate_threshold" in validate_fields({"failure_rate_threshold": 0})
    assert validate_fields({"failure_rate_threshold": 100}) == {}
    assert "failure_rate_threshold" in validate_fields({"failure_rate_threshold": 100.0001})
    assert "slow_call_rate_threshold" in validate_fields({"slow_call_rate_threshold": 0})
    assert validate_fields({"slow_call_rate_threshold": 100}) == {}
    assert "slow_call_rate_threshold" in validate_fields({"slow_call_rate_threshold": 100.0001})
    message = validate_fields({"failure_rate_threshold": 0})["failure_rate_threshold"]
    assert "greater than 0" in message and "at most 100" in message


def test_defaults_are_valid() -> None:
    config = CircuitConfig()
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    assert validate_fields(values) == {}
    assert config.window_type == "count"
    assert config.trial_mode == "live"
    assert config.slow_call_duration is None


def test_config_is_frozen() -> None:
    config = CircuitConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.window_size = 5  # type: ignore[misc]


def test_minimum_calls_above_count_window_size_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        CircuitConfig(window_type="count", window_size=5, minimum_calls=6)
    assert info.value.field == "minimum_calls"
    assert "minimum_calls (6)" in str(info.value)
    assert "window_size (5)" in str(info.value)
    # Equal is fine: the window can be full.
    assert CircuitConfig(window_type="count", window_size=5, minimum_calls=5).minimum_calls == 5


def test_minimum_calls_above_window_size_is_allowed_for_time_windows() -> None:
    # A 10-second window can hold any number of calls.
    config = CircuitConfig(window_type="time", window_size=10, minimum_calls=50)
    assert config.minimum_calls == 50


def test_cross_field_rule_uses_defaults_for_missing_fields() -> None:
    errors = validate_fields({"minimum_calls": 21})  # default count window of 20
    assert list(errors) == ["minimum_calls"]
    assert validate_fields({"minimum_calls": 21, "window_type": "time"}) == {}


def test_cross_field_rule_is_skipped_when_a_field_is_itself_invalid() -> None:
    errors = validate_fields({"window_size": 0, "minimum_calls": 5})
    assert list(errors) == ["window_size"]
    errors = validate_fields({"window_size": 5, "minimum_calls": 0})
    assert list(errors) == ["minimum_calls"]
    assert "between 1 and" in errors["minimum_calls"]


def test_max_wait_duration_below_wait_duration_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        CircuitConfig(wait_duration=60, max_wait_duration=30)
    assert info.value.field == "max_wait_duration"
    assert "max_wait_duration (30)" in str(info.value)
    assert "wait_duration (60)" in str(info.value)
    assert CircuitConfig(wait_duration=60, max_wait_duration=60).max_wait_duration == 60
    # Against the default wait_duration (30 s) too.
    assert list(validate_fields({"max_wait_duration": 10})) == ["max_wait_duration"]


def test_validate_fields_returns_every_field_error_and_flags_unknown_keys() -> None:
    errors = validate_fields(
        {
            "window_size": 0,
            "failure_rate_threshold": 0,
            "trial_mode": "dry",
            "backoff_multiplier": 0.5,
            "wait_duration": -1,
            "windowsize": 10,
            "probe_url": "http://x",
        }
    )
    assert set(errors) == {
        "window_size",
        "failure_rate_threshold",
        "trial_mode",
        "backoff_multiplier",
        "wait_duration",
        "windowsize",
        "probe_url",
    }
    assert "windowsize is not a circuit setting" in errors["windowsize"]
    assert "window_size" in errors["windowsize"]  # lists the known settings
    assert "probe_url is not a circuit setting" in errors["probe_url"]


def test_validate_fields_of_nothing_is_empty() -> None:
    assert validate_fields({}) == {}


def test_from_mapping_ignores_keys_that_are_not_decision_settings() -> None:
    config = CircuitConfig.from_mapping(
        {"window_size": 7, "minimum_calls": 3, "probe_url": "http://x", "description": "d"}
    )
    assert (config.window_size, config.minimum_calls) == (7, 3)
    with pytest.raises(ConfigError) as info:
        CircuitConfig.from_mapping({"window_size": -3})
    assert info.value.field == "window_size"


@pytest.mark.parametrize(
    "name",
    [
        "payments",
        "a",
        "x" * 100,
        "http:api.example.com",
        "svc.v2_eu-west:443",
        "A-Z_a-z.0-9:",
        "...",
    ],
)
def test_check_name_accepts_letters_digits_and_dot_underscore_colon_dash(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a b",
        " payments",
        "payments\n",
        "caf\u00e9",
        "\u00e9",
        "\u0661",  # ARABIC-INDIC DIGIT ONE: a digit, but not ASCII
        "a'; DROP TABLE circuits; --",
        "a/b",
        "a%20b",
        "<script>",
        "x" * 101,
    ],
)
def test_check_name_rejects_other_characters_and_lengths(name: str) -> None:
    with pytest.raises(ValueError) as info:
        check_name(name)
    assert repr(name) in str(info.value)
    assert "1 to 100" in str(info.value)


@pytest.mark.parametrize("name", [None, 1, b"payments", ["payments"]])
def test_check_name_rejects_non_strings_with_type_error(name: object) -> None:
    with pytest.raises(TypeError) as info:
        check_name(name)
    assert repr(name) in str(info.value)


def test_wait_for_first_open_is_wait_duration_then_multiplied_then_capped() -> None:
    config = CircuitConfig(wait_duration=10, backoff_multiplier=2, max_wait_duration=100)
    assert [config.wait_for(n) for n in range(1, 8)] == [10, 20, 40, 80, 100, 100, 100]
    assert config.wait_for(0) == 10  # not yet opened: treated as the first open


def test_wait_for_with_fractional_multiplier() -> None:
    config = CircuitConfig(wait_duration=4, backoff_multiplier=1.5, max_wait_duration=10)
    assert config.wait_for(1) == 4
    assert config.wait_for(2) == pytest.approx(6)
    assert config.wait_for(3) == pytest.approx(9)
    assert config.wait_for(4) == 10


def test_wait_for_multiplier_one_never_grows() -> None:
    config = CircuitConfig(wait_duration=30, backoff_multiplier=1, max_wait_duration=600)
    assert config.wait_for(1) == config.wait_for(10**9) == 30


@pytest.mark.parametrize(
    "open_count", [1_100, 10**6, 2**63, 10**400], ids=["1e3", "1e6", "2^63", "1e400"]
)
@pytest.mark.parametrize("multiplier", [100, 100.0, 3])
def test_wait_for_huge_open_count_does_not_overflow(open_count: int, multiplier: float) -> None:
    config = CircuitConfig(wait_duration=30, backoff_multiplier=multiplier, max_wait_duration=3600)
    wait = config.wait_for(open_count)
    assert wait == 3600
    assert math.isfinite(wait)


def test_wait_for_with_integer_settings_computes_in_floats() -> None:
    # An int multiplier must not turn the power into a big-int computation: 3 ** (10**7)
    # alone takes seconds, on every open.
    config = CircuitConfig(wait_duration=30, backoff_multiplier=2, max_wait_duration=600)
    assert config.wait_for(3) == 120
    assert type(config.wait_for(3)) is float


def test_wait_for_zero_wait_stays_zero_however_many_opens() -> None:
    # 0 × multiplier^(n-1) is 0 for every n: min(0, max_wait_duration) = 0.
    config = CircuitConfig(wait_duration=0, backoff_multiplier=2, max_wait_duration=600)
    assert config.wait_for(1) == 0
    assert config.wait_for(50) == 0
    assert config.wait_for(5_000) == 0  # 2.0 ** 4999 overflows a float


def test_is_slow() -> None:
    assert not CircuitConfig().is_slow(10**6)  # slow-call detection off by default
    config = CircuitConfig(slow_call_duration=2.0)
    assert config.is_slow(2.0)  # at the duration counts as slow
    assert config.is_slow(2.5)
    assert not config.is_slow(1.999)
