"""The package's layout rules (DESIGN §5, the developers' guide), read from the source.

- ``core/`` imports nothing from Django or any other I/O library, nor from the rest of the
  package (which imports Django): the state machine runs and is tested without Django.
- No ``isinstance``/``issubclass`` on a counter or cache backend class outside the
  backend factory (``store/backends/__init__.py``), in the package or in the tests: one
  contract, and code that needs to know which backend runs asks the factory.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "circuitbreaker_app"
CORE = PACKAGE / "core"
BACKENDS = PACKAGE / "store" / "backends"
#: The one place that may tell backends apart: the factory.
FACTORY = BACKENDS / "__init__.py"

#: Top-level modules ``core/`` must not import (Django, services, clients).
NOT_IN_CORE = {
    "django",
    "celery",
    "kombu",
    "requests",
    "httpx",
    "redis",
    "psycopg",
    "prometheus_client",
}
#: Django's cache backends: branching on them is branching on the backend too.
DJANGO_CACHE_BACKENDS = {
    "DatabaseCache",
    "DummyCache",
    "FileBasedCache",
    "LocMemCache",
    "PyLibMCCache",
    "PyMemcacheCache",
    "RedisCache",
}


def package_modules() -> list[Path]:
    """Every module of the package except its migrations."""
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.relative_to(PACKAGE).parts
    )


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def imported_modules(tree: ast.AST, path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``, at any depth."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                if node.module:
                    yield node.lineno, f"{base}.{node.module}"
                else:  # from .. import models
                    for alias in node.names:
                        yield node.lineno, f"{base}.{alias.name}"
            else:
                yield node.lineno, node.module or ""


def core_import_offences() -> list[str]:
    offences = []
    for path in sorted(CORE.rglob("*.py")):
        for line, module in imported_modules(ast.parse(path.read_text()), path):
            top = module.split(".")[0]
            outside_core = top == "circuitbreaker_app" and not (
                module == "circuitbreaker_app.core" or module.startswith("circuitbreaker_app.core.")
            )
            if top in NOT_IN_CORE or outside_core:
                offences.append(f"{name(path)}:{line} imports {module}")
    return offences


def test_core_imports_nothing_from_django_services_or_the_rest_of_the_package():
    offences = core_import_offences()
    assert not offences, "core/ must stay free of Django and I/O:\n" + "\n".join(offences)


def test_the_import_reader_sees_imports_at_any_depth():
    """The reader the rule above relies on finds absolute, relative and local imports."""
    module = PACKAGE / "core" / "example.py"
    tree = ast.parse(
        "import django.conf\n"
        "from .. import models\n"
        "def f():\n"
        "    from django.db import connection\n"
    )
    found = {module_name for _line, module_name in imported_modules(tree, module)}
    assert found == {"django.conf", "circuitbreaker_app.models", "django.db"}


def backend_classes() -> set[str]:
    """Names of the classes the backend modules define (exceptions aside), and Django's
    cache backends."""
    names = set(DJANGO_CACHE_BACKENDS)
    for path in BACKENDS.glob("*.py"):
        if path.name in {"__init__.py", "base.py"}:
            continue  # the factory and the contract
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not any(
                ast.unparse(base).endswith(("Error", "Exception")) for base in node.bases
            ):
                names.add(node.name)
    return names


def type_checks_on(tree: ast.AST, classes: set[str]) -> Iterator[tuple[int, str]]:
    """(line, class) of every ``isinstance``/``issubclass`` against one of ``classes``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"isinstance", "issubclass"}
            and len(node.args) == 2
        ):
            checked = node.args[1]
            candidates = checked.elts if isinstance(checked, ast.Tuple) else [checked]
            for candidate in candidates:
                text = ast.unparse(candidate).rsplit(".", 1)[-1]
                if text in classes:
                    yield node.lineno, text


def test_backend_classes_are_found():
    classes = backend_classes()
    assert {"LocMemCounters", "DatabaseCounters", "RedisCounters", "RedisCache"} <= classes
    assert "RedisUnavailable" not in classes  # an exception, caught by type as it should be


def test_no_isinstance_on_a_backend_outside_the_factory():
    classes = backend_classes()
    files = [*package_modules(), *sorted((ROOT / "tests").rglob("*.py"))]
    offences = [
        f"{name(path)}:{line} checks for {cls}"
        for path in files
        if path != FACTORY
        for line, cls in type_checks_on(ast.parse(path.read_text()), classes)
    ]
    assert not offences, (
        "use the backend contract (or ask the factory, store/backends/__init__.py), "
        "not isinstance:\n" + "\n".join(offences)
    )


def test_the_type_check_reader_sees_tuples_and_dotted_names():
    tree = ast.parse(
        "isinstance(c, (int, redis.RedisCounters))\nissubclass(t, LocMemCounters)\n"
        "isinstance(c, Counters)\n"
    )
    found = list(type_checks_on(tree, {"RedisCounters", "LocMemCounters"}))
    assert found == [(1, "RedisCounters"), (2, "LocMemCounters")]


#: No module of the package is longer than this (lines, as ``wc -l`` counts them).
MAX_MODULE_LINES = 400


def test_no_module_of_the_package_is_over_400_lines():
    """Small modules with one job (the developers' guide): split by concern before a module
    grows past this. Migrations are generated and exempt."""
    sizes = {name(path): len(path.read_text().splitlines()) for path in package_modules()}
    assert len(sizes) > 50  # the reader sees the package
    over = sorted((lines, module) for module, lines in sizes.items() if lines > MAX_MODULE_LINES)
    assert not over, f"modules over {MAX_MODULE_LINES} lines: " + ", ".join(
        f"{module} ({lines})" for lines, module in reversed(over)
    )
