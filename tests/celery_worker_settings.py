"""Settings (and the Celery app) of the workers that ``tests/test_celery_worker.py`` starts.

The worker must see what the test sees: the *test* database (pytest-django's, named in
``DATABASES["default"]["TEST"]["NAME"]``), a cache shared across processes and the
test's broker. Everything comes from the environment the test sets:

- ``CB_DATABASE``, ``CB_SQLITE_PATH``, ``CB_POSTGRES_TEST_NAME``, ``CB_CACHE``,
  ``CB_REDIS_URL``, ``CB_FILE_CACHE_DIR``: as in ``tests/settings.py``;
- ``CB_CELERY_BROKER_URL``: ``redis://…`` or ``filesystem://`` (then ``CB_BROKER_DIR``
  holds the queue, processed and control folders, created by the test);
- ``CB_CELERY_QUEUE``: a queue name of the test's own, so runs sharing a broker never
  take each other's tasks;
- ``CB_PROBE_INTERVAL`` and ``CB_BEAT_SCHEDULE_FILE`` for the embedded beat.

Start a worker with ``celery -A tests.celery_worker_settings worker -B``.
"""

import os

from celery import Celery

from circuitbreaker_app.schedule import beat_schedule
from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"]

PROBE_INTERVAL = float(os.environ.get("CB_PROBE_INTERVAL", "1"))
CIRCUITBREAKER = {"PROBE_INTERVAL": PROBE_INTERVAL}

CELERY_BROKER_URL = os.environ.get("CB_CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = os.environ["CB_BROKER_DIR"]
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": os.path.join(_broker_dir, "queue"),
        "data_folder_out": os.path.join(_broker_dir, "queue"),
        "processed_folder": os.path.join(_broker_dir, "processed"),
        "control_folder": os.path.join(_broker_dir, "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CB_CELERY_QUEUE", "circuitbreaker-tests")
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = beat_schedule(PROBE_INTERVAL)
CELERY_BEAT_SCHEDULE_FILENAME = os.environ.get("CB_BEAT_SCHEDULE_FILE", "celerybeat-schedule")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}

app = Celery("circuitbreaker_tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["circuitbreaker_app"])
