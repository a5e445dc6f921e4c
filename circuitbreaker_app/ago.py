"""One way to show a moment in the admin: "12 s ago", the exact time on hover.

Circuits move every few seconds, so a clock time to the minute ("8:52 a.m.") says too
little and a full timestamp is slow to read. The change list, the circuit page and the
dashboard all show a time relative to now, with seconds below an hour, in a
``<time datetime=… title=…>`` element whose title is the exact ISO 8601 time (UTC). The
server renders it; ``admin.js`` re-counts the text every second from the ``datetime``
attribute with the same units (:func:`ago_labels` gives it the translated words), so a page
left open stays right.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext

#: (seconds in the unit, its key in :func:`ago_labels`), largest first.
UNITS = ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


def ago_labels() -> dict[str, str]:
    """The translated words of a relative time, for admin.js (same keys as :data:`UNITS`)."""
    return {
        "d": gettext("%(n)s d"),
        "h": gettext("%(n)s h"),
        "min": gettext("%(n)s min"),
        "s": gettext("%(n)s s"),
        "ago": gettext("%(span)s ago"),
        "in": gettext("in %(span)s"),
    }


def duration(seconds: float) -> str:
    """``seconds`` in the two largest units, e.g. "4 min 12 s", "2 h 5 min", "12 s"."""
    labels = ago_labels()
    left = max(0, round(seconds))
    first = next((i for i, (size, _unit) in enumerate(UNITS) if left >= size), len(UNITS) - 1)
    parts = []
    for size, unit in UNITS[first : first + 2]:
        parts.append(labels[unit] % {"n": left // size})
        left %= size
    return " ".join(parts)


def relative(moment: float, now: float) -> str:
    """``moment`` (epoch seconds) relative to ``now``: "12 s ago", or "in 12 s"."""
    labels = ago_labels()
    if moment > now + 0.5:
        return labels["in"] % {"span": duration(moment - now)}
    return labels["ago"] % {"span": duration(now - moment)}


def epoch(moment: datetime | float | None) -> float | None:
    """A datetime or an epoch time as epoch seconds (None stays None)."""
    if moment is None or isinstance(moment, int | float):
        return moment
    return moment.timestamp()


def time_tag(moment: datetime | float | None, now: datetime | float) -> SafeString | str:
    """``<time datetime="ISO" title="ISO">12 s ago</time>``, or "–" without a moment."""
    seconds = epoch(moment)
    if seconds is None:
        return "–"
    exact = datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")
    return format_html(
        '<time class="cb-ago" datetime="{}" title="{}">{}</time>',
        exact,
        exact,
        relative(seconds, epoch(now) or 0.0),
    )
