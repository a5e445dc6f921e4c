"""Recording outcomes in the shared window: the write side of
:class:`~circuitbreaker_app.store.runtime.CircuitRuntime` (``record()`` for the state
classes, :meth:`WindowWrites.failed` for the commonest failure, the batched successes'
flush), one write to the store per call at most.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from circuitbreaker_app.core import CircuitConfig, Outcome, Permit, Snapshot, evaluate
from circuitbreaker_app.core.states import Closed

if TYPE_CHECKING:
    from circuitbreaker_app.core import CircuitStatus
    from circuitbreaker_app.store.registry import CircuitStore
    from circuitbreaker_app.store.windows import SharedWindow


class WindowWrites:
    """A mixin of the runtime: its calls' outcomes into :attr:`window`, through the store."""

    # No instance dict of its own: the attributes are CircuitRuntime's slots (hidden from
    # mypy, which would check this class's assignments against an empty tuple).
    if not TYPE_CHECKING:
        __slots__ = ()

    store: CircuitStore
    config: CircuitConfig
    window: SharedWindow
    pending: int
    successes: int
    failures: int
    slow: int
    _pended: bool
    _pending_at: float
    _flush_at: float
    _fresh_until: float
    _generation: int
    _closed: bool
    _slow_after: float | None
    _success_can_open: bool
    _written: set[str]

    clock: Callable[[], float]

    if TYPE_CHECKING:  # the runtime's and CallTally's (declared here for type checkers)

        @property
        def status(self) -> CircuitStatus: ...

        def now(self) -> float: ...

        def take_tally(self) -> dict[str, int] | None: ...

        def on_result(self, permit: Permit, outcome: Outcome, duration: float) -> None: ...

        def _plan_fast_paths(self) -> None: ...

    def failed(self, generation: int, duration: float) -> None:
        """A recorded failure of a call admitted without a permit at ``generation`` (the
        ``count_token`` or :meth:`fast_admit` it saw): ``on_result(Permit(status.state,
        generation), FAILURE, duration)``, done here for the commonest failure (CLOSED,
        still this generation, a fresh snapshot): the window write and the threshold
        check, with no permit, state class or outcome in between."""
        clock = self.clock()
        if generation != self._generation or not self._closed or clock >= self._fresh_until:
            self.on_result(Permit(self.status.state, generation), Outcome.FAILURE, duration)
            return
        self.failures += 1  # counted before the write, so a failure's write carries it
        slow = 0
        if duration and self._slow_after is not None and duration >= self._slow_after:
            self.slow += 1
            slow = 1
        if self.pending:
            snapshot = self._push(Snapshot(1, 1, slow))
        else:  # _push() with nothing batched
            store = self.store
            self._pending_at = now = store.now()
            self._flush_at = clock + store.ttl
            tally = self.take_tally() if store.counters.tally_in_add else None
            snapshot = self._write(self.window.failure(slow, now), now, tally)
        if snapshot.calls >= self.config.minimum_calls:  # else it cannot open (evaluate())
            Closed.check_window(self, snapshot)  # type: ignore[arg-type]

    def record(self, failed: bool, slow: bool) -> Snapshot:
        if failed or slow:
            return self._push(Snapshot(1, int(failed), int(slow)))
        self.pending += 1
        self._pended = True
        if self.clock() >= self._flush_at:
            return self._push(Snapshot())
        estimate = self.window.estimate_with(self.pending, self._pending_at, self.now())
        if evaluate(estimate, self.config).opens:
            # Our own successes could tip the window (S F F F S): check the real totals.
            return self._push(Snapshot())
        return estimate

    def _push(self, outcome: Snapshot) -> Snapshot:
        """Add pending successes, then ``outcome``, to the shared window: one round trip."""
        pending, self.pending = self.pending, 0
        self.successes += pending
        store = self.store
        now = store.now()
        at, self._pending_at = self._pending_at, now
        self._flush_at = self.clock() + store.ttl
        if pending and self.window.slot_left(at, now) <= 0:
            # Batched in a slot that has closed: written there (if still in the window),
            # not with ``outcome``, so they leave the window when they would have.
            if self.window.holds(at, now):
                generation = self._generation
                self._write(self.window.change(Snapshot(), pending, at), now)
                if self._generation != generation:
                    return self.window.estimate(now)  # the circuit moved on meanwhile
            pending = 0
        if not (pending or outcome.calls):
            return self.window.estimate(now)
        # The calls by outcome ride along when the backend adds them in the same round trip
        # (Redis); elsewhere with the periodic flush only, so a failure stays one write.
        tally = None
        if not outcome.calls or store.counters.tally_in_add:
            tally = self.take_tally()
        return self._write(self.window.change(outcome, pending, now), now, tally)

    def _write(self, change: Any, now: float, tally: dict[str, int] | None = None) -> Snapshot:
        """Send one change to the shared window; return the window's totals after it."""
        generation = self._generation
        key = change.key
        written = self._written
        value = self.store.add_outcome(self, change, key in written, tally)  # type: ignore[arg-type]
        if self._generation != generation:
            # The same round trip told us another process moved the circuit on: these
            # counts belong to a period that is over, and must not trip the new one.
            return self.window.estimate(now)
        if value is not None:
            if key not in written:
                if len(written) > 64:
                    written.clear()
                written.add(key)
            snapshot = self.window.added(change, value, now)
        else:  # shared store unreachable: decide on what this process knows
            snapshot = self.window.add_locally(change, now)
        # The plan changes only with this (the snapshot and window are the same):
        # _can_open(), inlined (a failure's one write comes this way).
        config = self.config
        calls = snapshot.calls or 1
        failures, slow = snapshot.failures, snapshot.slow
        can_open = (failures > 0 and failures * 100 >= config.failure_rate_threshold * calls) or (
            slow > 0
            and config.slow_call_duration is not None
            and slow * 100 >= config.slow_call_rate_threshold * calls
        )
        if can_open is not self._success_can_open:
            self._success_can_open = can_open
            self._plan_fast_paths()
        return snapshot

    def _can_open(self, estimate: Snapshot) -> bool:
        """True when more successes could open the circuit (rates at the threshold)."""
        config = self.config
        calls = estimate.calls or 1
        failures, slow = estimate.failures, estimate.slow
        return (failures > 0 and failures * 100 >= config.failure_rate_threshold * calls) or (
            slow > 0
            and config.slow_call_duration is not None
            and slow * 100 >= config.slow_call_rate_threshold * calls
        )
