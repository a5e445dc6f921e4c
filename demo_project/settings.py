"""Settings of the demo project, read from the environment with django-environ.

Runs with no services at all: SQLite, the database cache and Celery's filesystem broker, all
kept under ``var/`` (or ``DEMO_DATA_DIR``). Point it at real services with ``DATABASE_URL``,
``CACHE_URL`` (or ``REDIS_URL``) and ``CELERY_BROKER_URL``. A ``.env`` file next to
``manage.py`` is read if present. Not for production: the defaults include DEBUG and a
public secret key.
"""

import os
from pathlib import Path

import environ

from circuitbreaker_app.schedule import beat_schedule

BASE_DIR = Path(__file__).resolve().parent.parent
# Everything the demo writes (database, broker folders) lives here.
VAR_DIR = Path(os.environ.get("DEMO_DATA_DIR") or BASE_DIR / "var").resolve()
os.makedirs(VAR_DIR, exist_ok=True)

env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="demo-only-insecure-secret-key")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "circuitbreaker_app",
    "demo_project.shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # An unhandled CircuitOpenError becomes 503 + Retry-After (JSON or a friendly page).
    "circuitbreaker_app.middleware.CircuitBreakerMiddleware",
]

ROOT_URLCONF = "demo_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'demo.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"].endswith(("postgresql", "mysql")):
    # A database that accepts connections but never answers must not hang requests.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL + IMMEDIATE transactions: web server, Celery worker and beat share the file
    # without "database is locked".
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        }
    )

# --- Cache ----------------------------------------------------------------------------------
if "CACHE_URL" in os.environ:
    _cache = env.cache("CACHE_URL")
elif "REDIS_URL" in os.environ:
    _cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.str("REDIS_URL"),
    }
else:
    _cache = env.cache_url_config("dbcache://cb_cache")  # needs `createcachetable`
if _cache["BACKEND"] in (
    "django.core.cache.backends.db.DatabaseCache",
    "django.core.cache.backends.filebased.FileBasedCache",
):
    # The default MAX_ENTRIES (300) culls a third of the keys when reached.
    _cache.setdefault("OPTIONS", {}).setdefault("MAX_ENTRIES", 1_000_000)
CACHES = {"default": _cache}

# --- Celery ---------------------------------------------------------------------------------
# `celery -A demo_project worker -B` runs the probe task every PROBE_INTERVAL seconds.
PROBE_INTERVAL = env.float("PROBE_INTERVAL", default=5.0)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The filesystem transport does not create its folders (the worker would exit with
    # FileNotFoundError); in and out are the same folder so one process reads what another
    # wrote. "control" holds broadcast bindings (it defaults to ./control otherwise).
    _broker_dir = VAR_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        os.makedirs(_broker_dir / _folder, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.5,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE = beat_schedule(PROBE_INTERVAL)
# Beat keeps its schedule in memory, not in the default shelve file (SQLite on Python
# 3.13). The embedded beat process (worker -B) starts by closing every descriptor it
# inherited; with a Redis broker, something in it later closed one of those numbers again,
# which by then was the shelve's (strace: close(5) on SQLite's shared-memory file between
# two of SQLite's own locks): beat died with "disk I/O error" or "locking protocol" within
# seconds in 3 of 4 starts, and no probe ran. A schedule of one entry every PROBE_INTERVAL
# seconds has nothing worth keeping across restarts.
CELERY_BEAT_SCHEDULER = "celery.beat:Scheduler"
CELERY_TIMEZONE = "UTC"

# --- The app under demonstration ------------------------------------------------------------
CIRCUITBREAKER = {
    "PROBE_INTERVAL": PROBE_INTERVAL,
    "CIRCUITS": {
        "payments": {
            "window_type": "count",
            "window_size": 10,
            "minimum_calls": 5,
            "failure_rate_threshold": 50,
            "wait_duration": 10,
            # Probed by demo_project/probes.py (a registered function).
            "probe_timeout": 2.0,
        },
        # The async quote page (demo_project/shop/quotes.py): httpx, and last_good.
        "quotes": {
            "window_type": "count",
            "window_size": 6,
            "minimum_calls": 3,
            "failure_rate_threshold": 50,
            "wait_duration": 10,
        },
        "stock": {
            "window_type": "count",
            "window_size": 6,
            "minimum_calls": 3,
            "failure_rate_threshold": 50,
            "wait_duration": 10,
        },
        "inventory": {
            "window_type": "time",
            "window_size": 30,
            "minimum_calls": 5,
            "failure_rate_threshold": 50,
            "wait_duration": 10,
        },
    },
}

# --- The rest -------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "admin:login"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # A circuit moves within seconds: every line says when, to the millisecond.
    "formatters": {
        "timestamped": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "timestamped"}},
    "loggers": {
        # propagate=False: the Celery worker's root handler would print each line twice.
        "circuitbreaker_app": {
            "handlers": ["console"],
            "level": env.str("CB_LOG_LEVEL", "INFO"),
            "propagate": False,
        },
    },
}
