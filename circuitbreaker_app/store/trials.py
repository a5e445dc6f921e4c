"""Half-open trial permits shared by the fleet (DESIGN §3: at most ``half_open_max_calls``
trials across all processes), the trial side of :class:`~circuitbreaker_app.store.runtime.
CircuitRuntime`.

A permit is a claim on one of the period's slots holding a random token, leased for
``trial_lease`` seconds so that a trial whose process died frees its slot; a successful
trial leaves a mark, and the marks of a period are what closes the circuit.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from circuitbreaker_app.store.keys import generation_prefix

if TYPE_CHECKING:
    from circuitbreaker_app.core import CircuitConfig
    from circuitbreaker_app.store.entry import CircuitEntry
    from circuitbreaker_app.store.registry import CircuitStore

#: Seconds a successful trial's mark lives (far longer than any half-open period).
TRIAL_SUCCESS_TTL = 86_400


class TrialPermits:
    """``acquire_trial``/``complete_trial`` of the core's ``CircuitContext``, on the
    shared counters of the period (the circuit row's current generation)."""

    # No instance dict of its own: the attributes are CircuitRuntime's slots (hidden from
    # mypy, which would check this class's assignments against an empty tuple).
    if not TYPE_CHECKING:
        __slots__ = ()

    store: CircuitStore
    name: str
    config: CircuitConfig
    #: Until then a process refused a trial rejects without I/O (the runtime's).
    _recheck_at: float

    if TYPE_CHECKING:  # the runtime's (declared here for type checkers)

        def _plan_fast_paths(self) -> None: ...

    @property
    def entry(self) -> CircuitEntry:
        raise NotImplementedError("CircuitRuntime provides entry")

    def _trial_prefix(self) -> str:
        entry = self.entry
        return generation_prefix(self.name, entry.generation, circuit_id=entry.circuit_id)

    def acquire_trial(self) -> tuple[int, int] | None:
        """A free trial slot and the token claiming it, or None when all are taken."""
        prefix = self._trial_prefix()
        token = random.getrandbits(62) or 1
        for slot in range(self.config.half_open_max_calls):
            key = f"{prefix}/trial{slot}"
            if self.store.counter_claim(key, self.config.trial_lease, token):
                return slot, token
        return None

    def complete_trial(self, slot: int, token: int, succeeded: bool) -> int:
        """Free a failed trial's slot, or mark a success; return the period's successes."""
        prefix = self._trial_prefix()
        if not succeeded:
            self.store.counter_release(f"{prefix}/trial{slot}", token)
            if self._recheck_at != -math.inf:
                # Refused a trial meanwhile: this process freed the slot itself, so it need
                # not wait for a re-read to learn that a trial may start again.
                self._recheck_at = -math.inf
                self._plan_fast_paths()
            return 0
        self.store.counter_claim(f"{prefix}/ok{slot}", TRIAL_SUCCESS_TTL)
        keys = [f"{prefix}/ok{i}" for i in range(self.config.half_open_max_calls)]
        # Only marks this code wrote count (1): anything else at those keys is no success.
        return sum(value == 1 for value in self.store.counter_get_many(keys).values())
