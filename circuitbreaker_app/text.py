"""Short texts for logs and events: cut on a word boundary, with an ellipsis.

A probe's failure detail ("ConnectionError: HTTPConnectionPool(host=…): Max retries
exceeded …") becomes an event reason (200 characters at most) and a log line. Cut at a
fixed index it ends mid-word ("Max retr"), and an operator cannot tell a cut from a
strange message; :func:`shorten` keeps whole words and says that something was left out.
"""

from __future__ import annotations

ELLIPSIS = "…"


def shorten(text: str, width: int) -> str:
    """``text`` when it fits in ``width`` characters; otherwise cut at the last space that
    keeps at least half of it (a long token such as a URL is cut inside), plus "…"."""
    if width < 1:
        raise ValueError(f"width must be at least 1, not {width!r}")
    if len(text) <= width:
        return text
    room = text[: width - len(ELLIPSIS)]
    space = room.rfind(" ")
    if space >= len(room) // 2:
        room = room[:space]
    return room.rstrip(" ,;:-") + ELLIPSIS
