"""What the peer scenario tests (``tests/test_peer_*.py``) share: a fake-clocked store
whose clock also times the guarded calls, guarded functions that take time on it, and
short ways to call, read the window and read the audit log.

Every scenario drives real ``breaker()`` handles on the configured backend and never
sleeps: time passes only when a test (or a guarded function) advances the fake clock.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from circuitbreaker_app import breaker
from circuitbreaker_app.core import FakeClock, Snapshot
from circuitbreaker_app.models import CircuitEvent
from tests.helpers import FakeStore

#: The modules that time a guarded call (their ``perf_counter``).
DURATION_MODULES = [
    importlib.import_module(f"circuitbreaker_app.{name}")
    for name in ("breaker", "call_rules", "async_calls")
]

#: A whole second: buckets of a time window start at whole seconds.
START = 1_000_000.0


def fake_store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    """This process's store on a fake clock that also measures call durations."""
    clock = FakeClock(START)
    for module in DURATION_MODULES:  # where a guarded call's duration is measured
        monkeypatch.setattr(module, "perf_counter", clock)
    return FakeStore(clock).install()


def taking(
    fake: FakeStore, seconds: float, error: BaseException | None = None
) -> Callable[[], str]:
    """A guarded function that takes ``seconds`` (on the fake clock), then fails or not."""

    def call() -> str:
        fake.advance(seconds)
        if error is not None:
            raise error
        return "ok"

    return call


def succeed(fake: FakeStore, name: str, seconds: float = 0.0, **options: Any) -> None:
    assert breaker(name, **options).call(taking(fake, seconds)) == "ok"


def fail(fake: FakeStore, name: str, seconds: float = 0.0, **options: Any) -> None:
    with pytest.raises(ConnectionError):
        breaker(name, **options).call(taking(fake, seconds, ConnectionError("down")))


def window(fake: FakeStore, name: str) -> Snapshot:
    """The window as this process reports it (what the status endpoint shows)."""
    return fake.runtime(name).snapshot()


def reasons(name: str) -> list[tuple[str, str, str]]:
    """The circuit's audit log: (from, to, reason), oldest first."""
    events = CircuitEvent.objects.filter(circuit__name=name).order_by("id")
    return [(e.from_state, e.to_state, e.reason) for e in events]


def live(name: str) -> Any:
    """The circuit as the status endpoint reports it now (a ``LiveStatus``: state,
    ``retry_after``, the window, ``at_trip``, calls rejected by the fleet)."""
    from circuitbreaker_app.live import live_statuses, with_trip
    from circuitbreaker_app.models import Circuit

    (status,) = live_statuses(with_trip(Circuit.objects.filter(name=name)))
    return status


def tripped(fake: FakeStore, name: str = "payments", **definition: Any) -> None:
    """Create ``name`` as a circuit that two failures open for 5 s (count window 2,
    minimum 2, 100 %; ``definition`` adds to it), open it, and let the wait run out: the
    next call is a half-open trial."""
    from circuitbreaker_app.models import Circuit

    Circuit.objects.create(
        name=name,
        **{
            "window_size": 2,
            "minimum_calls": 2,
            "failure_rate_threshold": 100,
            "wait_duration": 5,
            **definition,
        },
    )
    fail(fake, name)
    fail(fake, name)
    fake.advance(5)


def signalled_moves() -> Iterator[list[tuple[str, str]]]:
    """For a ``moves`` fixture: the ``state_changed`` signals sent while it is in use, as
    (old state, new state)."""
    from circuitbreaker_app.signals import state_changed

    sent: list[tuple[str, str]] = []

    def receiver(sender: Any, name: str, old_state: Any, new_state: Any, **kwargs: Any) -> None:
        sent.append((str(old_state), str(new_state)))

    state_changed.connect(receiver)
    try:
        yield sent
    finally:
        state_changed.disconnect(receiver)
