"""The core is pure Python: importing it must not import Django or any I/O library."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "circuitbreaker_app" / "core"
FORBIDDEN = ("django", "celery", "requests", "redis")

# ``import circuitbreaker_app.core`` would run circuitbreaker_app/__init__.py, which imports
# Django; so stand in an empty ``circuitbreaker_app`` package and load only ``core``.
LOADER = f"""
import importlib.util, sys, types
root = {str(REPO)!r}
sys.path.insert(0, root)
package = types.ModuleType("circuitbreaker_app")
package.__path__ = [root + "/circuitbreaker_app"]
sys.modules["circuitbreaker_app"] = package
spec = importlib.util.spec_from_file_location(
    "circuitbreaker_app.core",
    root + "/circuitbreaker_app/core/__init__.py",
    submodule_search_locations=[root + "/circuitbreaker_app/core"],
)
core = importlib.util.module_from_spec(spec)
sys.modules["circuitbreaker_app.core"] = core
spec.loader.exec_module(core)
for name in core.__all__:
    getattr(core, name)
import circuitbreaker_app.core.states, circuitbreaker_app.core.windows
assert core.__file__.startswith(root), core.__file__
core.evaluate(core.Snapshot(3, 2), core.CircuitConfig())
core.behaviour_for(core.State.OPEN)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {FORBIDDEN!r})
print(bad)
sys.exit(1 if bad else 0)
"""


def test_importing_the_core_imports_no_django_celery_requests_or_redis() -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOADER],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"


def test_core_sources_do_not_import_django_or_io_libraries() -> None:
    pattern = re.compile(rf"^\s*(import|from)\s+({'|'.join(FORBIDDEN)})\b", re.MULTILINE)
    sources = sorted(CORE.glob("*.py"))
    assert {p.name for p in sources} >= {
        "clock.py",
        "config.py",
        "errors.py",
        "states.py",
        "windows.py",
    }
    offenders = {
        f"{p.name}: {m.group(0).strip()}"
        for p in sources
        for m in pattern.finditer(p.read_text(encoding="utf-8"))
    }
    assert offenders == set()
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert "import django" not in text and "from django" not in text, path.name
