"""In-process observers of guarded calls (used by the Prometheus metrics).

An observer is called as ``observer(circuit, kind, duration)`` after every guarded call,
with ``kind`` one of ``success``, ``failure``, ``ignored`` or ``rejected`` (``duration`` is
None for rejections). Observers run on the hot path: they must be in-memory and fast,
and never do I/O. With no observer registered a call pays one list truth test.
"""

from __future__ import annotations

from collections.abc import Callable

Observer = Callable[[str, str, "float | None"], None]

OBSERVERS: list[Observer] = []


def register(observer: Observer) -> Observer:
    """Add ``observer`` (once); returns it so this works as a decorator."""
    if observer not in OBSERVERS:
        OBSERVERS.append(observer)
    return observer


def unregister(observer: Observer) -> None:
    """Remove ``observer`` if registered."""
    if observer in OBSERVERS:
        OBSERVERS.remove(observer)


def notify(circuit: str, kind: str, duration: float | None) -> None:
    """Tell every observer about one call; an observer's error never reaches the caller."""
    for observer in list(OBSERVERS):
        try:
            observer(circuit, kind, duration)
        except Exception:  # pragma: no cover - defensive: metrics must not break calls
            import logging

            logging.getLogger("circuitbreaker_app").exception("call observer %r failed", observer)
