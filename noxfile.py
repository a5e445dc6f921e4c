"""The supported matrix (DESIGN §7): one nox session per Python × Django combination.

Django 5.2 LTS runs on Python 3.11, 3.12 and 3.13; Django 6.0 and 6.1 on 3.12 and 3.13.
``make test`` (what CI runs) runs the whole suite on the main combination, Python 3.13 +
Django 6.1, in ``.venv``, and then the sessions tagged ``matrix`` (``.ci/matrix``, a few at
once): the fast suite (:data:`FAST`, on SQLite + LocMem) on every other combination, and
the ``no_celery`` session. The main
combination has a session too (``nox -s "tests-3.13(django='6.1')"``), which runs the whole
suite on the default backends.

Interpreters are looked up on ``PATH`` as ``python3.X``; pyenv's versions
(``$PYENV_ROOT/versions/3.X*/bin``) are added to it first, because pyenv's shims only answer
for the versions that are selected. A combination whose interpreter is missing is skipped
with a message locally and fails under CI (``CI=true``, or ``--error-on-missing-interpreters``).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nox

MAIN = ("3.13", "6.1")
#: Django series -> the Pythons it supports (of those this project supports).
SUPPORTED = {"5.2": ("3.11", "3.12", "3.13"), "6.0": ("3.12", "3.13"), "6.1": ("3.12", "3.13")}
#: The fast suite: SQLite + LocMem only, without the tests that need a server (Redis,
#: PostgreSQL) or start processes, browsers, workers, Redis groups or builds. It touches
#: nothing that another session uses, so ``.ci/matrix`` runs several sessions at once.
FAST = (
    "not multiprocess and not browser and not celery and not redis_topology and not packaging"
    " and not redis and not postgres and not services"
)

nox.options.sessions = ["tests", "no_celery"]
nox.options.reuse_existing_virtualenvs = True
# uv makes the virtualenvs in seconds; plain virtualenv + pip where uv is missing. uv never
# downloads an interpreter: a missing one is skipped (locally) or fails (CI), as with pip.
nox.options.default_venv_backend = "uv|virtualenv"
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


def pyenv_root() -> Path | None:
    """pyenv's root folder, or None when pyenv is not installed."""
    root = os.environ.get("PYENV_ROOT")
    if root:
        return Path(root)
    try:
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        default = Path.home() / ".pyenv"
        return default if default.is_dir() else None
    return Path(out.stdout.strip())


def add_pyenv_interpreters() -> None:
    """Put each supported ``python3.X`` that pyenv installed on ``PATH`` (newest patch)."""
    root = pyenv_root()
    if root is None:
        return
    folders = []
    for version in sorted({py for pys in SUPPORTED.values() for py in pys}):
        found = sorted(root.glob(f"versions/{version}.*/bin/python{version}"))
        if found:
            folders.append(str(found[-1].parent))
    os.environ["PATH"] = os.pathsep.join([*folders, os.environ.get("PATH", "")])


add_pyenv_interpreters()


def combinations() -> list:
    params = []
    for django, pythons in SUPPORTED.items():
        for python in pythons:
            main = (python, django) == MAIN
            params.append(nox.param(python, django, tags=["main" if main else "matrix"]))
    return params


def django_pin(series: str) -> str:
    return f"Django=={series}.*"


def sqlite_locmem(session: nox.Session) -> dict[str, str]:
    """The server-less defaults, with this session's own SQLite files."""
    return {
        "CB_DATABASE": "sqlite",
        "CB_CACHE": "locmem",
        "CB_SQLITE_PATH": os.path.join(session.create_tmp(), "db.sqlite3"),
    }


@nox.session
@nox.parametrize(("python", "django"), combinations())
def tests(session: nox.Session, django: str) -> None:
    """The whole suite on the main combination, the fast suite on every other one."""
    session.install("-e", ".[dev]", django_pin(django))
    session.run(
        "python", "-c", "import django, sys; print('Django', django.get_version(), sys.version)"
    )
    marks = [] if (session.python, django) == MAIN else ["-m", FAST]
    session.run("pytest", *marks, *session.posargs, env=sqlite_locmem(session))


@nox.session(python=MAIN[0], tags=["matrix"])
def no_celery(session: nox.Session) -> None:
    """Breakers, admin, command, middleware and HTTP helpers in a virtualenv without Celery
    (and without httpx: its tests skip, and the rest must not need it)."""
    session.install("-e", ".", django_pin(MAIN[1]))
    session.install("pytest", "pytest-django", "pytest-timeout", "hypothesis", "responses")
    session.run(
        "python",
        "-c",
        "import importlib.util as u, sys; sys.exit(u.find_spec('celery') is not None)",
    )
    session.run(
        "pytest",
        "tests/test_without_celery.py",
        "tests/test_checks.py",
        "tests/test_breaker.py",
        "tests/test_middleware.py",
        "tests/test_http.py",
        "tests/test_httpx.py",
        "tests/test_without_httpx.py",
        "tests/test_fallbacks.py",
        *session.posargs,
        env={**sqlite_locmem(session), "CB_EXPECT_NO_CELERY": "1"},
    )
