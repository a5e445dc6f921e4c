"""Invalid settings fail when the app loads (DESIGN §4b), not at a guarded call.

runserver runs the system checks, but gunicorn and Celery do not: before, a site with
``STATE_TTL = "abc"`` or a missing ``CACHE`` alias served requests until the first guarded
call raised. Now ``AppConfig.ready()`` raises ``ImproperlyConfigured`` naming the check id.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from circuitbreaker_app.checks import InvalidSettings, validate_settings

ROOT = Path(__file__).resolve().parent.parent

#: The settings of the security review that crashed guarded calls, and their check ids.
BAD = [
    ({"STATE_TTL": "abc"}, "E003"),
    ({"CACHE": "missing"}, "E006"),
    ({"MAX_CIRCUITS": None}, "E005"),
    ({"DEFAULTS": {"window_size": 0}}, "E008"),
    ({"DEFAULTS": {"failure_rate_threshold": "half"}}, "E008"),
    ({"STATUS_TOKEN": "a-long-enough-random-token-value\n"}, "E015"),
]


@pytest.mark.parametrize(("value", "check_id"), BAD)
def test_invalid_settings_raise_improperly_configured_naming_the_check(settings, value, check_id):
    settings.CIRCUITBREAKER = value
    with pytest.raises(InvalidSettings, match=f"circuitbreaker_app.{check_id}"):
        validate_settings()


def test_valid_settings_and_warnings_pass(settings):
    settings.CIRCUITBREAKER = {"STATUS_TOKEN": "short"}  # W003 only
    validate_settings()


def test_silenced_checks_do_not_stop_the_start(settings):
    settings.CIRCUITBREAKER = {"STATE_TTL": "abc"}
    settings.SILENCED_SYSTEM_CHECKS = ["circuitbreaker_app.E003"]
    validate_settings()


@pytest.mark.parametrize(
    "start",
    [
        "import django; django.setup()",  # Celery's Django fix-up, manage.py
        "from django.core.wsgi import get_wsgi_application; get_wsgi_application()",  # gunicorn
    ],
)
def test_a_process_with_invalid_settings_fails_at_start(tmp_path, start):
    (tmp_path / "bad_settings.py").write_text(
        textwrap.dedent(
            """
            from tests.settings import *  # noqa: F403

            CIRCUITBREAKER = {"STATE_TTL": "abc", "CACHE": "missing"}
            """
        )
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bad_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
    }
    result = subprocess.run(
        [sys.executable, "-c", start], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr or "InvalidSettings" in result.stderr
    assert "circuitbreaker_app.E003" in result.stderr
    assert "circuitbreaker_app.E006" in result.stderr
