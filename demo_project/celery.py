"""Celery app of the demo project: ``celery -A demo_project worker -B``.

Configured from the ``CELERY_*`` Django settings (broker, beat schedule with
``circuitbreaker_app.tasks.probe_circuits``); finds ``circuitbreaker_app.tasks`` through
``INSTALLED_APPS``.
"""

import os

from celery import Celery
from celery.signals import worker_init
from kombu.transport import TRANSPORT_ALIASES

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")
# filesystem:// (the demo's default broker) writes each message whole: demo_project/broker.py.
TRANSPORT_ALIASES["filesystem"] = "demo_project.broker:Transport"

app = Celery("demo_project")
# Every CELERY_* Django setting configures Celery (CELERY_BROKER_URL -> broker_url, ...).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def register_demo_probes(**kwargs: object) -> None:
    """Register the payments probe in the worker, where probes run (and nowhere else)."""
    from demo_project import probes  # noqa: F401
