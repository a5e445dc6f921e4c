"""Cache keys of the shared layer: one place, so a new key format is one version bump.

Every key of one circuit carries the circuit's name as a Redis Cluster hash tag
(``{payments}``), so the keys a Lua script touches together always sit in one slot
(DESIGN §4c). The version in :data:`KEY_PREFIX` changes whenever the format of a key
or of the value under it changes: entries written by an older release are then simply
misses, reloaded from the database.
"""

from __future__ import annotations

import hashlib

#: Bumped from ``circuitbreaker/1`` when the ``{name}`` hash tags were added.
KEY_PREFIX = "circuitbreaker/2"


def circuit_prefix(name: str) -> str:
    """Prefix of every key of the circuit ``name`` (with its hash tag)."""
    return f"{KEY_PREFIX}/{{{name}}}"


def state_key(name: str) -> str:
    """Cache key of a circuit's shared state entry."""
    return f"{circuit_prefix(name)}/state"


def generation_prefix(name: str, generation: int, *, circuit_id: int) -> str:
    """Prefix of the keys that belong to one period (generation) of one circuit row.

    The row's id is part of it: a circuit deleted and created again under the same name
    starts again at generation 0, and must not read the window counters, trial permits or
    probe lease the old circuit left behind until they expire.
    """
    return f"{circuit_prefix(name)}/c{circuit_id}/g{generation}"


def tally_key(name: str) -> str:
    """Key of the circuit's fleet-wide call totals by outcome (the Prometheus counters)."""
    return f"{circuit_prefix(name)}/calls"


def answer_key(name: str, key: str) -> str:
    """Cache key of the answer ``last_good`` keeps for one call key of a circuit."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{circuit_prefix(name)}/answer/{digest}"
