"""Suite-wide pytest wiring: service checks, report header, cache table.

Tests that need a real service carry a marker:

- ``@pytest.mark.redis``: Redis at 127.0.0.1:6379
- ``@pytest.mark.postgres``: PostgreSQL at 127.0.0.1:5432
- ``@pytest.mark.services``: both of them
- ``@pytest.mark.browser``: Debian's ``/usr/bin/chromium`` (driven by Playwright)
- ``@pytest.mark.redis_topology``: Debian's ``redis-server``, ``redis-cli`` and
  ``redis-sentinel``, with which the test starts its own Cluster or Sentinel group
  (``tests/topologies.py``, fixture ``redis_topologies``)

Such a test is skipped when its service is unreachable, unless ``REQUIRE_SERVICES=1`` (CI
sets it): then it fails with a message naming the service. ``require_service()`` does the
same check from inside a test or fixture.

Hypothesis: local runs explore new examples every time (profile ``dev``); CI runs the
profile ``ci`` (chosen when ``CI=true`` or ``HYPOTHESIS_PROFILE=ci``), which derandomizes
the search so a green main stays green and a red one is red again on re-run. A failure
found locally is kept in ``.hypothesis/`` and replayed first; add it as an ``@example``.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket

import pytest
from hypothesis import settings as hypothesis_settings

SERVICES: dict[str, tuple[str, int]] = {
    "redis": ("127.0.0.1", 6379),
    "postgres": ("127.0.0.1", 5432),
}
# Marker -> the services it needs.
MARKER_SERVICES: dict[str, tuple[str, ...]] = {
    "redis": ("redis",),
    "postgres": ("postgres",),
    "services": ("postgres", "redis"),
}
CHROMIUM = "/usr/bin/chromium"

#: Hypothesis profiles; a test's own ``@settings(...)`` still sets its example count.
hypothesis_settings.register_profile("dev")
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)


def hypothesis_profile() -> str:
    """``ci`` under CI (``CI=true``) or when asked for (``HYPOTHESIS_PROFILE``), else ``dev``."""
    chosen = os.environ.get("HYPOTHESIS_PROFILE", "").strip()
    if chosen:
        return chosen
    return "ci" if os.environ.get("CI", "").strip().lower() in ("true", "1") else "dev"


hypothesis_settings.load_profile(hypothesis_profile())


def services_required() -> bool:
    """True when unreachable services must fail tests instead of skipping them."""
    return os.environ.get("REQUIRE_SERVICES", "").strip() == "1"


@functools.cache
def is_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a TCP connection to host:port succeeds (cached per session)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _unavailable(message: str) -> None:
    if services_required():
        pytest.fail(f"{message} and REQUIRE_SERVICES=1", pytrace=False)
    pytest.skip(message)


def require_service(name: str, host: str | None = None, port: int | None = None) -> None:
    """Skip (or, with REQUIRE_SERVICES=1, fail) the running test unless the service answers.

    ``name`` is a label such as ``"redis"``; host and port default to the known address of
    that service.
    """
    default_host, default_port = SERVICES.get(name, ("127.0.0.1", None))
    host = host or default_host
    port = port or default_port
    if port is None:
        raise ValueError(f"require_service({name!r}): no known port, pass port=")
    if not is_reachable(host, port):
        _unavailable(f"{name} is not reachable at {host}:{port}")


def require_chromium() -> None:
    """Skip (or fail under REQUIRE_SERVICES=1) unless Debian's chromium is installed."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        _unavailable(f"chromium is not installed ({CHROMIUM}; apt-get install chromium)")


def require_redis_binaries(*extra: str) -> None:
    """Skip (or fail under REQUIRE_SERVICES=1) unless redis-server, redis-cli and
    ``extra`` are installed."""
    from tests.topologies import binaries_missing

    missing = binaries_missing("redis-server", "redis-cli", *extra)
    if missing:
        packages = "redis-sentinel" if missing == ["redis-sentinel"] else "redis-server"
        _unavailable(f"{', '.join(missing)} not installed (apt-get install {packages})")


def pytest_configure(config: pytest.Config) -> None:
    # The backends chosen with CB_DATABASE / CB_CACHE are needed by every test: say so once,
    # clearly, instead of failing hundreds of tests with connection errors.
    db = os.environ.get("CB_DATABASE", "sqlite").strip().lower()
    cache = os.environ.get("CB_CACHE", "locmem").strip().lower()
    wanted = []
    if db in ("postgres", "postgresql"):
        wanted.append("postgres")
    if cache == "redis":
        wanted.append("redis")
    for name in wanted:
        host, port = SERVICES[name]
        if not is_reachable(host, port):
            raise pytest.UsageError(
                f"CB_DATABASE={db} CB_CACHE={cache} needs {name} at {host}:{port}, "
                "which is not reachable"
            )


def pytest_report_header(config: pytest.Config) -> list[str]:
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        db_text = f"sqlite ({db.get('TEST', {}).get('NAME') or db['NAME']})"
    else:
        db_text = f"{db['ENGINE'].rsplit('.', 1)[-1]} ({db['HOST']}:{db['PORT']}, test db "
        db_text += f"{db.get('TEST', {}).get('NAME') or 'test_' + db['NAME']})"
    cache = settings.CACHES["default"]
    cache_text = f"{cache['BACKEND'].rsplit('.', 1)[-1]} ({cache.get('LOCATION', '')})"
    return [
        f"circuitbreaker: database={db_text}, cache={cache_text}",
        f"circuitbreaker: hypothesis profile={hypothesis_profile()}",
        f"circuitbreaker: REQUIRE_SERVICES={'1' if services_required() else '0'}",
    ]


#: Tests whose result does not depend on CB_DATABASE / CB_CACHE, and why: they get the marker
#: ``backend_independent``, and CI runs them once, on SQLite + LocMem (``make test-services``
#: leaves them out). A module that starts to depend on the suite's database or cache (what a
#: page shows or a guarded call does with it) leaves this list.
BACKEND_INDEPENDENT: dict[str, str] = {
    "tests/core/": "the pure core: no Django, database or cache (tests/core/conftest.py)",
    "tests/test_layout.py": "reads the source",
    "tests/test_docs.py": "reads docs/ and the source",
    "tests/test_text.py": "a pure text function",
    "tests/test_ago.py": "a pure time format",
    "tests/test_buckets.py": "the pure bookkeeping of shared windows",
    "tests/test_packaging.py": "builds the wheel and sdist, installs them in new virtualenvs",
    "tests/test_benchmarks.py": "the benchmarks run on settings and services of their own",
    "tests/test_demo.py": "the demo runs on its embedded defaults, not the suite's settings",
    "tests/test_topologies.py": "the Redis deployments that tests start for themselves",
    # What a browser shows and does (scripts, styles, translations in scripts); the data of
    # the pages and of the status endpoint are tested on both variants (test_admin,
    # test_dashboard, test_views, test_i18n).
    "tests/test_browser.py": "what a browser shows and does",
    "tests/test_i18n_browser.py": "what a browser shows and does, in German",
}


def _backend_independent(item: pytest.Item) -> bool:
    path = item.path.relative_to(item.config.rootpath).as_posix()
    return any(path.startswith(prefix) for prefix in BACKEND_INDEPENDENT)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _backend_independent(item):
            item.add_marker(pytest.mark.backend_independent)
    # pytest-playwright keeps Playwright, and so an asyncio loop that Django sees as running
    # in the main thread, alive from the first browser test to the end of the session; any
    # database test after it would fail with SynchronousOnlyOperation. Browser tests last.
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, needed in MARKER_SERVICES.items():
        if item.get_closest_marker(marker) is not None:
            for name in needed:
                require_service(name)
    if item.get_closest_marker("browser") is not None:
        require_chromium()
    if item.get_closest_marker("redis_topology") is not None:
        require_redis_binaries()


@pytest.fixture(scope="session")
def redis_topologies():
    """``redis_topologies(kind)``: a Redis deployment of ``kind`` (``single``, ``cluster``,
    ``sentinel``) started on first use on spare ports, shared by the session, stopped at
    its end (tests that break one, e.g. by killing a primary, start their own)."""
    from tests import topologies

    started: dict[str, topologies.Topology] = {}

    def get(kind: str) -> topologies.Topology:
        if kind not in started:
            require_redis_binaries(*(("redis-sentinel",) if kind == "sentinel" else ()))
            started[kind] = topologies.start(kind)
        return started[kind]

    try:
        yield get
    finally:
        for topology in started.values():
            topology.stop()


@pytest.fixture(scope="session", autouse=True)
def _cb_cache_table(request: pytest.FixtureRequest) -> None:
    """With CB_CACHE=database, make sure the cache table exists in the test database."""
    from django.conf import settings

    if settings.CACHES["default"]["BACKEND"] != "django.core.cache.backends.db.DatabaseCache":
        return
    from django.core.management import call_command

    request.getfixturevalue("django_db_setup")
    django_db_blocker = request.getfixturevalue("django_db_blocker")
    with django_db_blocker.unblock():
        call_command("createcachetable", verbosity=0)


@pytest.fixture(autouse=True)
def _fresh_breaker_state():
    """Every test starts with empty caches and no per-process snapshots."""
    from django.core.cache import caches

    from circuitbreaker_app.store import reset_store

    def clear() -> None:
        reset_store()
        for alias in caches:
            try:
                caches[alias].clear()
            except Exception:  # the database cache before its table exists
                pass

    clear()
    yield
    clear()


@pytest.fixture
def registry():
    """The package's metrics on a private Prometheus registry for the test (the metrics
    tests); whatever was enabled before is enabled again after."""
    from prometheus_client import CollectorRegistry

    from circuitbreaker_app import metrics

    was_enabled = metrics.enabled() is not None
    metrics.disable()
    registry = CollectorRegistry()
    metrics.enable(registry)
    yield registry
    metrics.disable()
    if was_enabled:
        metrics.enable()
