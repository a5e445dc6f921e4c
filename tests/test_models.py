"""Circuit validation (one message per field) and what saving may and may not change."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from circuitbreaker_app.core import CircuitConfig
from circuitbreaker_app.models import Circuit

pytestmark = pytest.mark.django_db


def errors_of(**fields) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        Circuit(name=fields.pop("name", "payments"), **fields).full_clean()
    return info.value.message_dict


def test_defaults_make_a_valid_circuit():
    circuit = Circuit(name="payments")
    circuit.full_clean()
    assert circuit.config() == CircuitConfig()


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("failure_rate_threshold", 0, "greater than 0 and at most 100"),
        ("failure_rate_threshold", 100.5, "greater than 0 and at most 100"),
        ("slow_call_rate_threshold", -1, "greater than 0 and at most 100"),
        ("window_size", 0, "between 1 and"),
        ("half_open_max_calls", 0, "between 1 and"),
        ("wait_duration", -5, "0 or more"),
        ("backoff_multiplier", 0.5, "from 1 to 100"),
        ("slow_call_duration", 0, "greater than 0"),
        ("trial_lease", float("nan"), "finite number"),
        ("window_type", "sliding", "one of count, time"),
        ("trial_mode", "maybe", "one of live, probe"),
    ],
)
def test_out_of_range_values_get_a_message_on_their_field(field, value, fragment):
    errors = errors_of(**{field: value})
    assert fragment in " ".join(errors[field])


def test_cross_field_rules_point_at_the_right_field():
    errors = errors_of(window_size=5, minimum_calls=10, wait_duration=60, max_wait_duration=30)
    assert "cannot exceed the window_size" in errors["minimum_calls"][0]
    assert "must be at least wait_duration" in errors["max_wait_duration"][0]


def test_a_time_window_may_need_more_calls_than_its_seconds():
    Circuit(name="t", window_type="time", window_size=5, minimum_calls=50).full_clean()


@pytest.mark.parametrize("name", ["has space", "é", "a/b", "x" * 101, "", "a'; DROP TABLE x"])
def test_names_outside_the_allowed_characters_are_rejected(name):
    assert "name" in errors_of(name=name)


@pytest.mark.parametrize("url", ["ftp://example.com/", "javascript:alert(1)", "file:///etc/passwd"])
def test_probe_url_must_be_http(url):
    assert "probe_url" in errors_of(probe_url=url)


def test_a_rejected_definition_writes_nothing():
    with pytest.raises(ValidationError):
        Circuit(name="payments", window_size=-1).full_clean()
    assert not Circuit.objects.exists()


def test_saving_an_existing_circuit_writes_only_the_definition(django_assert_num_queries):
    circuit = Circuit.objects.create(name="payments")
    Circuit.objects.filter(pk=circuit.pk).update(state="open", generation=7, open_count=2)
    circuit.wait_duration = 45
    circuit.save()
    fresh = Circuit.objects.get(pk=circuit.pk)
    assert (fresh.state, fresh.generation, fresh.open_count, fresh.wait_duration) == (
        "open",
        7,
        2,
        45,
    )


def test_str_and_permission():
    assert str(Circuit(name="payments")) == "payments"
    assert ("force_circuit", "Can force circuit state") in Circuit._meta.permissions


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://status.example.com/health", "https://status.example.com/health"),
        (
            "https://u:p@status.example.com/h?token=abc",
            "https://***@status.example.com/h?token=***",
        ),
        ("https://status.example.com/h?SuperSecretApiKey123", "https://status.example.com/h?***"),
        (
            "https://status.example.com/h?a=1&SuperSecretApiKey123",
            "https://status.example.com/h?a=***&***",
        ),
        ("https://status.example.com/h#k3y", "https://status.example.com/h#***"),
    ],
)
def test_mask_url_masks_credentials_values_and_bare_tokens(url, shown):
    from circuitbreaker_app.models import mask_url

    assert mask_url(url) == shown
