"""CIRCUITBREAKER["CIRCUITS"] are created by migrate, and never overwrite admin edits."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from circuitbreaker_app.models import Circuit
from circuitbreaker_app.sync import sync_circuits

pytestmark = pytest.mark.django_db(transaction=True)

CIRCUITS = {
    "payments": {"window_size": 10, "minimum_calls": 5, "wait_duration": 15},
    "inventory": {"window_type": "time", "window_size": 30},
}


def test_migrate_creates_the_circuits_of_the_setting(settings):
    settings.CIRCUITBREAKER = {"DEFAULTS": {"failure_rate_threshold": 40}, "CIRCUITS": CIRCUITS}
    call_command("migrate", verbosity=0)
    payments = Circuit.objects.get(name="payments")
    assert (payments.window_size, payments.wait_duration, payments.failure_rate_threshold) == (
        10,
        15,
        40,
    )
    assert Circuit.objects.get(name="inventory").window_type == "time"


def test_sync_never_overwrites_an_existing_circuit(settings):
    Circuit.objects.create(name="payments", window_size=50, minimum_calls=20)
    settings.CIRCUITBREAKER = {"CIRCUITS": CIRCUITS}
    assert sync_circuits() == ["inventory"]
    assert Circuit.objects.get(name="payments").window_size == 50
    assert sync_circuits() == []


def test_an_invalid_definition_names_the_circuit_and_writes_nothing(settings):
    settings.CIRCUITBREAKER = {"CIRCUITS": {"payments": {"failure_rate_threshold": 0}}}
    with pytest.raises(ValidationError, match="payments"):
        sync_circuits()
    assert not Circuit.objects.exists()
