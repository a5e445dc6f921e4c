"""The admin actions that move circuits, generated from the operator table.

Each move of :data:`circuitbreaker_app.operator.MOVES` becomes one admin action. Choosing
it shows a confirmation page (Django's pattern for ``delete_selected``) that names the
circuits and, for the forced states, offers a duration: until reset, 15 min, 1 h, 4 h or a
custom number of minutes. Confirming applies the move to each circuit through the operator
API (one compare-and-set and one ``CircuitEvent`` naming the user each) and writes an
entry in the admin history (``LogEntry``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db import DatabaseError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app.models import Circuit
from circuitbreaker_app.operator import MAX_DURATION, MOVES, Move

logger = logging.getLogger("circuitbreaker_app")

#: The duration choices (seconds; "" is until reset, "custom" reads the minutes field).
DURATIONS = (
    ("", _("until reset")),
    ("900", _("15 minutes")),
    ("3600", _("1 hour")),
    ("14400", _("4 hours")),
    ("custom", _("custom")),
)
#: The POST field that says the confirmation page was submitted.
CONFIRMED = "confirmed"


class MoveForm(forms.Form):
    """What the confirmation page asks: how long (forced states only) and why."""

    duration = forms.ChoiceField(
        label=_("for how long"),
        choices=DURATIONS,
        required=False,
        initial="",
        widget=forms.RadioSelect,
    )
    minutes = forms.IntegerField(
        label=_("custom duration (minutes)"),
        required=False,
        min_value=1,
        max_value=MAX_DURATION // 60,
    )
    reason = forms.CharField(
        label=_("reason"),
        required=False,
        max_length=150,
        help_text=_("Recorded on each circuit's event."),
    )

    def __init__(self, *args: Any, takes_duration: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not takes_duration:
            del self.fields["duration"]
            del self.fields["minutes"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or self.cleaned_data
        if data.get("duration") == "custom" and not data.get("minutes"):
            self.add_error("minutes", _("Enter the number of minutes."))
        return data

    def seconds(self) -> float | None:
        """The chosen duration in seconds, or None for "until reset"."""
        choice = self.cleaned_data.get("duration") or ""
        if choice == "custom":
            return float(self.cleaned_data["minutes"] * 60)
        return float(choice) if choice else None


def run_move(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any], move: Move
) -> HttpResponse | None:
    """The action: show the confirmation page, or (once confirmed) move every circuit."""
    form = MoveForm(
        request.POST if CONFIRMED in request.POST else None, takes_duration=move.takes_duration
    )
    if not form.is_bound or not form.is_valid():
        return _confirmation_page(modeladmin, request, queryset, move, form)
    until = form.seconds() if move.takes_duration else None
    username = request.user.get_username()
    reason = form.cleaned_data["reason"] or f"{move.name.replace('_', ' ')} in admin by {username}"
    moved, already, failed = [], [], []
    for circuit in queryset.order_by("name"):
        try:
            changed = move(circuit.name, until=until, reason=reason, actor=request.user)
        except DatabaseError as exc:
            logger.exception("admin %s of circuit %r failed", move.name, circuit.name)
            failed.append(f"{circuit.name} ({type(exc).__name__})")
            continue
        if changed:
            moved.append(circuit.name)
            circuit.refresh_from_db(fields=["state", "forced_until"])
            modeladmin.log_change(request, circuit, _history_message(move, circuit, reason))
        else:
            already.append(circuit.name)
    _report(modeladmin, request, move, moved, already, failed)
    return None


def _history_message(move: Move, circuit: Any, reason: str) -> str:
    state = Circuit.StateChoices(circuit.state).label
    text = gettext("%(move)s: now %(state)s") % {"move": move.label, "state": state}
    if circuit.forced_until is not None:
        text += gettext(" until %(when)s") % {
            "when": circuit.forced_until.strftime("%Y-%m-%d %H:%M:%S %Z")
        }
    return f"{text} ({reason})"


def _report(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    move: Move,
    moved: list[str],
    already: list[str],
    failed: list[str],
) -> None:
    state = Circuit.StateChoices(move.state.value).label
    if moved:
        modeladmin.message_user(
            request,
            ngettext(
                "%(count)d circuit is now %(state)s: %(names)s.",
                "%(count)d circuits are now %(state)s: %(names)s.",
                len(moved),
            )
            % {"count": len(moved), "state": state, "names": ", ".join(moved)},
            messages.SUCCESS,
        )
    if already:
        modeladmin.message_user(
            request,
            gettext("Already %(state)s (unchanged): %(names)s.")
            % {"state": state, "names": ", ".join(already)},
            messages.INFO,
        )
    if failed:
        modeladmin.message_user(
            request,
            gettext("Could not change: %(names)s. See the log.") % {"names": ", ".join(failed)},
            messages.ERROR,
        )


def _confirmation_page(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[Any],
    move: Move,
    form: MoveForm,
) -> TemplateResponse:
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": move.label,
        "subtitle": None,
        "opts": opts,
        "move": move,
        "form": form,
        "circuits": list(queryset.order_by("name")),
        "action_name": move.name,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "confirmed_field": CONFIRMED,
        "media": modeladmin.media + form.media,
    }
    return TemplateResponse(
        request,
        [
            f"admin/{opts.app_label}/{opts.model_name}/move_confirmation.html",
            f"admin/{opts.app_label}/move_confirmation.html",
        ],
        context,
    )


def _action(move: Move) -> Callable[..., HttpResponse | None]:
    def action(
        modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]
    ) -> HttpResponse | None:
        return run_move(modeladmin, request, queryset, move)

    action.__name__ = action.__qualname__ = move.name
    return admin.action(description=move.label, permissions=["force"])(action)


#: One admin action per operator move, in the table's order.
MOVE_ACTIONS: tuple[Callable[..., HttpResponse | None], ...] = tuple(_action(m) for m in MOVES)
