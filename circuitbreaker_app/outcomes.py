"""What an HTTP answer means for a circuit: the one outcome table of every HTTP helper.

``CircuitSession`` (requests) and the httpx transports differ only in their clients'
exception classes; the rule is written once, here (DESIGN §1):

====================================================  ===========  =====================
what happened                                         outcome      the caller gets
====================================================  ===========  =====================
a response whose status is in ``failure_statuses``    failure      the response
(default 429 and every 5xx), or ``is_failure(resp)``
any other response (2xx, 3xx, 4xx)                    success      the response
the dependency did not answer (connect error,         failure      the error, re-raised
timeout, protocol error): the client's ``failures``
the request is the caller's mistake (bad URL, scheme  ignored      the error, re-raised
or header): the client's ``ignored``
the circuit is open                                   rejected     ``CircuitOpenError``,
                                                                   before any connection
====================================================  ===========  =====================

A response is judged by its status line alone: its body is never read by the guard, so a
streamed response stays streamed, and an error while reading the body later belongs to
the caller (the dependency answered).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from circuitbreaker_app.breaker import Breaker
from circuitbreaker_app.core.config import check_name

__all__ = ["DEFAULT_FAILURE_STATUSES", "HttpOutcomes", "check_failure_statuses"]

#: Statuses recorded as failures by default: 429 Too Many Requests and every 5xx.
DEFAULT_FAILURE_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})

#: Handles one helper keeps for per-host circuits before it starts over (they are cheap to
#: rebuild: every handle of one name shares the process's snapshot of it).
MAX_HANDLES = 1_024


def check_failure_statuses(value: Any) -> frozenset[int]:
    """``value`` as a frozenset of HTTP statuses, or TypeError/ValueError naming the option."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"failure_statuses must be a collection of ints, but was {value!r}")
    statuses = frozenset(value)
    for status in statuses:
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError(f"failure_statuses must hold ints, but held {status!r}")
        if not 100 <= status <= 599:
            raise ValueError(f"failure_statuses must be HTTP statuses (100-599), not {status!r}")
    return statuses


class HttpOutcomes:
    """One HTTP helper's outcome table and the breakers it guards requests with.

    ``circuit``: the circuit's name, or None for one circuit per host (named by the
    helper, see :mod:`circuitbreaker_app.hosts`). ``failures`` and ``ignored``: the
    client's exception classes for "the dependency did not answer" and "the caller's
    mistake" (``ignored`` wins where they overlap). ``failure_statuses`` (default 429 and
    5xx) or ``is_failure(response) -> bool``, not both. ``fallback(exc)`` as for
    ``breaker()``. Every option is checked here, when the helper is built.
    """

    def __init__(
        self,
        circuit: str | None,
        *,
        failures: tuple[type[BaseException], ...],
        ignored: tuple[type[BaseException], ...],
        failure_statuses: Iterable[int] | None = None,
        is_failure: Callable[[Any], bool] | None = None,
        fallback: Callable[[BaseException], Any] | None = None,
    ) -> None:
        if circuit is not None:
            check_name(circuit)
        if is_failure is not None and not callable(is_failure):
            raise TypeError(f"is_failure must be callable, but was {is_failure!r}")
        if is_failure is not None and failure_statuses is not None:
            raise TypeError("pass failure_statuses or is_failure, not both")
        if fallback is not None and not callable(fallback):
            raise TypeError(f"fallback must be callable, but was {fallback!r}")
        self.circuit = circuit
        self.failures = failures
        self.ignored = ignored
        self.failure_statuses = (
            DEFAULT_FAILURE_STATUSES
            if failure_statuses is None
            else check_failure_statuses(failure_statuses)
        )
        self.is_failure = is_failure
        self.fallback = fallback
        self._breakers: dict[str, Breaker] = {}
        #: What the breakers ask of every response: response_failed, or for the default
        #: rule the same test without a method call and an ``is_failure`` check.
        self._failed: Callable[[Any], bool] = self.response_failed
        if is_failure is None:
            statuses = self.failure_statuses

            def status_failed(response: Any) -> bool:
                return response.status_code in statuses

            self._failed = status_failed

    def response_failed(self, response: Any) -> bool:
        """True when ``response`` counts as a failure of the dependency (by its status)."""
        if self.is_failure is not None:
            return bool(self.is_failure(response))
        return response.status_code in self.failure_statuses

    def breaker(self, name: str) -> Breaker:
        """The handle guarding requests on the circuit ``name`` with this table."""
        guard = self._breakers.get(name)
        if guard is None:
            if len(self._breakers) >= MAX_HANDLES:
                self._breakers.clear()  # never grow without bound on many hosts
            guard = Breaker(
                name,
                record=self.failures,
                ignore=self.ignored,
                is_failure=self._failed,
                fallback=self.fallback,
            )
            self._breakers[name] = guard
        return guard
