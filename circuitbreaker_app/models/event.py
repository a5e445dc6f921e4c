"""The append-only event log: transitions, definition edits and deletions."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app.models.circuit import Circuit


class CircuitEvent(models.Model):
    """One transition, definition edit or deletion of one circuit (append-only).

    The log outlives its circuit: ``circuit_name`` keeps the name, and deleting the circuit
    only clears ``circuit`` (an audit trail an operator can erase is no audit trail).
    ``changes`` is set on definition edits and deletions, ``{field: [old, new]}``
    (``new`` is None for a deletion), and empty on transitions.
    """

    circuit = models.ForeignKey(
        Circuit,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
        verbose_name=_("circuit"),
    )
    circuit_name = models.CharField(_("circuit name"), max_length=100, db_index=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now, db_index=True)
    from_state = models.CharField(_("from"), max_length=20, choices=Circuit.StateChoices.choices)
    to_state = models.CharField(_("to"), max_length=20, choices=Circuit.StateChoices.choices)
    reason = models.CharField(_("reason"), max_length=200, blank=True)
    generation = models.PositiveBigIntegerField(_("generation"), default=0)
    failure_rate = models.FloatField(_("failure rate (%)"), null=True, blank=True)
    slow_call_rate = models.FloatField(_("slow call rate (%)"), null=True, blank=True)
    calls = models.PositiveIntegerField(_("calls in window"), null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("acting user"),
    )
    changes = models.JSONField(
        _("changed fields"),
        null=True,
        blank=True,
        help_text=_("For definition edits and deletions: {field: [old, new]}."),
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("circuit event")
        verbose_name_plural = _("circuit events")

    def __str__(self) -> str:
        return (
            f"{self.circuit_name}: {self.get_from_state_display()} → {self.get_to_state_display()}"
        )
