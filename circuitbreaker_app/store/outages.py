"""Log once per outage, carry on: how the store survives a cache, Redis or database that
fails (DESIGN §4: the breaker never turns an infrastructure error into a user-facing one).

One :class:`Outages` per store remembers which services are down, so each outage is
logged once when it starts and once when it ends, whatever the number of calls between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger("circuitbreaker_app")

T = TypeVar("T")

#: Services that are one server when the backend names a shared label (Redis).
SHARED_SERVICES = frozenset({"cache", "shared counters"})


class Outages:
    """Which services this process found down, and the helper that guards a call to one."""

    def __init__(self, shared_label: str | None = None) -> None:
        #: When set, "cache" and "shared counters" are one server with this name.
        self.shared_label = shared_label
        self.down: set[str] = set()

    def _service(self, what: str) -> str:
        if self.shared_label is not None and what in SHARED_SERVICES:
            return self.shared_label
        return what

    def failed(self, what: str, exc: BaseException) -> None:
        """``what`` failed with ``exc``: log it if it was up until now."""
        what = self._service(what)
        if what not in self.down:
            self.down.add(what)
            logger.warning(
                "circuitbreaker: %s unreachable (%s: %s); deciding on this process's own "
                "counts until it returns",
                what,
                type(exc).__name__,
                exc,
            )

    def recovered(self, what: str) -> None:
        """``what`` answered: log it if it was down until now."""
        if not self.down:
            return
        what = self._service(what)
        if what in self.down:
            self.down.discard(what)
            logger.warning("circuitbreaker: %s reachable again", what)

    def warn_once(self, topic: str, message: str, *args: Any) -> None:
        """Log ``message`` the first time ``topic`` comes up in this process."""
        if topic not in self.down:
            self.down.add(topic)
            logger.warning(message, *args)

    def error_once(self, topic: str, message: str, *args: Any) -> None:
        """Log ``message`` as an error the first time ``topic`` comes up in this process,
        or the first time again after :meth:`settled`."""
        if topic not in self.down:
            self.down.add(topic)
            logger.error(message, *args)

    def settled(self, topic: str) -> None:
        """``topic`` (of :meth:`error_once`) is over: log it again if it comes back."""
        if self.down:
            self.down.discard(topic)

    def guard(self, what: str, default: T, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, or ``default`` when it raises (logged once per outage of ``what``)."""
        try:
            result = fn(*args)
        except Exception as exc:  # any backend error: the breaker must not fail the call
            self.failed(what, exc)
            return default
        self.recovered(what)
        return result
