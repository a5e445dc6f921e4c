"""The circuit admin: its list, its change form with the live panel, its permissions.

The columns come from :mod:`.changelist`, the dashboard views from :mod:`.dashboard_views`,
the actions from :mod:`.actions`; this module puts them together and decides who may do what.
"""

from __future__ import annotations

import copy
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.formats import number_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app.admin.actions import ACTIONS, PERMISSION_ACTIONS
from circuitbreaker_app.admin.changelist import LiveColumns
from circuitbreaker_app.admin.dashboard_views import DashboardViews
from circuitbreaker_app.admin.display import (
    countdown,
    js_labels_script,
    state_badge,
    window_figures,
)
from circuitbreaker_app.admin.events import CircuitEventInline
from circuitbreaker_app.admin.forms import CircuitForm
from circuitbreaker_app.ago import time_tag
from circuitbreaker_app.audit import FORCE_PERMISSION, OPERATOR_STATES
from circuitbreaker_app.core import State
from circuitbreaker_app.models import DECISION_FIELDS, Circuit
from circuitbreaker_app.store import get_store


@admin.register(Circuit)
class CircuitAdmin(DashboardViews, LiveColumns, admin.ModelAdmin):
    """Circuits: live columns, a live panel on the change form, state moves as actions."""

    form = CircuitForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = (
        "name",
        "state_column",
        "failure_rate_column",
        "calls_column",
        "retry_column",
        "changed_column",
    )
    list_filter = ("state", "window_type", "trial_mode")
    search_fields = ("name", "description")
    sortable_by = ("name", "state_column", "retry_column", "changed_column")
    list_per_page = 50
    actions = ACTIONS
    inlines = (CircuitEventInline,)
    change_list_template = "admin/circuitbreaker_app/circuit/change_list.html"
    fieldsets = (
        (None, {"fields": ("name", "description")}),
        (
            _("When the circuit opens"),
            {
                "fields": (
                    "window_type",
                    "window_size",
                    "minimum_calls",
                    "failure_rate_threshold",
                    "slow_call_duration",
                    "slow_call_rate_threshold",
                )
            },
        ),
        (
            _("Waiting and trials"),
            {
                "fields": (
                    "wait_duration",
                    "backoff_multiplier",
                    "max_wait_duration",
                    "trial_mode",
                    "half_open_max_calls",
                    "trial_lease",
                    "probe_url",
                    "probe_timeout",
                )
            },
        ),
    )

    class Media:
        css = {"all": ("circuitbreaker_app/admin.css",)}
        js = ("circuitbreaker_app/admin.js",)

    # -- permissions ------------------------------------------------------------------
    def has_force_permission(self, request: HttpRequest) -> bool:
        """Whether the user may change circuit states (``force_circuit``)."""
        return request.user.has_perm(FORCE_PERMISSION)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Deleting a circuit that is not CLOSED also needs ``force_circuit``.

        The next use of a deleted circuit re-creates it CLOSED from ``DEFAULTS``, so
        deleting a forced, disabled or open circuit would undo that state: it is a state
        change. (The bulk delete action asks this for every selected circuit.)
        """
        if not super().has_delete_permission(request, obj):
            return False
        if obj is None or obj.state == State.CLOSED.value:
            return True
        return self.has_force_permission(request)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Circuit | None:
        """The circuit, with a copy of it as stored for the live panel.

        Validating the change form writes the submitted values onto this instance even
        when the form rejects them; the panel must not hand those to the store (this
        process's breaker would decide by a definition nobody saved, and an invalid one
        would be logged as an invalid database row).
        """
        obj = super().get_object(request, object_id, from_field)
        if obj is not None:
            obj._cb_stored = copy.copy(obj)  # type: ignore[attr-defined]
        return obj

    def save_model(self, request: HttpRequest, obj: Circuit, form: Any, change: bool) -> None:
        """Save, naming the acting user in the definition-edit event."""
        obj.save(actor=request.user)

    def delete_model(self, request: HttpRequest, obj: Circuit) -> None:
        """Delete, naming the acting user in the deletion event."""
        if not self.has_delete_permission(request, obj):
            raise PermissionDenied(gettext("You may not delete a circuit that is not closed."))
        obj.delete(actor=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Circuit]) -> None:
        """The bulk delete action: one audited deletion per circuit, all or none."""
        circuits = list(queryset)
        if not all(self.has_delete_permission(request, obj) for obj in circuits):
            raise PermissionDenied(gettext("You may not delete a circuit that is not closed."))
        with transaction.atomic(using=queryset.db):
            for obj in circuits:
                obj.delete(actor=request.user)

    # -- change list ------------------------------------------------------------------
    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if (
            request.method == "POST"
            and PERMISSION_ACTIONS.intersection(request.POST.getlist("action"))
            and not self.has_force_permission(request)
        ):
            raise PermissionDenied(gettext("You may not change the state of circuits."))
        extra_context = {
            **(extra_context or {}),
            "dashboard_url": reverse(
                f"{self.admin_site.name}:circuitbreaker_app_circuit_dashboard"
            ),
            "cb_labels": js_labels_script(),
        }
        return super().changelist_view(request, extra_context)

    # -- change form --------------------------------------------------------------------
    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        """Fields this user may not edit on this circuit.

        The name never changes (code refers to circuits by name: renaming one would orphan
        its callers). Without ``force_circuit``: ``probe_url`` (where the probe task sends
        requests from inside the network), and, while an operator holds the circuit in a
        forced or disabled state, every field that decides how it trips — editing those
        would undo the operator's decision.
        """
        guarded: tuple[str, ...] = ()
        if not self.has_force_permission(request):
            # shown masked (read-only fields would print the stored URL, credentials and all)
            guarded = ("masked_probe_url",)
            if obj is not None and State(obj.state) in OPERATOR_STATES:
                guarded = (*DECISION_FIELDS, *guarded)
        if obj is None:
            return guarded
        return ("name", "live_state", *guarded)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if not self.has_force_permission(request):
            fieldsets = [
                (
                    title,
                    {
                        **options,
                        "fields": tuple(
                            "masked_probe_url" if field == "probe_url" else field
                            for field in options["fields"]
                        ),
                    },
                )
                for title, options in fieldsets
            ]
        if obj is None:
            return fieldsets
        return ((_("Live state"), {"fields": ("live_state",)}), *fieldsets)

    @admin.display(description=_("probe URL"))
    def masked_probe_url(self, obj: Circuit) -> str:
        """The probe URL with credentials masked, for users who may not edit it."""
        return obj.masked_probe_url or "–"

    @admin.display(description=_("now"))
    def live_state(self, obj: Circuit) -> SafeString:
        """The live state panel; admin.js refreshes it from the status endpoint."""
        obj = getattr(obj, "_cb_stored", obj)  # as saved, not as just (mis)typed
        status = self._status_of(obj)
        status_url = reverse(f"{self.admin_site.name}:circuitbreaker_app_circuit_status")
        failure, slow, calls = window_figures(status)
        if obj.slow_call_duration is None:
            slow = "–"
        rows = [
            (gettext("state"), "state", state_badge(status.state), ""),
            (gettext("trial in"), "retry_after", countdown(status.retry_after), ""),
            (
                gettext("failure rate"),
                "failure_rate",
                failure,
                gettext("(opens at %(threshold)s %%)")
                % {"threshold": f"{obj.failure_rate_threshold:g}"},
            ),
            (gettext("slow-call rate"), "slow_call_rate", slow, ""),
            (
                gettext("calls in window"),
                "calls",
                calls,
                gettext("(minimum %(minimum)s)") % {"minimum": obj.minimum_calls},
            ),
            (
                gettext("rejected calls"),
                "rejected",
                number_format(status.rejected, force_grouping=True),
                gettext("(in total, every process)"),
            ),
            (gettext("consecutive opens"), "open_count", status.open_count, ""),
            (gettext("generation"), "generation", status.generation, ""),
            (
                gettext("last transition"),
                "changed_at",
                time_tag(status.changed_at, get_store().now()),
                "",
            ),
        ]
        return format_html(
            '<div class="cb-live" data-circuit="{}" data-status-url="{}" '
            'data-slow-enabled="{}"><table class="cb-live-table">{}</table>'
            '<p class="help">{}</p></div>{}',
            obj.name,
            status_url,
            "1" if obj.slow_call_duration is not None else "0",
            format_html_join(
                "",
                '<tr><th scope="row">{}</th><td><span data-field="{}">{}</span> {}</td></tr>',
                rows,
            ),
            gettext("Refreshed every 5 seconds. Change the state with the list's actions."),
            js_labels_script(),
        )
