"""Answers kept for :func:`circuitbreaker_app.fallbacks.last_good`: a circuit's last
successful results, one per call key, in the shared cache beside the circuit's state.

A value is kept as a pickle (base64, inside a small JSON-safe dict with the time it was
stored), so every backend's state cache holds it, the Redis one included. The trust model
is Django's cache's: whoever can write the cache can make this process unpickle. Whatever
is found under a key — missing, expired, malformed, foreign — is a miss, never an error.
"""

from __future__ import annotations

import base64
import pickle
from dataclasses import dataclass
from typing import Any

from circuitbreaker_app.store.keys import answer_key
from circuitbreaker_app.store.outages import Outages


@dataclass(frozen=True)
class Recalled:
    """A remembered answer and its age in seconds (shared time)."""

    value: Any
    age: float


class RememberedAnswers:
    """The ``remember``/``recall`` side of :class:`~circuitbreaker_app.store.CircuitStore`."""

    cache: Any
    outages: Outages

    def now(self) -> float:
        raise NotImplementedError("CircuitStore provides now()")

    def remember(self, name: str, key: str, value: Any, ttl: float) -> bool:
        """Keep ``value`` as circuit ``name``'s answer for ``key``, for ``ttl`` seconds.

        Raises what ``pickle`` raises for a value it cannot pickle (the caller decides what
        to say); returns False when the cache is unreachable (logged once per outage).
        """
        return self.remember_pickled(
            name, key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), ttl
        )

    def remember_pickled(self, name: str, key: str, data: bytes, ttl: float) -> bool:
        """:meth:`remember` for a value the caller has pickled already."""
        entry = {"at": self.now(), "v": base64.b64encode(data).decode("ascii")}
        return self.outages.guard(
            "cache", False, self._set_answer, answer_key(name, key), entry, ttl
        )

    def _set_answer(self, key: str, entry: dict[str, Any], ttl: float) -> bool:
        self.cache.set(key, entry, timeout=ttl)
        return True

    def recall(self, name: str, key: str, ttl: float) -> Recalled | None:
        """Circuit ``name``'s answer for ``key`` if one at most ``ttl`` seconds old is kept."""
        entry = self.outages.guard("cache", None, self.cache.get, answer_key(name, key))
        try:
            age = max(0.0, self.now() - float(entry["at"]))
            if age > ttl:
                return None
            value = pickle.loads(base64.b64decode(entry["v"], validate=True))
        except Exception:  # missing, not ours, or a pickle of a class that no longer loads
            return None
        return Recalled(value, age)

    def forget_answer(self, name: str, key: str) -> None:
        """Drop circuit ``name``'s answer for ``key`` (missing is fine)."""
        self.outages.guard("cache", None, self.cache.delete, answer_key(name, key))
