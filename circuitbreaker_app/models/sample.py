"""Per-period samples of a circuit's state and window, for the dashboard's history."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app.core import State
from circuitbreaker_app.models.circuit import Circuit


class CircuitSample(models.Model):
    """A circuit's state and window totals in one 10-second period, for the dashboard.

    Written off the hot path by :func:`circuitbreaker_app.samples.record_samples` (the
    beat task calls it every period; the status endpoint and the dashboard too, when no
    worker did); rows older than ``samples.RETENTION`` are deleted when new ones are
    written, so the table holds at most ``RETENTION / INTERVAL`` rows per circuit.
    """

    circuit = models.ForeignKey(
        Circuit, on_delete=models.CASCADE, related_name="samples", verbose_name=_("circuit")
    )
    at = models.DateTimeField(_("period start"), db_index=True)
    calls = models.PositiveIntegerField(_("calls in window"), default=0)
    failures = models.PositiveIntegerField(_("failures in window"), default=0)
    slow = models.PositiveIntegerField(_("slow calls in window"), default=0)
    #: The fleet's rejected calls in total when sampled; a period's count is the difference.
    rejected_total = models.PositiveBigIntegerField(_("rejected calls in total"), default=0)
    state = models.CharField(
        _("state"),
        max_length=20,
        choices=Circuit.StateChoices.choices,
        default=State.CLOSED.value,
    )

    class Meta:
        ordering = ["circuit", "at"]
        verbose_name = _("circuit sample")
        verbose_name_plural = _("circuit samples")
        constraints = [
            models.UniqueConstraint(fields=["circuit", "at"], name="circuitsample_per_period")
        ]

    def __str__(self) -> str:
        return f"{self.circuit_id}@{self.at:%Y-%m-%d %H:%M:%S}: {self.failures}/{self.calls}"

    @property
    def failure_rate(self) -> float:
        """Failures as a percentage of calls (0.0 without calls)."""
        return 100.0 * self.failures / self.calls if self.calls else 0.0
