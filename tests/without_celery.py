"""Use the app the way a project without Celery does, in a fresh interpreter; print a report.

Run by ``tests/test_without_celery.py`` as ``python -m tests.without_celery <folder>
[--hide-celery]`` in the test virtualenv (Celery installed: nothing may import it; hidden:
everything must still work), and in nox's ``no_celery`` session (Celery not installed). A
fresh interpreter, because the test process itself has long imported Celery. The report
(JSON on stdout) says what worked and whether ``celery`` ended up in ``sys.modules``.

Settings are the smallest project that has the admin, the middleware and one circuit: SQLite
in ``<folder>``, the per-process cache, no ``CELERY_*`` setting.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import django
from django.conf import settings

TRIP = {
    "window_type": "count",
    "window_size": 2,
    "minimum_calls": 2,
    "failure_rate_threshold": 100,
    "wait_duration": 60,
}


def configure(folder: Path) -> None:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="without-celery-test-only",
        ALLOWED_HOSTS=["testserver"],
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        INSTALLED_APPS=[
            "django.contrib.admin",
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
            "django.contrib.staticfiles",
            "circuitbreaker_app",
        ],
        MIDDLEWARE=[
            "django.contrib.sessions.middleware.SessionMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.csrf.CsrfViewMiddleware",
            "django.contrib.auth.middleware.AuthenticationMiddleware",
            "django.contrib.messages.middleware.MessageMiddleware",
            "circuitbreaker_app.middleware.CircuitBreakerMiddleware",
        ],
        ROOT_URLCONF=__name__,
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "APP_DIRS": True,
                "OPTIONS": {
                    "context_processors": [
                        "django.template.context_processors.request",
                        "django.contrib.auth.context_processors.auth",
                        "django.contrib.messages.context_processors.messages",
                    ]
                },
            }
        ],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(folder / "db.sqlite3")}
        },
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        STATIC_URL="/static/",
        CIRCUITBREAKER={"CIRCUITS": {"payments": TRIP}},
    )


def pay(request: Any) -> Any:
    """A view whose circuit is open: the middleware turns the rejection into a 503."""
    from django.http import HttpResponse

    from circuitbreaker_app import breaker

    breaker("payments").call(lambda: None)
    return HttpResponse("paid")


urlpatterns: list[Any] = []  # filled in by main(), once Django is set up


def check_ids(**kwargs: Any) -> list[str]:
    from django.core import checks

    return sorted(m.id for m in checks.run_checks(**kwargs) if m.id.startswith("circuitbreaker"))


def main(folder: Path) -> dict[str, Any]:
    configure(folder)
    django.setup()
    from django.contrib import admin
    from django.contrib.auth.models import User
    from django.core.management import CommandError, call_command
    from django.test import Client
    from django.test.utils import override_settings, setup_test_environment
    from django.urls import path

    from circuitbreaker_app import CircuitOpenError, breaker
    from circuitbreaker_app.http import CircuitSession
    from tests.loopback import loopback_server

    urlpatterns[:] = [path("admin/", admin.site.urls), path("pay/", pay)]
    setup_test_environment()
    report: dict[str, Any] = {"celery_installed": _celery_installed()}

    call_command("migrate", verbosity=0)
    report["checks"] = check_ids(databases=["default"])
    with override_settings(CIRCUITBREAKER={"PROBE_INTERVAL": 10}):
        report["checks_with_probe_interval"] = check_ids()

    # A breaker trips and rejects.
    def fail() -> None:
        raise ConnectionError("upstream down")

    for _ in range(2):
        try:
            breaker("payments").call(fail)
        except ConnectionError:
            pass
    try:
        breaker("payments").call(lambda: "called")
    except CircuitOpenError:
        report["breaker"] = "CircuitOpenError"
    else:
        report["breaker"] = "called"

    # The middleware answers 503 for the open circuit.
    report["middleware_status"] = Client().get("/pay/").status_code

    # The HTTP helper: two 500s trip the per-host circuit, the third request never leaves.
    with override_settings(CIRCUITBREAKER={"DEFAULTS": TRIP}), loopback_server() as server:
        server.mode = "fail"
        session = CircuitSession(timeout=5)
        statuses: list[Any] = [session.get(server.url).status_code for _ in range(2)]
        try:
            session.get(server.url)
        except CircuitOpenError:
            statuses.append("CircuitOpenError")
        report["http"] = {"results": statuses, "hits": server.hits}

    # The admin: change list, change form, dashboard.
    user = User.objects.create_superuser("admin", "admin@example.com", "admin")
    client = Client()
    client.force_login(user)
    pages = {
        "changelist": "/admin/circuitbreaker_app/circuit/",
        "dashboard": "/admin/circuitbreaker_app/circuit/dashboard/",
        "change": f"/admin/circuitbreaker_app/circuit/{_circuit_pk('payments')}/change/",
    }
    report["admin"] = {name: client.get(url).status_code for name, url in pages.items()}
    forced = client.post(
        pages["changelist"],
        {"action": "force_closed", "_selected_action": [_circuit_pk("payments")], "confirmed": "1"},
    )
    report["admin"]["force_closed"] = forced.status_code
    report["admin"]["state"] = _circuit_state("payments")

    # The command.
    out = io.StringIO()
    call_command("circuits", "list", stdout=out)
    report["command_list"] = "payments" in out.getvalue()

    report["celery_imported"] = sorted(
        name
        for name, module in sys.modules.items()
        if module is not None and (name == "celery" or name.startswith("celery."))
    )

    if not report["celery_installed"]:
        # What needs Celery says so, in the command, the admin and on import.
        try:
            call_command("circuits", "probe", "payments", stdout=io.StringIO())
        except CommandError as exc:
            report["command_probe"] = str(exc)
        response = client.post(
            pages["changelist"],
            {
                "action": "probe_now",
                "_selected_action": [_circuit_pk("payments")],
                "confirmed": "1",
            },
            follow=True,
        )
        report["admin_probe"] = [str(m) for m in response.context["messages"]]
        for module in ("circuitbreaker_app.tasks", "circuitbreaker_app.celery"):
            try:
                __import__(module)
            except ImportError as exc:
                report[module] = str(exc)
    return report


def _circuit_pk(name: str) -> int:
    from circuitbreaker_app.models import Circuit

    return Circuit.objects.get(name=name).pk


def _circuit_state(name: str) -> str:
    from circuitbreaker_app.models import Circuit

    return Circuit.objects.get(name=name).state


def _celery_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("celery") is not None


if __name__ == "__main__":
    if "--hide-celery" in sys.argv:
        # What Python does for a module that is not installed: find_spec() is None, and
        # `import celery` raises ModuleNotFoundError.
        sys.modules["celery"] = None  # type: ignore[assignment]
    print(json.dumps(main(Path(sys.argv[1]))))
