"""Celery is the ``[celery]`` extra: without it the app works and imports nothing from it.

Each case runs ``tests/without_celery.py`` in a fresh interpreter (this process imported
Celery long ago), which migrates, trips a breaker, gets a 503 from the middleware, trips a
``CircuitSession``, opens the admin pages, runs an admin action and ``circuits list``, then
reports. ``installed``: Celery is importable, and must stay unimported. ``hidden``: Celery
behaves as if it was not installed (``sys.modules["celery"] = None``); what needs it says
how to install it. nox's ``no_celery`` session runs this file in a virtualenv without Celery
(``CB_EXPECT_NO_CELERY=1``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from circuitbreaker_app.extras import install_hint

ROOT = Path(__file__).resolve().parent.parent
HINT = install_hint("celery")


def run(folder: Path, *args: str) -> dict:
    completed = subprocess.run(
        [sys.executable, "-m", "tests.without_celery", str(folder), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict:
    return run(tmp_path_factory.mktemp("installed"))


@pytest.fixture(scope="module")
def hidden(tmp_path_factory) -> dict:
    return run(tmp_path_factory.mktemp("hidden"), "--hide-celery")


@pytest.fixture(params=["installed", "hidden"])
def report(request) -> dict:
    return request.getfixturevalue(request.param)


def test_the_session_really_lacks_celery():
    """Guards the no_celery nox session: it must not have Celery installed by accident."""
    expected_missing = os.environ.get("CB_EXPECT_NO_CELERY") == "1"
    assert (importlib.util.find_spec("celery") is None) == expected_missing


def test_breakers_middleware_http_admin_and_command_work(report):
    assert report["breaker"] == "CircuitOpenError"
    assert report["middleware_status"] == 503
    assert report["http"] == {"results": [500, 500, "CircuitOpenError"], "hits": 2}
    assert report["admin"] == {
        "changelist": 200,
        "dashboard": 200,
        "change": 200,
        "force_closed": 302,
        "state": "forced_closed",
    }
    assert report["command_list"] is True


def test_nothing_imports_celery(report):
    assert report["celery_imported"] == []


def test_no_probe_warning_when_no_probe_is_asked_for(report):
    assert report["checks"] == []


def test_probe_interval_without_celery_is_a_warning(report):
    expected = [] if report["celery_installed"] else ["circuitbreaker_app.W030"]
    assert report["checks_with_probe_interval"] == expected


def test_what_needs_celery_says_how_to_install_it(hidden):
    assert not hidden["celery_installed"]
    assert HINT in hidden["command_probe"]
    assert any(HINT in message for message in hidden["admin_probe"])
    for module in ("circuitbreaker_app.tasks", "circuitbreaker_app.celery"):
        assert hidden[module].startswith(f"{module} needs Celery, which is not installed.")
        assert HINT in hidden[module]
