"""The circuit change list: live columns read in one round trip for the whole page.

:class:`LiveChangeList` reads every shown circuit's live status at once, and
:class:`LiveColumns` (mixed into :class:`~circuitbreaker_app.admin.CircuitAdmin`) shows it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app.admin.display import countdown, rejected_text, state_badge, window_figures
from circuitbreaker_app.ago import time_tag
from circuitbreaker_app.live import LiveStatus, live_statuses, with_trip
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import get_store


class LiveChangeList(ChangeList):
    """A change list that reads every shown circuit's live status in one cache round trip."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.live = {status.circuit.pk: status for status in live_statuses(self.result_list)}


if TYPE_CHECKING:  # what the mixin is mixed into (its super() and self are a ModelAdmin's)
    _ModelAdmin = admin.ModelAdmin[Circuit]
else:
    _ModelAdmin = object


class LiveColumns(_ModelAdmin):
    """The change list's columns, each from the live status :class:`LiveChangeList` read.

    A mixin for a ``ModelAdmin`` of :class:`~circuitbreaker_app.models.Circuit`.
    """

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return LiveChangeList

    @admin.display(description=_("state"), ordering="state")
    def state_column(self, obj: Circuit) -> SafeString:
        return state_badge(self._status_of(obj).state)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Circuit]:
        """Circuits with the figures of their last trip (see ``live.with_trip``)."""
        return with_trip(super().get_queryset(request))

    @admin.display(description=_("failure rate"))
    def failure_rate_column(self, obj: Circuit) -> SafeString | str:
        """The failure rate, and below it the slow-call rate when slow calls count (one
        column for both keeps the list within 1280 px)."""
        failure, slow, _calls = window_figures(self._status_of(obj))
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
        _failure, _slow, calls = window_figures(status)
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
