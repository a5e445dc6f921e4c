"""The dashboard and the status endpoint, as views of the circuit admin (behind its login).

:class:`DashboardViews` is mixed into :class:`~circuitbreaker_app.admin.CircuitAdmin`; the
data comes from :mod:`circuitbreaker_app.dashboard`, and dashboard.js polls
:meth:`DashboardViews.feed_view`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.cache import add_never_cache_headers
from django.utils.http import urlencode
from django.utils.translation import gettext

from circuitbreaker_app import dashboard, samples, views
from circuitbreaker_app.admin.display import js_labels_script, state_label
from circuitbreaker_app.dashboard import DashboardFilter
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import get_store

if TYPE_CHECKING:  # what the mixin is mixed into (its super() and self are a ModelAdmin's)
    _ModelAdmin = admin.ModelAdmin[Circuit]
else:
    _ModelAdmin = object


class DashboardViews(_ModelAdmin):
    """The admin's extra URLs: ``dashboard/``, ``dashboard/feed/`` and ``status/``.

    A mixin for a ``ModelAdmin`` of :class:`~circuitbreaker_app.models.Circuit`; every
    view needs the view permission of that admin.
    """

    admin_site: Any
    opts: Any

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
        query = request.GET.urlencode() if form.is_bound and form.is_valid() else ""
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
