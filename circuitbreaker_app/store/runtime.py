"""One circuit as this process sees it: the hot path reads this class's plain attributes.

``Breaker.call`` reads the plan :meth:`CircuitRuntime._plan_fast_paths` prepares (one
clock reading, no method call, ``pending += 1`` for a closed success); everything else
(state classes of ``core/``, the shared window, the store's I/O) sits behind it.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any

from circuitbreaker_app.core import (
    CircuitOpenError,
    CircuitStatus,
    Outcome,
    Permit,
    Snapshot,
    State,
    behaviour_for,
)
from circuitbreaker_app.core.states import Closed, settle
from circuitbreaker_app.store.io_forecast import IoForecast
from circuitbreaker_app.store.keys import generation_prefix, state_key, tally_key
from circuitbreaker_app.store.recording import WindowWrites
from circuitbreaker_app.store.tally import CallTally
from circuitbreaker_app.store.trials import TrialPermits
from circuitbreaker_app.store.unsaved import UnsavedTransitions
from circuitbreaker_app.store.windows import SharedWindow, window_for

if TYPE_CHECKING:
    from circuitbreaker_app.store.entry import CircuitEntry
    from circuitbreaker_app.store.registry import CircuitStore

#: States in which a call is admitted with no shared permit.
FREE_STATES = frozenset({State.CLOSED, State.FORCED_CLOSED, State.DISABLED})
#: Seconds a process that was refused a trial (every half-open permit taken, or a probe
#: deciding) rejects calls without I/O before it re-reads the shared state: the fleet
#: learns of the trial's outcome within this, not within ``STATE_TTL`` (DESIGN §3 asks
#: for 0.2 s). Costs one refresh and one permit attempt per interval per waiting process.
RECHECK_INTERVAL = 0.1


class CircuitRuntime(WindowWrites, CallTally, TrialPermits, IoForecast):
    """One circuit as this process sees it; the store's :class:`CircuitContext` (its calls
    by outcome not yet shared are ``tally.py``'s, its trial permits ``trials.py``'s, the
    async caller's "will this touch I/O?" ``io_forecast.py``'s).

    The snapshot (``status``, ``config``) is refreshed from the cache when older than
    ``STATE_TTL``. Successes are counted in memory and flushed with the next failure or
    at most once per ``STATE_TTL``; failures and slow calls are added to the shared
    window at once (one ``incr``).

    Batching never changes a decision (DESIGN §3): in a time window the snapshot is
    trusted only until the bucket its batched successes belong to closes (so they are
    written to the second they happened in, and leave the window on time), and the
    totals a decision or an operator reads are those the window will hold once the batch
    is written (:meth:`SharedWindow.estimate_with`), never more than ``window_size``
    calls in a count window.

    The store uses the methods below "what the store does with a runtime" and
    :attr:`unsaved`; the underscored attributes are the hot path's (here and in Breaker).
    """

    # Every attribute is a slot: a guarded call's reads are then fixed offsets
    # (LOAD_ATTR_SLOT). With a ``__dict__`` this class's ~40 attributes are more than
    # CPython keeps inline (30), and each read is a dict lookup. The mixins declare no
    # attributes of their own (``__slots__ = ()``); a new attribute must be added here.
    __slots__ = tuple(
        # read by every guarded call (breaker.py, async_calls.py)
        "clock admit_until reject_until count_token batch_token pending rejected"
        " reject_state retry_clock _slow_after"
        # the rest, and __weakref__ (store.created is a WeakSet)
        " _closed _dated _disabled _entry _flush_at _free _fresh_until _generation _pended"
        " _pending_at _recheck_at _refresh_lock _refresher _status _success_can_open _written"
        " circuit_id config failures ignored label name shared_tally slow state_key store"
        " successes totals_key unsaved watch window"
        " __weakref__".split()
    )

    def __init__(self, store: CircuitStore, name: str, entry: CircuitEntry) -> None:
        self.store = store
        store.created.add(self)
        self.name = name
        self.state_key = state_key(name)
        #: The key of the circuit's fleet-wide call totals (``keys.tally_key``).
        self.totals_key = tally_key(name)
        #: How metrics name this circuit (one shared label for isolated breakers).
        self.label = name
        #: Successes (fast, not slow) not yet flushed; ``Breaker.call`` adds to it. Without
        #: a lock: under thread races a success may go uncounted, which only nudges the
        #: failure rate up.
        self.pending = 0
        #: Calls by outcome not yet in the fleet's totals (see :class:`CallTally`).
        self.successes = 0
        self.failures = 0
        self.ignored = 0
        self.rejected = 0.0  # a float: see CallTally
        self.slow = 0
        self._pended = False  # did record() count the current success in ``pending``?
        #: The fleet's call totals as the last status read saw them (``refresh_rows``).
        self.shared_tally: dict[str, int] = {}
        self._written: set[str] = set()  # counter keys this process knows exist
        #: Transitions made while the database was unreachable, oldest first: applied here
        #: at once, written (in order, each a compare-and-set) when the database returns.
        self.unsaved = UnsavedTransitions()
        #: The clock snapshots and the fast-path plan are timed with (the store's).
        self.clock = store.clock
        self._success_can_open = False
        self._fresh_until = 0.0
        #: Until then (on :attr:`clock`) a refused trial is not tried again (see
        #: :data:`RECHECK_INTERVAL`); -inf when this process is not waiting.
        self._recheck_at = -math.inf
        #: Shared time (:meth:`now`) at or after which the batched successes were made;
        #: they all fall in the window slot holding this time.
        self._pending_at = store.now()
        #: Held while a thread re-reads this snapshot (``StoreRefresh.refresh``): the other
        #: threads wait for its answer. ``_refresher`` is that thread's ident (None: none).
        self._refresh_lock = threading.Lock()
        self._refresher: int | None = None
        self.adopt(entry)
        self._stale_at = store.clock() + store.ttl
        self._flush_at = self._stale_at

    # -- the plan Breaker.call follows without calling us ---------------------------------
    @property
    def _stale_at(self) -> float:
        """When (on :attr:`clock`) this snapshot stops being trusted."""
        return self._fresh_until

    @_stale_at.setter
    def _stale_at(self, value: float) -> None:
        now = self.store.now()
        if not self.pending:
            self._pending_at = now
        # Successes batched from now on belong to the slot of ``_pending_at``: stop trusting
        # the plan when that slot closes, so the next call writes them (time windows).
        self._fresh_until = min(value, self.clock() + self.window.slot_left(self._pending_at, now))
        self._plan_fast_paths()

    def _plan_fast_paths(self) -> None:
        """Precompute what a guarded call needs, as plain attributes (DESIGN §4's hot path:
        ``Breaker.call`` reads them with one clock reading and no method call).

        * ``admit_until``: until then a call may pass without a permit (a fresh snapshot in
          CLOSED, FORCED_CLOSED or DISABLED);
        * ``count_token``: the generation when such a call's plain success only needs
          ``pending += 1`` (no slow-call timing, successes cannot open the circuit, not
          DISABLED), else -1; in a time window only if the call ends before ``admit_until``
          (a success counts in the slot it ended in: :meth:`batches`);
        * ``batch_token``: ``count_token`` where batches have no slot (count windows), else -1;
        * ``reject_until``: until then a call is rejected outright (a fresh snapshot in
          FORCED_OPEN, OPEN before ``retry_at``, or a half-open period whose trials are
          taken until the next re-read), with ``reject_state``, and ``retry_clock``: when
          (on :attr:`clock`) calls may pass again, None if unknown.

        In OPEN the snapshot is trusted only until ``retry_at``: the first call after it
        re-reads the shared state, so a process that another has beaten to HALF_OPEN
        learns so from the cache instead of losing a compare-and-set on the database.

        An operator state with an end (``forced_until``) is planned only up to that end:
        the first call after it takes :meth:`acquire`, which ends the state.
        """
        fresh = -math.inf if self.store.retired else self._fresh_until  # see reset_store()
        status = self._status
        ends = None
        if status.forced_until is not None:
            ends = self.clock() + (status.forced_until - self.store.now())
            fresh = min(fresh, ends)
        self.admit_until = fresh if self._free else -math.inf
        counts = not self._disabled and not self._success_can_open and self._slow_after is None
        self.count_token = self._generation if self._free and counts else -1
        self.batch_token = -1 if self._dated else self.count_token
        self.reject_state = status.state
        self.reject_until, self.retry_clock = -math.inf, None
        if status.state is State.FORCED_OPEN:
            self.reject_until = fresh
            self.retry_clock = ends
        elif status.state is State.OPEN and status.retry_at is not None:
            now = self.clock()
            self.retry_clock = now + (status.retry_at - self.store.now())
            if now < self.retry_clock < fresh:
                self._fresh_until = fresh = self.retry_clock
            self.reject_until = min(fresh, self.retry_clock)
        if self._recheck_at > self.reject_until:  # waiting out a trial: see acquire()
            self.reject_until = min(fresh, self._recheck_at)

    # -- what the store does with a runtime ------------------------------------------------
    @property
    def entry(self) -> CircuitEntry:
        """The shared entry this snapshot holds (as last adopted; never refreshes)."""
        return self._entry

    def adopt(self, entry: CircuitEntry) -> None:
        """Take ``entry`` as this process's snapshot of the circuit. A new generation, row
        or definition starts a window of its own (batched successes stay counted as calls)."""
        status, config = entry.status, entry.config
        previous = getattr(self, "_status", None)
        previous_id = getattr(self, "circuit_id", None)
        self.circuit_id: int = entry.circuit_id
        self._entry = entry
        if (
            previous is None
            or previous.generation != status.generation
            or previous_id != self.circuit_id  # deleted and created again: a new circuit
            or (config != getattr(self, "config", None))
        ):
            self.window: SharedWindow = window_for(
                generation_prefix(self.name, status.generation, circuit_id=self.circuit_id), config
            )
            self._dated = self.window.slot_left(0.0, 0.0) != math.inf
            self.successes += self.pending  # out of the window, but they were calls
            self.pending = 0
        self.config = config
        self._slow_after = config.slow_call_duration
        self._status = status
        #: What a write of this snapshot's window watches (see ``Counters.add``).
        self.watch = (self.state_key, status.generation, entry.circuit_id)
        self._recheck_at = -math.inf  # whatever we waited for, this is the news
        # Plain attributes for the fast path (enum hashing and lookups cost more).
        self._generation = status.generation
        self._free = status.state in FREE_STATES
        self._disabled = status.state is State.DISABLED
        self._closed = status.state is State.CLOSED
        self._watch(self.window.estimate(self.store.now()))

    def mark_fresh(self, until: float) -> None:
        """Trust this snapshot until ``until`` (on :attr:`clock`): it was just re-read."""
        self._stale_at = until

    def replan(self) -> None:
        """Plan the fast paths anew: the store retired (none) or revived."""
        self._plan_fast_paths()

    def mark_stale(self) -> None:
        """Re-read the shared state on the next call (e.g. the circuit was deleted)."""
        self._stale_at = 0.0

    def flush(self) -> Snapshot | None:
        """Write the batched successes to the shared window, and the calls not yet in the
        fleet's totals to them (one write each, only when there is something to write).

        Returns the window the batch made (None when nothing was batched): the caller
        judges it with :meth:`judge_flushed` once its snapshot is fresh."""
        written = self._push(Snapshot()) if self.pending else None
        tally = self.take_tally()  # e.g. rejections while open: nothing else to write
        if tally:
            self.store.add_tally(self, tally)
        return written

    def judge_flushed(self, written: Snapshot | None, window: SharedWindow) -> None:
        """Open the circuit if the batch :meth:`flush` wrote made ``window`` say so.

        Batched successes are recorded outcomes too (DESIGN §3: the circuit opens "after
        each recorded outcome"): written into a window that other processes' failures
        filled meanwhile, they may bring it to ``minimum_calls`` at the threshold (F F by
        one process, S S batched by another). Only while CLOSED and in the period of the
        write (``window``); the caller has just re-read the state."""
        if written is not None and self._closed and self.window is window:
            Closed.check_window(self, written)

    def absorb(self, values: dict[str, Any] | None, now: float) -> None:
        """Take the window's counters read at ``now`` (None: nothing was read) and note
        what the window's totals mean for the fast path."""
        if values is not None:
            self.window.absorb(values, now, settled=not self.pending)
        self._watch(self.window.estimate(now))

    def _watch(self, estimate: Snapshot) -> None:
        """Note whether more successes could open the circuit (rates at the threshold)."""
        self._success_can_open = self._can_open(estimate)
        self._plan_fast_paths()

    # -- CircuitContext ------------------------------------------------------------------
    @property
    def status(self) -> CircuitStatus:
        if self.clock() >= self._fresh_until:  # what ``_stale_at`` reads, without a call
            # Stale: re-read, or wait for the thread already re-reading (its answer is
            # ours); inside that thread's own refresh, the snapshot it is re-reading.
            self.store.refresh(self, if_stale=True)
        return self._status

    def now(self) -> float:
        return self.store.now()

    # -- the fast path (no allocation, no I/O) ------------------------------------------
    def batches(self, token: int) -> bool:
        """True when a success admitted with ``token`` may join the batch as it ends (time
        windows: before ``admit_until``); else it is settled (a permit). Inlined in Breaker."""
        return self.batch_token == token or (
            self.count_token == token and self.clock() < self.admit_until
        )

    def fast_admit(self) -> int:
        """The generation when a call may pass without I/O or a permit, else -1.

        True for a fresh snapshot in CLOSED, FORCED_CLOSED or DISABLED; everything else
        (a stale snapshot, OPEN, HALF_OPEN, FORCED_OPEN) takes :meth:`acquire`.
        """
        if self.clock() < self.admit_until:
            return self._generation
        return -1

    def fast_success(self, generation: int, duration: float) -> bool:
        """Count a success admitted by :meth:`fast_admit`; False means "use on_result()".

        Declines when the circuit moved on, the call was slow, more successes could
        open the circuit (so :meth:`record` must evaluate the window exactly), or it ended
        after the plan in a time window (:meth:`batches`).
        """
        if generation != self._generation or self._success_can_open:
            return False
        slow_after = self._slow_after
        if slow_after is not None and duration >= slow_after:
            return False
        if self._disabled:
            self.successes += 1
            return True
        if self._dated and self.clock() >= self.admit_until:
            return False  # ended after the batch's slot (or a stale snapshot): settle it
        self.pending += 1
        if self.clock() >= self._flush_at:
            snapshot = self._push(Snapshot())
            if self._closed:
                Closed.check_window(self, snapshot)
        return True

    def transition(self, new: CircuitStatus, reason: str, snapshot: Snapshot | None) -> bool:
        return self.store.persist_transition(self, new, reason, snapshot)

    # -- used by Breaker ---------------------------------------------------------------
    @property
    def retry_after(self) -> float | None:
        return self.status.retry_after(self.now())

    def acquire(self) -> Permit:
        """Admit a call or raise CircuitOpenError.

        Refused a trial (HALF_OPEN with every permit taken, or OPEN past ``retry_at``
        while a probe decides), the process rejects calls without I/O for
        :data:`RECHECK_INTERVAL` and then re-reads the state, so it admits calls at most
        that long after the trial closed the circuit.
        """
        if self.clock() < self._recheck_at:
            raise CircuitOpenError(self.name, self._status.state, None)
        try:
            return behaviour_for(self.status.state).acquire(self)
        except CircuitOpenError as exc:
            if exc.state is State.HALF_OPEN or (exc.state is State.OPEN and not exc.retry_after):
                self._recheck_soon()
            raise

    def _recheck_soon(self) -> None:
        """Reject without I/O until the next re-read, due in :data:`RECHECK_INTERVAL`."""
        at = self.clock() + min(RECHECK_INTERVAL, self.store.ttl)
        self._recheck_at = at
        self._fresh_until = min(self._fresh_until, at)
        self._plan_fast_paths()

    def on_result(self, permit: Permit, outcome: Outcome, duration: float) -> None:
        """Report the outcome of a call admitted by :meth:`acquire`."""
        # Counted before settle(), so a failure's write carries its own count.
        if outcome is Outcome.FAILURE:
            self.failures += 1
        elif outcome is Outcome.IGNORED:
            self.ignored += 1
        if duration and self.config.is_slow(duration):
            self.slow += 1
        self._pended = False
        settle(self, permit, outcome, duration)
        if outcome is Outcome.SUCCESS and not self._pended:  # else it is in ``pending``
            self.successes += 1

    def refresh(self) -> None:
        """Re-read the shared state (and window buckets) from the cache."""
        self.store.refresh(self)

    def after_fork(self) -> None:
        """In a forked child: a refresh in flight in the parent (its lock held by a thread
        the child does not have) is not waited for."""
        self._refresh_lock = threading.Lock()
        self._refresher = None

    def snapshot(self) -> Snapshot:
        """The window the decision uses: its totals as this process last saw them, with
        this process's batched successes in the place they will take."""
        return self.window.estimate_with(self.pending, self._pending_at, self.now())
