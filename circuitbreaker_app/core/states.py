"""States, allowed transitions, and one small class per state (Resilience4j's shape).

A state class holds no data: it reads and changes a circuit only through a
:class:`CircuitContext`, which ``circuitbreaker_app.store``'s runtime implements for a
fleet sharing a cache and a database: production runs these classes, and the tests drive
them through it (``tests/test_semantics.py``, ``tests/test_model_based.py``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Protocol

from circuitbreaker_app.core.errors import CircuitOpenError, IllegalTransitionError
from circuitbreaker_app.core.windows import Snapshot, evaluate

if TYPE_CHECKING:
    from circuitbreaker_app.core.config import CircuitConfig


class State(enum.StrEnum):
    """The state of a circuit (a ``str`` so it stores and serialises as its value)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    FORCED_CLOSED = "forced_closed"
    DISABLED = "disabled"

    @property
    def is_operator_state(self) -> bool:
        """True for states only an operator sets (and only ``reset`` leaves)."""
        return self in OPERATOR_STATES


OPERATOR_STATES = frozenset({State.FORCED_OPEN, State.FORCED_CLOSED, State.DISABLED})

#: Where an operator state goes by itself when its ``forced_until`` passes: a forced-open
#: circuit is tried again (HALF_OPEN, as after a normal wait), the others return to CLOSED.
EXPIRY_TARGETS: dict[State, State] = {
    State.FORCED_OPEN: State.HALF_OPEN,
    State.FORCED_CLOSED: State.CLOSED,
    State.DISABLED: State.CLOSED,
}

#: Moves the breaker makes by itself. Operators may move any state to an operator
#: state or (``reset``) to CLOSED; everything else raises IllegalTransitionError.
AUTOMATIC_TRANSITIONS = frozenset(
    {
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.OPEN),
        (State.HALF_OPEN, State.CLOSED),
        *EXPIRY_TARGETS.items(),
    }
)


def check_transition(old: State, new: State, *, operator: bool = False) -> None:
    """Raise IllegalTransitionError unless ``old → new`` is allowed."""
    if operator and (new in OPERATOR_STATES or new is State.CLOSED):
        return
    if (old, new) not in AUTOMATIC_TRANSITIONS:
        who = "an operator" if operator else "the breaker"
        raise IllegalTransitionError(f"{who} cannot move a circuit from {old} to {new}")


class Outcome(enum.StrEnum):
    """What a guarded call told us about the dependency."""

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class CircuitStatus:
    """The durable part of a circuit's state, shared by every process.

    Times are readings of the context's clock (seconds); ``generation`` grows by one
    with every transition and is what compare-and-set operations compare.
    """

    state: State = State.CLOSED
    generation: int = 0
    open_count: int = 0
    opened_at: float | None = None
    retry_at: float | None = None
    changed_at: float | None = None
    #: When an operator state ends by itself (None: until reset). Always None otherwise.
    forced_until: float | None = None

    def moved_to(
        self, new: State, now: float, config: CircuitConfig, until: float | None = None
    ) -> CircuitStatus:
        """The status after a transition to ``new`` at ``now`` (no legality check).

        ``until`` bounds an operator state (see :meth:`forced_expired`); other states
        ignore it.
        """
        forced_until = until if new in OPERATOR_STATES else None
        # A transition never dates from before the one it follows: the shared clock is
        # re-synchronised now and then and may step back a little, and the audit log
        # is read in time order.
        changed_at = now if self.changed_at is None else max(now, self.changed_at)
        base = replace(
            self,
            state=new,
            generation=self.generation + 1,
            changed_at=changed_at,
            forced_until=forced_until,
        )
        if new is State.OPEN:
            open_count = self.open_count + 1
            return replace(
                base,
                open_count=open_count,
                opened_at=now,
                retry_at=now + config.wait_for(open_count),
            )
        if new is State.HALF_OPEN:
            return replace(base, retry_at=None)
        if new is State.CLOSED:
            return replace(base, open_count=0, opened_at=None, retry_at=None)
        # Operator states keep open_count (so a later reset is explicit) but no deadline.
        return replace(base, opened_at=now if new is State.FORCED_OPEN else None, retry_at=None)

    def retry_after(self, now: float) -> float | None:
        """Seconds until calls may pass again, or None when unknown or not applicable."""
        if self.state is State.OPEN and self.retry_at is not None:
            return max(0.0, self.retry_at - now)
        if self.state is State.FORCED_OPEN and self.forced_until is not None:
            return max(0.0, self.forced_until - now)
        return None

    def forced_expired(self, now: float) -> bool:
        """True when an operator state with an end (``forced_until``) has reached it."""
        return (
            self.forced_until is not None
            and now >= self.forced_until
            and (self.state in OPERATOR_STATES)
        )


@dataclass(slots=True, unsafe_hash=True)  # a value, not frozen: see core.windows.Snapshot
class Permit:
    """Admission of one call; hand it back with the call's outcome."""

    state: State
    generation: int
    trial_slot: int | None = None
    #: Identifies this lease of the slot, so a late report cannot free a re-leased slot.
    trial_token: int = 0


class CircuitContext(Protocol):
    """Everything a state class may read or change about one circuit."""

    name: str
    config: CircuitConfig

    @property
    def status(self) -> CircuitStatus: ...

    def now(self) -> float:
        """The clock that ``status`` times are read from."""

    def record(self, failed: bool, slow: bool) -> Snapshot:
        """Add an outcome to the current window and return the window's totals."""

    def acquire_trial(self) -> tuple[int, int] | None:
        """Lease a half-open trial slot (shared by all processes): ``(slot, token)``, or
        None when every slot is leased."""

    def complete_trial(self, slot: int, token: int, succeeded: bool) -> int:
        """Finish a trial; return how many trials of this half-open period have succeeded.

        The slot is freed only if ``token`` still holds its lease.
        """

    def transition(self, new: CircuitStatus, reason: str, snapshot: Snapshot | None) -> bool:
        """Compare-and-set from the current generation; False when someone else moved first."""


class CircuitStateBehaviour:
    """How a circuit in one state admits calls and reacts to their outcomes."""

    state: ClassVar[State]

    def acquire(self, ctx: CircuitContext) -> Permit:
        raise NotImplementedError("subclasses of CircuitStateBehaviour must provide acquire()")

    def on_result(self, ctx: CircuitContext, permit: Permit, failed: bool, slow: bool) -> None:
        """Take the outcome of a call admitted in this state (ignored outcomes never arrive)."""

    def on_ignored(self, ctx: CircuitContext, permit: Permit) -> None:
        """A call admitted in this state ended with an ignored exception."""

    def reject(self, ctx: CircuitContext, retry_after: float | None) -> CircuitOpenError:
        return CircuitOpenError(ctx.name, self.state, retry_after)


def _move(
    ctx: CircuitContext, expected: State, new: State, reason: str, snapshot: Snapshot | None = None
) -> bool:
    """Move from ``expected`` to ``new``; a no-op when the circuit already left ``expected``.

    Reading ``ctx.status`` may refresh a stale snapshot and find that another process has
    moved the circuit already: then there is nothing left to do (and no illegal move).
    """
    status = ctx.status
    if status.state is not expected:
        return False
    check_transition(status.state, new)
    return ctx.transition(status.moved_to(new, ctx.now(), ctx.config), reason, snapshot)


class Closed(CircuitStateBehaviour):
    """Admit every call; open when the window says so."""

    state = State.CLOSED

    def acquire(self, ctx: CircuitContext) -> Permit:
        return Permit(State.CLOSED, ctx.status.generation)

    def on_result(self, ctx: CircuitContext, permit: Permit, failed: bool, slow: bool) -> None:
        self.check_window(ctx, ctx.record(failed, slow))

    @staticmethod
    def check_window(ctx: CircuitContext, snapshot: Snapshot) -> None:
        """Open the circuit if ``snapshot`` (the window after an outcome) says so."""
        result = evaluate(snapshot, ctx.config)
        if result.opens:
            _move(ctx, State.CLOSED, State.OPEN, result.value, snapshot)


class Open(CircuitStateBehaviour):
    """Reject every call until ``retry_at``; then (live trials) move to HALF_OPEN."""

    state = State.OPEN

    def acquire(self, ctx: CircuitContext) -> Permit:
        status = ctx.status
        now = ctx.now()
        retry_after = status.retry_after(now)
        if retry_after is None or retry_after > 0:
            raise self.reject(ctx, retry_after)
        if ctx.config.trial_mode != "live":
            # Probe mode: only the beat task's probe may try the dependency.
            raise self.reject(ctx, None)
        _move(ctx, State.OPEN, State.HALF_OPEN, "wait_elapsed")
        # Whoever won the compare-and-set, the circuit is now past OPEN (or was moved by
        # someone else): let the current state decide.
        return behaviour_for(ctx.status.state).acquire(ctx)


class HalfOpen(CircuitStateBehaviour):
    """Admit at most ``half_open_max_calls`` trials across all processes."""

    state = State.HALF_OPEN

    def acquire(self, ctx: CircuitContext) -> Permit:
        if ctx.config.trial_mode != "live":
            raise self.reject(ctx, None)
        lease = ctx.acquire_trial()
        if lease is None:
            raise self.reject(ctx, None)
        return Permit(State.HALF_OPEN, ctx.status.generation, *lease)

    def on_result(self, ctx: CircuitContext, permit: Permit, failed: bool, slow: bool) -> None:
        assert permit.trial_slot is not None
        # A trial that was too slow tells us the dependency has not recovered either.
        bad = failed or slow
        if bad:
            # The failed trial keeps its permit: the circuit reopens, and a process that has
            # not seen that yet must not start another trial in this half-open period.
            _move(ctx, State.HALF_OPEN, State.OPEN, "trial_failed" if failed else "trial_slow")
            return
        succeeded = ctx.complete_trial(permit.trial_slot, permit.trial_token, True)
        if succeeded >= ctx.config.half_open_max_calls:
            _move(ctx, State.HALF_OPEN, State.CLOSED, "trials_succeeded")

    def on_ignored(self, ctx: CircuitContext, permit: Permit) -> None:
        assert permit.trial_slot is not None
        ctx.complete_trial(permit.trial_slot, permit.trial_token, False)


def end_forced(ctx: CircuitContext) -> bool:
    """Leave an operator state whose ``forced_until`` has passed (one compare-and-set);
    True when the circuit is no longer in it (moved here, or by someone else)."""
    status = ctx.status
    if not status.forced_expired(ctx.now()):
        return False
    _move(ctx, status.state, EXPIRY_TARGETS[status.state], "forced_until_elapsed")
    return True


class ForcedOpen(CircuitStateBehaviour):
    """Reject everything until an operator resets the circuit, or its ``forced_until``."""

    state = State.FORCED_OPEN

    def acquire(self, ctx: CircuitContext) -> Permit:
        if end_forced(ctx):
            return behaviour_for(ctx.status.state).acquire(ctx)
        raise self.reject(ctx, ctx.status.retry_after(ctx.now()))


class ForcedClosed(CircuitStateBehaviour):
    """Admit everything and keep metrics, but never trip."""

    state = State.FORCED_CLOSED

    def acquire(self, ctx: CircuitContext) -> Permit:
        if end_forced(ctx):
            return behaviour_for(ctx.status.state).acquire(ctx)
        return Permit(State.FORCED_CLOSED, ctx.status.generation)

    def on_result(self, ctx: CircuitContext, permit: Permit, failed: bool, slow: bool) -> None:
        ctx.record(failed, slow)


class Disabled(CircuitStateBehaviour):
    """Admit everything and record nothing."""

    state = State.DISABLED

    def acquire(self, ctx: CircuitContext) -> Permit:
        if end_forced(ctx):
            return behaviour_for(ctx.status.state).acquire(ctx)
        return Permit(State.DISABLED, ctx.status.generation)


_BEHAVIOURS: dict[State, CircuitStateBehaviour] = {
    cls.state: cls() for cls in (Closed, Open, HalfOpen, ForcedOpen, ForcedClosed, Disabled)
}


def behaviour_for(state: State) -> CircuitStateBehaviour:
    """The (stateless, shared) behaviour object of ``state``."""
    return _BEHAVIOURS[state]


def settle(ctx: CircuitContext, permit: Permit, outcome: Outcome, duration: float) -> None:
    """Feed a call's outcome to the state that admitted it.

    An outcome from an earlier generation is dropped: the circuit has moved on since
    the call was admitted, and that call says nothing about the new period.
    """
    if permit.generation != ctx.status.generation:
        return
    behaviour = behaviour_for(permit.state)
    if outcome is Outcome.IGNORED:
        behaviour.on_ignored(ctx, permit)
        return
    behaviour.on_result(ctx, permit, outcome is Outcome.FAILURE, ctx.config.is_slow(duration))
