"""System checks for the CIRCUITBREAKER setting: each problem has its own id."""

from __future__ import annotations

import pytest

from circuitbreaker_app import checks
from circuitbreaker_app.checks import check_settings
from circuitbreaker_app.checks import probes as probe_checks
from circuitbreaker_app.models import Circuit


def ids(settings, value, **extra) -> list[str]:
    settings.CIRCUITBREAKER = value
    for name, setting in extra.items():
        setattr(settings, name, setting)
    return [message.id for message in check_settings()]


def test_valid_and_empty_settings_pass(settings):
    assert ids(settings, {}) == []
    assert ids(settings, {"STATE_TTL": 0.5, "CIRCUITS": {"payments": {"window_size": 10}}}) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], "circuitbreaker_app.E001"),
        ({"STATE_TTLL": 1}, "circuitbreaker_app.E002"),
        ({"STATE_TTL": -1}, "circuitbreaker_app.E003"),
        ({"STATE_TTL": float("nan")}, "circuitbreaker_app.E003"),
        ({"PROBE_INTERVAL": 0}, "circuitbreaker_app.E004"),
        ({"MAX_CIRCUITS": 0}, "circuitbreaker_app.E005"),
        ({"MAX_CIRCUITS": "many"}, "circuitbreaker_app.E005"),
        ({"CACHE": "nope"}, "circuitbreaker_app.E006"),
        ({"DATABASE": "nope"}, "circuitbreaker_app.E007"),
        ({"DEFAULTS": {"failure_rate_threshold": 0}}, "circuitbreaker_app.E008"),
        ({"DEFAULTS": {"threshold": 50}}, "circuitbreaker_app.E008"),
        ({"CIRCUITS": {"bad name": {}}}, "circuitbreaker_app.E009"),
        ({"CIRCUITS": {"payments": {"failure_rate_threshold": 150}}}, "circuitbreaker_app.E009"),
        ({"CIRCUITS": {"payments": {"window_size": -3}}}, "circuitbreaker_app.E009"),
        ({"CIRCUITS": ["payments"]}, "circuitbreaker_app.E009"),
        ({"AUTO_CREATE": "yes"}, "circuitbreaker_app.E010"),
        ({"PROBE_HOSTS": "status.example.com"}, "circuitbreaker_app.E040"),
        ({"PROBE_HOSTS": ["ok.example", ""]}, "circuitbreaker_app.E040"),
        ({"PROBE_HOSTS": [" ok.example"]}, "circuitbreaker_app.E040"),
        ({"PROBE_HOSTS": [None]}, "circuitbreaker_app.E040"),
        ({"DB_TIMEOUT": 0}, "circuitbreaker_app.E041"),
        ({"DB_TIMEOUT": "0.5"}, "circuitbreaker_app.E041"),
        ({"DB_TIMEOUT": 600}, "circuitbreaker_app.E041"),
        (
            {"CIRCUITS": {"p": {"probe_url": "http://169.254.169.254/latest/"}}},
            "circuitbreaker_app.E009",
        ),
    ],
)
def test_invalid_values_are_errors_with_ids(settings, value, expected):
    assert expected in ids(settings, value)


def test_messages_name_the_key_and_the_value(settings):
    settings.CIRCUITBREAKER = {"CIRCUITS": {"payments": {"failure_rate_threshold": 150}}}
    (message,) = check_settings()
    assert "payments" in message.msg and "150" in message.msg


def test_a_dummy_cache_cannot_share_state(settings):
    caches = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    assert ids(settings, {}, CACHES=caches) == ["circuitbreaker_app.E011"]


def test_locmem_with_celery_is_a_warning(settings):
    caches = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    found = ids(settings, {}, CACHES=caches, CELERY_BROKER_URL="redis://127.0.0.1:6379/0")
    assert found == ["circuitbreaker_app.W001"]


def test_atomic_requests_is_a_warning(settings, monkeypatch):
    monkeypatch.setitem(settings.DATABASES["default"], "ATOMIC_REQUESTS", True)
    assert ids(settings, {}) == ["circuitbreaker_app.W002"]


@pytest.mark.parametrize(
    "token", ["a-long-enough-random-token-value\n", " a-long-enough-random-token"]
)
def test_a_status_token_with_surrounding_whitespace_is_an_error(settings, token):
    assert "circuitbreaker_app.E015" in ids(settings, {"STATUS_TOKEN": token})


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_a_database_without_connect_timeout_is_a_warning(settings):
    postgres = {"ENGINE": "django.db.backends.postgresql", "NAME": "x", "HOST": "127.0.0.1"}
    databases = {**settings.DATABASES, "breaker": postgres}
    assert "circuitbreaker_app.W040" in ids(settings, {"DATABASE": "breaker"}, DATABASES=databases)
    mysql = {"ENGINE": "django.db.backends.mysql", "NAME": "x", "OPTIONS": {}}
    databases["breaker"] = mysql
    assert "circuitbreaker_app.W040" in ids(settings, {"DATABASE": "breaker"}, DATABASES=databases)
    databases["breaker"] = {**postgres, "OPTIONS": {"connect_timeout": 2}}
    assert "circuitbreaker_app.W040" not in ids(
        settings, {"DATABASE": "breaker"}, DATABASES=databases
    )
    sqlite = {"ENGINE": "django.db.backends.sqlite3", "NAME": "x.sqlite3"}
    databases["breaker"] = sqlite
    assert "circuitbreaker_app.W040" not in ids(
        settings, {"DATABASE": "breaker"}, DATABASES=databases
    )


# -- W030: probes need Celery (the [celery] extra) -------------------------------------------


@pytest.fixture
def no_celery(monkeypatch):
    monkeypatch.setattr(probe_checks, "celery_installed", lambda: False)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"PROBE_INTERVAL": 10}, "PROBE_INTERVAL"),
        ({"DEFAULTS": {"trial_mode": "probe"}}, "DEFAULTS"),
        ({"CIRCUITS": {"payments": {"probe_url": "https://pay.example/health"}}}, "payments"),
    ],
)
def test_probes_without_celery_are_a_warning(settings, no_celery, value, where):
    settings.CIRCUITBREAKER = value
    (message,) = checks.check_celery()
    assert message.id == "circuitbreaker_app.W030"
    assert where in message.msg
    assert "pip install 'django-circuitbreaker-app[celery]'" in message.hint


def test_no_probe_asked_for_without_celery_is_fine(settings, no_celery):
    settings.CIRCUITBREAKER = {"CIRCUITS": {"payments": {"trial_mode": "live"}}}
    assert checks.check_celery() == []


def test_probes_with_celery_installed_are_fine(settings, monkeypatch):
    monkeypatch.setattr(probe_checks, "celery_installed", lambda: True)
    settings.CIRCUITBREAKER = {"PROBE_INTERVAL": 10, "DEFAULTS": {"trial_mode": "probe"}}
    assert checks.check_celery() == []


@pytest.mark.django_db
def test_probe_circuits_in_the_database_without_celery_are_a_warning(settings, no_celery):
    settings.CIRCUITBREAKER = {}
    Circuit.objects.create(name="inventory")
    Circuit.objects.create(name="payments", trial_mode="probe")
    Circuit.objects.create(name="search", probe_url="https://search.example/health")
    assert checks.check_celery() == []  # without databases=, checks must not query
    (message,) = checks.check_celery(databases=["default"])
    assert message.id == "circuitbreaker_app.W030"
    assert "'payments', 'search'" in message.msg and "inventory" not in message.msg
