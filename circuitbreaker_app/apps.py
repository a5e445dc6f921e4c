"""App configuration: settings validated at start, system checks, the CIRCUITS sync
after ``migrate``, metrics, probe scheduling."""

import importlib.util

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate
from django.utils.translation import gettext_lazy as _


class CircuitBreakerConfig(AppConfig):
    name = "circuitbreaker_app"
    verbose_name = _("Circuit breakers")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from circuitbreaker_app import audit, checks, conf  # noqa: F401  (checks registers itself)
        from circuitbreaker_app.schedule import probe_on_open
        from circuitbreaker_app.signals import state_changed
        from circuitbreaker_app.store import circuit_deleted
        from circuitbreaker_app.sync import sync_after_migrate

        # Invalid settings fail here, at start, never at a guarded call (DESIGN §4b).
        checks.validate_settings()
        post_migrate.connect(sync_after_migrate, sender=self)
        # A circuit that opens schedules its own probe at retry_at (when Celery is set up).
        state_changed.connect(probe_on_open, dispatch_uid="circuitbreaker_app.probe_on_open")
        post_delete.connect(circuit_deleted, sender=self.get_model("Circuit"))
        post_delete.connect(
            audit.circuit_deleted,
            sender=self.get_model("Circuit"),
            dispatch_uid="circuitbreaker_app.audit.circuit_deleted",
        )
        # Prometheus metrics: on by default when prometheus_client is installed.
        if conf.get("METRICS") is True and importlib.util.find_spec("prometheus_client"):
            from circuitbreaker_app import metrics

            metrics.enable()
