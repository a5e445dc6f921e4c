"""The HTML bits the admin pages share: state badges, countdowns, rates, and the words
admin.js and dashboard.js put on the page (all built with format_html, so escaped)."""

from __future__ import annotations

from typing import Any

from django.utils.formats import number_format
from django.utils.html import format_html, json_script
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext

from circuitbreaker_app.ago import ago_labels
from circuitbreaker_app.core import State
from circuitbreaker_app.live import LiveStatus
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import get_store

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
    """A rate as the admin shows it: one decimal and a percent sign."""
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


def window_figures(
    status: LiveStatus,
) -> tuple[SafeString | str, SafeString | str, SafeString | int]:
    """The failure rate, slow-call rate and calls to show: the window's now, or while the
    circuit is open (its window is empty then) the window's at the trip, marked so."""
    if status.trip is not None:
        return (
            at_trip(percent(status.trip.failure_rate)),
            at_trip(percent(status.trip.slow_call_rate)),
            at_trip(str(status.trip.calls)),
        )
    return percent(status.failure_rate), percent(status.slow_call_rate), status.window.calls
