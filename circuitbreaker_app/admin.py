"""Django admin for circuits: see every circuit at a glance, and steer them.

State columns are never edited in a form: every state change is an admin action generated
from :data:`circuitbreaker_app.operator.MOVES` (one compare-and-set, one event naming the
acting user, the ``state_changed`` signal, and an entry in the admin history). An action
first shows a confirmation page offering a duration (until reset, 15 min, 1 h, 4 h,
custom). Actions need the ``circuitbreaker_app.force_circuit`` permission; staff without
it do not see them, and a forged POST gets 403.
"""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.formats import number_format
from django.utils.html import format_html, format_html_join, json_script
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app import dashboard, extras, samples, views
from circuitbreaker_app.admin_moves import MOVE_ACTIONS
from circuitbreaker_app.ago import ago_labels, time_tag
from circuitbreaker_app.audit import FORCE_PERMISSION, OPERATOR_STATES
from circuitbreaker_app.core import State
from circuitbreaker_app.dashboard import DashboardFilter
from circuitbreaker_app.live import LiveStatus, live_statuses, with_trip
from circuitbreaker_app.models import (
    DECISION_FIELDS,
    DEFINITION_FIELDS,
    Circuit,
    CircuitEvent,
    mask_url,
)
from circuitbreaker_app.store import get_store

logger = logging.getLogger("circuitbreaker_app")

#: Latest events shown inline on a circuit's change form.
EVENTS_SHOWN = 20

#: Badge colours: (background, text). Closed green, open red, half-open amber, the
#: operator states grey (DESIGN: forced and disabled circuits are not the breaker's doing).
BADGE_COLOURS: dict[State, tuple[str, str]] = {
    State.CLOSED: ("#2e7d32", "#ffffff"),
    State.OPEN: ("#c62828", "#ffffff"),
    State.HALF_OPEN: ("#f9a825", "#1f1f1f"),
    State.FORCED_OPEN: ("#616161", "#ffffff"),
    State.FORCED_CLOSED: ("#616161", "#ffffff"),
    State.DISABLED: ("#9e9e9e", "#1f1f1f"),
}
#: A grey badge carries a dot in the colour of what it does to calls.
BADGE_DOTS: dict[State, str] = {
    State.FORCED_OPEN: "#ef5350",
    State.FORCED_CLOSED: "#66bb6a",
}

#: Every action that needs the force_circuit permission.
PERMISSION_ACTIONS = frozenset({*(action.__name__ for action in MOVE_ACTIONS), "probe_now"})


def state_label(state: State | str) -> str:
    """The state's name in the active language (``"half open"`` for ``half_open``)."""
    return str(Circuit.StateChoices(State(state).value).label)


def js_labels() -> dict[str, Any]:
    """The words admin.js and dashboard.js put on the page, in the active language.

    The pages carry them as ``<script id="cb-labels" type="application/json">`` (see
    :func:`js_labels_script`), so the scripts need no JavaScript catalogue URL.
    """
    return {
        "states": {choice.value: str(choice.label) for choice in Circuit.StateChoices},
        "at_trip": gettext("at trip"),
        "due": gettext("due"),
        # "%(threshold)s" is replaced in the browser.
        "opens_at": gettext("(opens at %(threshold)s %%)"),
        # "12 s ago": the words, and the server's clock (the browser's may be off).
        "time": {**ago_labels(), "now": get_store().now()},
    }


def js_labels_script() -> SafeString:
    """:func:`js_labels` as a ``json_script`` element (escaped for a ``<script>`` body)."""
    return json_script(js_labels(), "cb-labels")


def state_badge(state: State | str) -> SafeString:
    """A coloured badge for ``state`` (built with format_html, so always escaped)."""
    state = State(state)
    background, colour = BADGE_COLOURS[state]
    dot = BADGE_DOTS.get(state)
    marker = (
        format_html('<span class="cb-dot" style="color:{}" aria-hidden="true">●&nbsp;</span>', dot)
        if dot
        else ""
    )
    return format_html(
        '<span class="cb-badge cb-badge--{}" data-state="{}" style="background:{};color:{};'
        "padding:2px 8px;border-radius:10px;font-weight:600;font-size:11px;"
        'letter-spacing:.03em;white-space:nowrap">{}{}</span>',
        state.value,
        state.value,
        background,
        colour,
        marker,
        state_label(state).upper(),
    )


def countdown(seconds: float | None) -> SafeString | str:
    """Seconds until a trial is allowed, counted down in the browser by admin.js."""
    if seconds is None:
        return "–"
    return format_html(
        '<span class="cb-countdown" data-seconds="{}">{} s</span>', f"{seconds:.3f}", round(seconds)
    )


def percent(value: float) -> str:
    return f"{value:.1f} %"


def rejected_text(count: int) -> str:
    """ "1,234 rejected": the calls a circuit turned away in total (fleet-wide)."""
    return ngettext("%(count)s rejected", "%(count)s rejected", count) % {
        "count": number_format(count, force_grouping=True)
    }


def at_trip(value: str) -> SafeString:
    """A number from the window as it was when the circuit opened (its window is empty now)."""
    return format_html(
        '{} <span class="cb-at-trip" title="{}">{}</span>',
        value,
        gettext("The window is empty while open: this is how it was when the circuit opened."),
        gettext("at trip"),
    )


class LiveChangeList(ChangeList):
    """A change list that reads every shown circuit's live status in one cache round trip."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.live = {status.circuit.pk: status for status in live_statuses(self.result_list)}


def _formfield(field: models.Field, **kwargs: Any) -> forms.Field | None:
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class CircuitForm(forms.ModelForm):
    """The definition; the probe URL is shown masked, and kept when submitted unchanged."""

    class Meta:
        model = Circuit
        fields = ("name", *DEFINITION_FIELDS)
        formfield_callback = _formfield

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        original = self.instance.probe_url if self.instance.pk else ""
        if original and mask_url(original) != original and "probe_url" in self.fields:
            self.initial["probe_url"] = mask_url(original)
            self.fields["probe_url"].help_text = _(
                "Credentials and query values are masked. Leave the URL as shown to keep "
                "them; type the whole URL to change it."
            )

    def clean_probe_url(self) -> str:
        value = self.cleaned_data.get("probe_url", "")
        original = self.instance.probe_url if self.instance.pk else ""
        if original and value == mask_url(original):
            return original
        return value


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


class CircuitEventInline(admin.TabularInline):
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

    @admin.display(description=_("changed fields"))
    def changes_column(self, obj: CircuitEvent) -> SafeString | str:
        text = changes_text(obj.changes)
        return format_html('<span style="white-space:pre-line">{}</span>', text) if text else ""

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


@admin.register(Circuit)
class CircuitAdmin(admin.ModelAdmin):
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
    actions = (*MOVE_ACTIONS, "probe_now")
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
    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LiveChangeList

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

    @admin.display(description=_("state"), ordering="state")
    def state_column(self, obj: Circuit) -> SafeString:
        return state_badge(self._status_of(obj).state)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Circuit]:
        return with_trip(super().get_queryset(request))

    @admin.display(description=_("failure rate"))
    def failure_rate_column(self, obj: Circuit) -> SafeString | str:
        """The failure rate, and below it the slow-call rate when slow calls count (one
        column for both keeps the list within 1280 px)."""
        status = self._status_of(obj)
        if status.trip is not None:
            failure: SafeString | str = at_trip(percent(status.trip.failure_rate))
            slow: SafeString | str = at_trip(percent(status.trip.slow_call_rate))
        else:
            failure, slow = percent(status.failure_rate), percent(status.slow_call_rate)
        if obj.slow_call_duration is None:
            return failure
        return format_html(
            '{}<span class="cb-sub">{} {}</span>', failure, gettext("slow calls:"), slow
        )

    @admin.display(description=_("calls in window"))
    def calls_column(self, obj: Circuit) -> SafeString | str:
        """Calls in the window (at the trip while open) and, below, the calls the fleet
        rejected in total: how many callers the circuit turned away."""
        status = self._status_of(obj)
        calls = at_trip(str(status.trip.calls)) if status.trip is not None else status.window.calls
        if not status.rejected:
            return format_html("{}", calls)
        return format_html(
            '{}<span class="cb-sub cb-rejected">{}</span>', calls, rejected_text(status.rejected)
        )

    @admin.display(description=_("trial in"), ordering="retry_at")
    def retry_column(self, obj: Circuit) -> SafeString | str:
        return countdown(self._status_of(obj).retry_after)

    @admin.display(description=_("last transition"), ordering="changed_at")
    def changed_column(self, obj: Circuit) -> SafeString | str:
        return time_tag(self._status_of(obj).changed_at, get_store().now())

    def _status_of(self, obj: Circuit) -> LiveStatus:
        """The live status the change list read for ``obj`` (or one read now)."""
        status = getattr(obj, "_cb_live", None)
        if status is None:
            status = live_statuses([obj])[0]
            obj._cb_live = status  # type: ignore[attr-defined]
        return status

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        cl = super().get_changelist_instance(request)
        for obj in cl.result_list:
            obj._cb_live = cl.live.get(obj.pk)  # type: ignore[attr-defined]
        return cl

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
        status = self._status_of(obj)
        status_url = reverse(f"{self.admin_site.name}:circuitbreaker_app_circuit_status")
        failure: SafeString | str = percent(status.failure_rate)
        slow: SafeString | str = percent(status.slow_call_rate)
        calls: SafeString | int = status.window.calls
        if status.trip is not None:
            failure = at_trip(percent(status.trip.failure_rate))
            slow = at_trip(percent(status.trip.slow_call_rate))
            calls = at_trip(str(status.trip.calls))
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

    # -- extra views ------------------------------------------------------------------
    def get_urls(self) -> list[URLPattern]:
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("dashboard/", wrap(self.dashboard_view), name=f"{info}_dashboard"),
            path("dashboard/feed/", wrap(self.feed_view), name=f"{info}_feed"),
            path("status/", wrap(self.status_view), name=f"{info}_status"),
            *super().get_urls(),
        ]

    def status_view(self, request: HttpRequest) -> HttpResponse:
        """The status endpoint behind the admin login (what admin.js and the dashboard poll)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        return views.status(request)

    def _dashboard_filter(self, request: HttpRequest) -> DashboardFilter:
        return DashboardFilter(request.GET or None)

    def _dashboard_circuits(self, form: DashboardFilter) -> QuerySet[Circuit]:
        circuits = Circuit.objects.using(get_store().db_alias).all()
        return form.apply(circuits) if form.is_bound and form.is_valid() else circuits

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """The circuits as cards, trouble first; dashboard.js polls :meth:`feed_view`."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        info = f"{self.admin_site.name}:{self.opts.app_label}_{self.opts.model_name}"
        form = self._dashboard_filter(request)
        circuits = self._dashboard_circuits(form)
        data = dashboard.first_page(circuits)
        samples.maybe_record_samples(stale_after=samples.STALE_AFTER)  # no worker sampled
        query = form.data.urlencode() if form.is_bound and form.is_valid() else ""
        dashboard_url = reverse(f"{info}_dashboard")
        counts = [
            (
                state_label(state),
                state.value,
                data["counts"].get(state.value, 0),
                f"{dashboard_url}?{urlencode({'state': state.value})}",
            )
            for state in dashboard.STATES
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Circuit dashboard"),
            "opts": self.opts,
            "form": form,
            "filtered": bool(query),
            "counts": counts,
            "dashboard_url": dashboard_url,
            "feed_url": f"{reverse(f'{info}_feed')}?{query}" if query else reverse(f"{info}_feed"),
            "changelist_url": reverse(f"{info}_changelist"),
            "change_url_template": reverse(f"{info}_change", args=[0]),
            "initial": data,
            "shown": len(data["circuits"]),
            "refresh_seconds": 5,
            "cb_labels": js_labels_script(),
        }
        return TemplateResponse(request, "admin/circuitbreaker_app/circuit/dashboard.html", context)

    def feed_view(self, request: HttpRequest) -> HttpResponse:
        """What dashboard.js polls: with ``cursor``, only what changed since (see
        :mod:`circuitbreaker_app.dashboard`); without, the first page."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = self._dashboard_filter(request)
        if form.is_bound and not form.is_valid():
            return JsonResponse({"error": "bad_filter", "detail": form.errors}, status=400)
        circuits = self._dashboard_circuits(form)
        text = request.GET.get("cursor", "")
        try:
            cursor = dashboard.Cursor.parse(text) if text else None
        except ValueError as exc:
            return JsonResponse({"error": "bad_cursor", "detail": str(exc)}, status=400)
        samples.maybe_record_samples(stale_after=samples.STALE_AFTER)  # no worker sampled
        data = (
            dashboard.first_page(circuits)
            if cursor is None
            else dashboard.changes(circuits, cursor)
        )
        response = JsonResponse(data, json_dumps_params={"separators": (",", ":")})
        add_never_cache_headers(response)
        return response

    # -- actions (the state moves are generated: admin_moves.MOVE_ACTIONS) ----------------
    @admin.action(description=_("Probe now (enqueue the probe task)"), permissions=["force"])
    def probe_now(self, request: HttpRequest, queryset: QuerySet[Circuit]) -> None:
        try:
            from circuitbreaker_app.tasks import probe_circuit  # Celery is only needed here
        except ImportError:
            self.message_user(
                request,
                gettext("Probing needs Celery, which is not installed: %(command)s")
                % {"command": extras.install_hint("celery")},
                messages.ERROR,
            )
            return
        names = list(queryset.order_by("name").values_list("name", flat=True))
        enqueued, failed = [], []
        for name in names:
            try:
                probe_circuit.delay(name)
            except Exception as exc:  # broker down: say so instead of a 500
                logger.exception("could not enqueue the probe of circuit %r", name)
                failed.append(f"{name} ({type(exc).__name__})")
            else:
                enqueued.append(name)
        if enqueued:
            self.message_user(
                request,
                gettext("Probe enqueued for: %(names)s.") % {"names": ", ".join(enqueued)},
                messages.SUCCESS,
            )
        if failed:
            self.message_user(
                request,
                gettext("Could not enqueue a probe for: %(names)s. Is the broker running?")
                % {"names": ", ".join(failed)},
                messages.ERROR,
            )


@admin.register(CircuitEvent)
class CircuitEventAdmin(admin.ModelAdmin):
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

    @admin.display(description=_("changed fields"))
    def changes_column(self, obj: CircuitEvent) -> SafeString | str:
        text = changes_text(obj.changes)
        return format_html('<span style="white-space:pre-line">{}</span>', text) if text else ""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # append-only: an audit trail an operator can erase is none
