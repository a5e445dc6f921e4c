"""The counters contract every backend implements (see ``backends/__init__.py`` for the
factory that picks one), and the JSON helpers the shared values are stored with."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from circuitbreaker_app.store.windows import BucketAdd, CountAdd

if TYPE_CHECKING:
    from circuitbreaker_app.store.entry import CircuitEntry

#: What a write may watch: (state key, generation, circuit id) of the writer's snapshot.
Watch = tuple[str, int, int]


def decode(raw: Any) -> Any:
    """A stored JSON value, or None for anything that is not JSON (treat as missing)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError):  # not ours (e.g. written by another program)
        return None


def encode(value: Any) -> str:
    """Compact JSON for a stored value."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def whole_seconds(ttl: float) -> int:
    """A TTL as Django's cache backends take it (they truncate: Redis 0.3 → "expire now")."""
    return max(1, math.ceil(ttl))


#: The outcomes a circuit's fleet-wide call totals count (``circuitbreaker_calls_total``);
#: ``slow`` overlaps the others.
TALLY_FIELDS = ("success", "failure", "ignored", "rejected", "slow")
#: Seconds a backend without a hash type keeps a total after its last write.
TALLY_TTL = 30 * 86_400

#: Calls by outcome not yet added to the fleet's totals: ``{field: count}``, nonzero only.
Tally = dict[str, int]


def tally_keys(keys: list[str]) -> list[str]:
    """The keys holding the call totals under each of ``keys``: one per outcome."""
    return [f"{key}/{field}" for key in keys for field in TALLY_FIELDS]


def tallies_in(keys: list[str], values: dict[str, Any]) -> dict[str, Tally]:
    """The call totals under each of ``keys`` found in ``values`` (a read of
    :func:`tally_keys`); anything that is not an integer counts as 0."""

    def number(value: Any) -> int:
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    return {
        key: {field: number(values.get(f"{key}/{field}")) for field in TALLY_FIELDS} for key in keys
    }


class Counters:
    """Atomic integers and claims shared by every process, with expiry."""

    #: True when the values live in the state cache, so refreshes read both at once.
    in_cache = False
    #: True when :meth:`add` writes a tally in the same round trip as the change.
    tally_in_add = False
    #: True when expired values stay until :meth:`purge_expired` drops them.
    needs_purge = False

    def incr(self, key: str, delta: int, ttl: float, known: bool = True) -> int:
        """Add ``delta`` (creating the key with ``ttl``) and return the new value.

        ``known=False`` says the caller has not seen the key yet, so creating it is
        tried first: either way a write costs one operation when nobody races us.
        """
        raise NotImplementedError("subclasses of Counters must provide incr()")

    def claim(self, key: str, ttl: float, value: int = 1) -> bool:
        """Take ``key`` (holding ``value``) for ``ttl`` seconds unless someone holds it."""
        raise NotImplementedError("subclasses of Counters must provide claim()")

    def release(self, key: str, value: int) -> None:
        """Free ``key`` if it still holds ``value`` (a late holder frees nothing)."""
        raise NotImplementedError("subclasses of Counters must provide release()")

    def add_count(self, change: CountAdd) -> list[int]:
        """Apply ``change`` to its count window in one atomic step; return the window."""
        raise NotImplementedError("subclasses of Counters must provide add_count()")

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        """Values of ``keys`` that exist: integers, and count windows as lists."""
        raise NotImplementedError("subclasses of Counters must provide get_many()")

    def delete(self, key: str) -> None:
        """Remove ``key`` (missing is fine)."""
        raise NotImplementedError("subclasses of Counters must provide delete()")

    def add(
        self,
        change: BucketAdd | CountAdd,
        known: bool,
        watch: Watch | None,
        tally: tuple[str, Tally] | None = None,
    ) -> tuple[Any, CircuitEntry | None]:
        """Record ``change`` in one round trip: ``(value, entry)``.

        ``value`` is the bucket's new integer or the count window after the change;
        ``entry`` is the circuit's shared state entry (a :class:`CircuitEntry`, decoded
        by the backend) when a backend can read it in the same round trip and it differs
        from ``watch`` (another process moved the circuit on), else None (also when what
        it read is not a well-formed entry). ``tally`` (key, counts) is added to the
        circuit's call totals: in the same round trip when :attr:`tally_in_add`, else with
        :meth:`add_tally` after it.
        The default applies the change with :meth:`incr` / :meth:`add_count`.
        """
        value: int | list[int]
        if isinstance(change, CountAdd):
            value = self.add_count(change)
        else:
            value = self.incr(change.key, change.delta, change.ttl, known)
        if tally is not None:
            self.add_tally(*tally)
        return value, None

    def add_tally(self, key: str, tally: Tally) -> None:
        """Add ``tally`` to the call totals under ``key``. The default keeps one counter
        per outcome (``key/field``), each expiring :data:`TALLY_TTL` after its last write."""
        for field, count in tally.items():
            self.incr(f"{key}/{field}", count, TALLY_TTL)

    def read_tallies(self, keys: list[str]) -> dict[str, Tally]:
        """The call totals under each of ``keys`` (missing outcomes are 0), in one read."""
        names = tally_keys(keys)
        return tallies_in(keys, self.get_many(names) if names else {})

    def purge_expired(self) -> None:
        """Drop expired values when :attr:`needs_purge` (transitions and the beat task call
        it, never the hot path). A no-op by default."""

    def after_fork(self) -> None:
        """Forget connections inherited from a parent process. A no-op by default."""

    def through(self, cache: Any) -> Counters:
        """These counters, with every operation seen by ``cache``: a wrapper of the store's
        cache that counts or checks calls (``circuitbreaker_app.testing.CountingCache``).

        Counters kept in the cache read and write through ``cache``; counters with a
        connection of their own report each operation to ``cache.note(name)``, named
        after the cache call it replaces. By default (counters in a database table, whose
        operations are queries) ``cache`` sees nothing.
        """
        return self
