"""Settings for the test suite.

Backends are chosen from the environment so the same suite runs on the server-less defaults
and on real services:

- ``CB_DATABASE``: ``sqlite`` (default; file-backed so several processes can share it) or
  ``postgres`` (``postgresql://postgres@127.0.0.1:5432/test``).
- ``CB_CACHE``: ``locmem`` (default), ``database``, ``file`` or ``redis``
  (``redis://127.0.0.1:6379/15``, or ``CB_REDIS_URL``).
- ``CB_SQLITE_PATH``: the SQLite file (default ``<repo>/.pytest-db.sqlite3``); the test
  database is ``.pytest-test-db.sqlite3`` beside it.
- ``CB_POSTGRES_TEST_NAME``: the PostgreSQL test database (default ``test_circuitbreaker``).
- ``CB_POSTGRES_HOST`` / ``CB_POSTGRES_PORT``: where PostgreSQL is reached (default
  ``127.0.0.1:5432``; worker processes in another network namespace use a forwarder).
"""

import os
import tempfile
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CB_DATABASE = os.environ.get("CB_DATABASE", "sqlite").strip().lower()
CB_CACHE = os.environ.get("CB_CACHE", "locmem").strip().lower()

# WAL + IMMEDIATE transactions keep SQLite free of "database is locked" when several
# processes (web server, worker, beat, multiprocess tests) share the file.
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}

DATABASES: dict[str, dict[str, Any]]
if CB_DATABASE == "sqlite":
    _sqlite_path = Path(os.environ.get("CB_SQLITE_PATH", BASE_DIR / ".pytest-db.sqlite3"))
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(_sqlite_path),
            "OPTIONS": dict(SQLITE_OPTIONS),
            # A file, not ":memory:", so that other processes see the test database.
            "TEST": {"NAME": str(_sqlite_path.with_name(".pytest-test-db.sqlite3"))},
        }
    }
elif CB_DATABASE in ("postgres", "postgresql"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            # A worker process started by a test points NAME at the test database.
            "NAME": os.environ.get("CB_POSTGRES_NAME", "test"),
            "USER": "postgres",
            "PASSWORD": "",
            # A worker on another network namespace reaches it through a forwarder.
            "HOST": os.environ.get("CB_POSTGRES_HOST", "127.0.0.1"),
            "PORT": os.environ.get("CB_POSTGRES_PORT", "5432"),
            # Bounded connection waits (system check circuitbreaker_app.W040).
            "OPTIONS": {"connect_timeout": 5},
            # Overridable so two suites can run against one server at the same time.
            "TEST": {"NAME": os.environ.get("CB_POSTGRES_TEST_NAME", "test_circuitbreaker")},
        }
    }
else:
    raise ValueError(f"CB_DATABASE must be 'sqlite' or 'postgres', not {CB_DATABASE!r}")

CACHES: dict[str, dict[str, Any]]
if CB_CACHE == "locmem":
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "circuitbreaker-tests",
        }
    }
elif CB_CACHE == "database":
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "cb_cache",
            # The default MAX_ENTRIES (300) culls keys, after which add() succeeds again.
            "OPTIONS": {"MAX_ENTRIES": 1_000_000},
        }
    }
elif CB_CACHE == "file":
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": os.environ.get(
                "CB_FILE_CACHE_DIR",
                os.path.join(tempfile.gettempdir(), f"circuitbreaker-tests-cache-{os.getuid()}"),
            ),
            "OPTIONS": {"MAX_ENTRIES": 1_000_000},
        }
    }
elif CB_CACHE == "redis":
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ.get("CB_REDIS_URL", "redis://127.0.0.1:6379/15"),
        }
    }
else:
    raise ValueError(f"CB_CACHE must be 'locmem', 'database', 'file' or 'redis', not {CB_CACHE!r}")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "circuitbreaker_app",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "circuitbreaker_app.middleware.CircuitBreakerMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.debug",
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

STATIC_URL = "static/"

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast tests

CIRCUITBREAKER: dict = {}
