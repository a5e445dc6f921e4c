"""Django settings of the benchmark processes (never used by the test suite or the demo).

Everything comes from the environment the runner sets for itself and its children:

- ``CB_BENCH_DIR``: the run's working folder (the SQLite file lives there);
- ``CB_BENCH_RUN``: the run id, used as the Redis key prefix so a run never touches the
  keys of another run (or of the test suite) in the same Redis database;
- ``CB_BENCH_REDIS_URL``: the Redis database (default ``redis://127.0.0.1:6379/8``);
- ``CB_BENCH_BREAKER_REDIS_URL``: ``CIRCUITBREAKER["REDIS_URL"]`` (a Cluster or Sentinel
  URL in the fleet part), else the cache's own server;
- ``CB_BENCH_CACHE``: ``locmem`` (default) or ``redis``, the ``default`` cache alias, i.e.
  the one circuitbreaker_app uses. The ``redis`` alias is always defined.

Only what circuitbreaker_app needs is installed, and the middleware is minimal, so the
HTTP benchmark measures the breaker and not the rest of a project's middleware.
"""

import os
import tempfile
from pathlib import Path

BENCH_DIR = Path(os.environ.get("CB_BENCH_DIR") or Path(tempfile.gettempdir()) / "cb-bench")
BENCH_RUN = os.environ.get("CB_BENCH_RUN", "default")
REDIS_URL = os.environ.get("CB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
DEFAULT_CACHE = os.environ.get("CB_BENCH_CACHE", "locmem")

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "circuitbreaker_app",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "benchmarks.urls"
WSGI_APPLICATION = "benchmarks.wsgi.application"
TEMPLATES: list = []

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BENCH_DIR / "bench.sqlite3"),
        # Several processes share the file (fleet workers, gunicorn workers): DESIGN §6.
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
}

_LOCMEM = {
    "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
    "LOCATION": f"cb-bench-{BENCH_RUN}",
}
_REDIS = {
    "BACKEND": "django.core.cache.backends.redis.RedisCache",
    "LOCATION": REDIS_URL,
    "KEY_PREFIX": f"cbbench-{BENCH_RUN}",
}
if DEFAULT_CACHE not in ("locmem", "redis"):
    raise ValueError(f"CB_BENCH_CACHE must be 'locmem' or 'redis', not {DEFAULT_CACHE!r}")
CACHES = {
    "default": _REDIS if DEFAULT_CACHE == "redis" else _LOCMEM,
    "locmem": _LOCMEM,
    "redis": _REDIS,
}

CIRCUITBREAKER = {
    # Prometheus metrics are measured separately (one row of their own): the peers have none.
    "METRICS": False,
    # The memory benchmark defines 1,000 circuits on top of the others.
    "MAX_CIRCUITS": 5_000,
    # The fleet part's Cluster and Sentinel runs point the breaker at another deployment.
    "REDIS_URL": os.environ.get("CB_BENCH_BREAKER_REDIS_URL") or None,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"circuitbreaker_app": {"level": "WARNING"}},
}
