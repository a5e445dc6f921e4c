"""Without the ``[httpx]`` extra the app works, and nothing but ``circuitbreaker_app.httpx``
needs httpx.

A fresh interpreter is started with an import hook that refuses ``httpx`` (as if it were
not installed); it imports every module of the package, runs breakers, ``CircuitSession``,
the admin and the middleware, and checks that httpx was never asked for on the way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import importlib, json, pkgutil, sys

asked = []
OPTIONAL = {"celery", "kombu", "billiard", "prometheus_client", "redis"}

class NoHttpx:
    def find_spec(self, name, path=None, target=None):
        if name == "httpx" or name.startswith(("httpx.", "httpcore")):
            asked.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoHttpx())

import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)

import circuitbreaker_app
skipped = {"circuitbreaker_app.httpx"}
for module in pkgutil.walk_packages(circuitbreaker_app.__path__, "circuitbreaker_app."):
    if module.name not in skipped and ".migrations." not in module.name:
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError as exc:  # another optional extra missing too (celery)
            if exc.name == "httpx" or not exc.name or exc.name.split(".")[0] not in OPTIONAL:
                raise
after_imports = list(asked)

from circuitbreaker_app import CircuitOpenError, breaker
from circuitbreaker_app.http import CircuitSession
from circuitbreaker_app.middleware import CircuitBreakerMiddleware
import requests

guarded = breaker("payments")
assert guarded.call(lambda: 41 + 1) == 42
session = CircuitSession("partner", timeout=0.5)
try:
    session.get("http://127.0.0.1:9/")  # the discard port: refused
except requests.ConnectionError:
    pass
call_command("circuits", "open", "payments", stdout=open("/dev/null", "w"))
try:
    guarded.call(lambda: 1)
except CircuitOpenError:
    pass

from django.contrib.auth.models import User
from django.test import Client, RequestFactory
User.objects.create_superuser("admin", "a@example.com", "pw")
client = Client()
client.force_login(User.objects.get())
admin_status = client.get("/admin/circuitbreaker_app/circuit/").status_code

middleware = CircuitBreakerMiddleware(lambda request: None)
error = CircuitOpenError("payments", guarded.state, 5.0)
middleware_status = middleware.process_exception(RequestFactory().get("/"), error).status_code

try:
    importlib.import_module("circuitbreaker_app.httpx")
    message = None
except ImportError as exc:
    message = str(exc)

print(json.dumps({
    "after_imports": after_imports,
    "admin": admin_status,
    "middleware": middleware_status,
    "message": message,
    "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("httpx", "httpcore")),
}))
"""


def test_the_app_imports_and_runs_without_httpx(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CB_DATABASE": "sqlite",
        "CB_CACHE": "locmem",
        "CB_SQLITE_PATH": str(tmp_path / "db.sqlite3"),
    }
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["after_imports"] == []  # no module of the app asked for httpx
    assert result["loaded"] == []
    assert (result["admin"], result["middleware"]) == (200, 503)
    assert "pip install 'django-circuitbreaker-app[httpx]'" in result["message"]
