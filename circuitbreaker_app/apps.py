"""App configuration: system checks and the CIRCUITS sync after ``migrate``."""

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate
from django.utils.translation import gettext_lazy as _


class CircuitBreakerConfig(AppConfig):
    name = "circuitbreaker_app"
    verbose_name = _("Circuit breakers")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from circuitbreaker_app import checks  # noqa: F401  (registers the checks)
        from circuitbreaker_app.sync import sync_after_migrate

        from circuitbreaker_app.store import circuit_deleted

        post_migrate.connect(sync_after_migrate, sender=self)
        post_delete.connect(circuit_deleted, sender=self.get_model("Circuit"))
