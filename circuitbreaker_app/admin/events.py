"""The event log in the admin: the latest events on a circuit's page, and the whole log,
read-only (an audit trail an operator can edit or erase is none)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app.ago import time_tag
from circuitbreaker_app.models import CircuitEvent
from circuitbreaker_app.store import get_store

#: Latest events shown inline on a circuit's change form.
EVENTS_SHOWN = 20


class LatestEventsFormSet(BaseInlineFormSet):
    """Only the newest :data:`EVENTS_SHOWN` events (the log is append-only and unbounded)."""

    def get_queryset(self) -> QuerySet[CircuitEvent]:
        if not hasattr(self, "_latest"):
            self._latest = super().get_queryset()[:EVENTS_SHOWN]
        return self._latest


def changes_text(changes: dict[str, Any] | None) -> str:
    """An audit event's ``{field: [old, new]}`` as ``field: old → new`` lines."""
    if not changes:
        return ""
    return "\n".join(f"{field}: {old!r} → {new!r}" for field, (old, new) in changes.items())


class ChangesColumn:
    """The ``changes_column`` of the inline and of the log: an edit's fields, one a line."""

    @admin.display(description=_("changed fields"))
    def changes_column(self, obj: CircuitEvent) -> SafeString | str:
        text = changes_text(obj.changes)
        return format_html('<span style="white-space:pre-line">{}</span>', text) if text else ""


class CircuitEventInline(ChangesColumn, admin.TabularInline):
    """The latest events, read-only, one table row each (a template of its own: Django's
    tabular inline would print every event's ``__str__`` once more above its fields)."""

    model = CircuitEvent
    formset = LatestEventsFormSet
    template = "admin/circuitbreaker_app/circuit/events_inline.html"
    fields = (
        "when",
        "transition",
        "reason",
        "failure_rate",
        "calls",
        "actor",
        "changes_column",
    )
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = _("latest events (newest first)")

    @admin.display(description=_("time"))
    def when(self, obj: CircuitEvent) -> SafeString | str:
        return time_tag(obj.created_at, get_store().now())

    @admin.display(description=_("transition"))
    def transition(self, obj: CircuitEvent) -> SafeString:
        return format_html(
            '<span class="cb-transition">{} → {}</span>',
            obj.get_from_state_display(),
            obj.get_to_state_display(),
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[CircuitEvent]:
        return super().get_queryset(request).select_related("actor")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Whoever may see a circuit may see its history.
        return request.user.has_perm("circuitbreaker_app.view_circuit") or request.user.has_perm(
            "circuitbreaker_app.change_circuit"
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CircuitEvent)
class CircuitEventAdmin(ChangesColumn, admin.ModelAdmin):
    """The whole audit log, read-only, including the events of deleted circuits."""

    list_display = (
        "created_at",
        "circuit_name",
        "from_state",
        "to_state",
        "actor",
        "reason",
    )
    list_filter = ("to_state",)
    search_fields = ("circuit_name", "reason")
    date_hierarchy = "created_at"
    list_select_related = ("actor",)
    fields = (
        "created_at",
        "circuit_name",
        "circuit",
        "from_state",
        "to_state",
        "generation",
        "reason",
        "failure_rate",
        "slow_call_rate",
        "calls",
        "actor",
        "changes_column",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # append-only: an audit trail an operator can erase is none
