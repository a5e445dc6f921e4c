"""Optional dependencies: whether one is installed, and what to say when it is missing.

Celery is the ``[celery]`` extra: breakers, the admin, the ``circuits`` command, the
middleware and the HTTP helpers work without it, and never import it. Only the probe tasks
(``circuitbreaker_app.tasks``) and the task helpers (``circuitbreaker_app.celery``) need it;
they raise :func:`missing_celery` when it is absent. Nothing here imports Celery.
"""

from __future__ import annotations

import importlib.util

DISTRIBUTION = "django-circuitbreaker-app"


def celery_installed() -> bool:
    """Whether Celery can be imported, found without importing it."""
    return importlib.util.find_spec("celery") is not None


def install_hint(extra: str) -> str:
    """The command that installs an extra: ``pip install 'django-circuitbreaker-app[celery]'``."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def missing_celery(module: str) -> ModuleNotFoundError:
    """The error ``module`` raises when Celery is not installed.

    A ``ModuleNotFoundError`` (an ``ImportError``) naming ``celery``, as Python's own would,
    so code that tolerates missing optional modules by ``exc.name`` tolerates this one too.
    """
    return ModuleNotFoundError(
        f"{module} needs Celery, which is not installed. Install it with "
        f"{install_hint('celery')} (breakers, the admin, the circuits command, the "
        "middleware and the HTTP helpers work without it).",
        name="celery",
    )
