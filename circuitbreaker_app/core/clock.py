"""Clocks: every time read in the core goes through one, so tests never sleep."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of seconds as a float; only differences between readings matter."""

    def __call__(self) -> float: ...


class SystemClock:
    """The process's monotonic clock: immune to wall-clock jumps."""

    def __call__(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when a test says so."""

    def __init__(self, start: float = 1_000.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards, but advance() got {seconds!r}")
        self._now += seconds

    def set(self, now: float) -> None:
        """Jump to an absolute reading (used to line up with bucket boundaries)."""
        self._now = float(now)
