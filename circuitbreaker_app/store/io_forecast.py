"""Whether a call's admission or its outcome may touch the cache or the database: what an
async caller asks before doing either on the event loop (DESIGN §1: ``acall`` never blocks
the loop), the async side of :class:`~circuitbreaker_app.store.runtime.CircuitRuntime`.

A question of its own, which the sync path never asks: a "no" lets ``acall`` stay on the
loop, a "yes" sends the work to a thread. It reads the runtime's plan and changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from circuitbreaker_app.core import CircuitStatus, Outcome, Permit, State

if TYPE_CHECKING:
    from circuitbreaker_app.core import CircuitConfig
    from circuitbreaker_app.store.registry import CircuitStore


class IoForecast:
    """``acquire_needs_io``/``result_needs_io``: a mixin of the runtime, reading its plan."""

    # No instance dict of its own: the attributes are CircuitRuntime's slots (hidden from
    # mypy, which would check this class's assignments against an empty tuple).
    if not TYPE_CHECKING:
        __slots__ = ()

    store: CircuitStore
    config: CircuitConfig
    _status: CircuitStatus
    _stale_at: float
    _recheck_at: float
    _flush_at: float
    _success_can_open: bool

    def now(self) -> float:
        raise NotImplementedError("CircuitRuntime provides now()")

    def acquire_needs_io(self) -> bool:
        """True when :meth:`acquire` may touch the cache or database (async callers)."""
        if self.store.clock() >= self._stale_at:
            return True
        status = self._status
        if self.store.clock() < self._recheck_at:
            return False  # waiting for the next re-read: rejected without I/O
        if status.state is State.HALF_OPEN or status.forced_expired(self.now()):
            return True
        return status.state is State.OPEN and (status.retry_after(self.now()) or 0) <= 0

    def result_needs_io(self, permit: Permit, outcome: Outcome, duration: float) -> bool:
        """True when :meth:`on_result` may touch the cache or database (async callers)."""
        if self.store.clock() >= self._stale_at:
            return True  # settle() reads ``status``, which refreshes a stale snapshot
        if outcome is Outcome.IGNORED and permit.trial_slot is None:
            return False
        if permit.state is State.DISABLED:
            return False
        if outcome is Outcome.FAILURE or permit.trial_slot is not None:
            return True
        if self.config.is_slow(duration) or self.store.clock() >= self._flush_at:
            return True
        return self._success_can_open
