"""``CircuitSession``: a ``requests.Session`` whose every request goes through a breaker.

Guarding an outbound HTTP call becomes a one-line change (DESIGN §1)::

    from circuitbreaker_app.http import CircuitSession

    payments = CircuitSession("payments", timeout=(3.05, 10))
    response = payments.post("https://pay.example/charge", json=order)

What counts, and why:

* connection errors and timeouts (``requests.ConnectionError``, ``requests.Timeout``), and
  retries given up on (``requests.exceptions.RetryError``) are *failures*, re-raised: the
  dependency did not answer;
* a response whose status is in ``failure_statuses`` (default: 429 and every 5xx) is a
  *failure* but still returned: the caller may want its body or headers;
* any other response (2xx, 3xx, 4xx) is a *success*: the dependency answered, and a 404 or
  a 422 is the caller's business, not a sign the dependency is down;
* errors in the request itself (bad URL, schema or header) are *ignored*: they say
  nothing about the dependency;
* anything else raised while reading the response (e.g. a truncated body) propagates and
  counts as a success, like every unlisted exception (DESIGN §1); decoding the body
  (``response.json()``) happens after the guarded call and never touches the breaker.

The guard sits in :meth:`CircuitSession.send`, above the transport adapter: an open
circuit raises :class:`~circuitbreaker_app.CircuitOpenError` before any connection is
made, and urllib3 retries mounted with ``HTTPAdapter(max_retries=Retry(...))`` run inside
one guarded call, so a request and its retries are one outcome, and no retry runs while
the circuit is open. Redirects followed by the session belong to the request that
started them (one outcome, on the first URL's circuit).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from typing import Any

import requests
from requests.exceptions import (
    InvalidHeader,
    InvalidSchema,
    InvalidURL,
    MissingSchema,
    RetryError,
    UnrewindableBodyError,
    URLRequired,
)

from circuitbreaker_app.breaker import Breaker
from circuitbreaker_app.hosts import circuit_for_url
from circuitbreaker_app.outcomes import DEFAULT_FAILURE_STATUSES, HttpOutcomes

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "DEFAULT_TIMEOUT",
    "FAILURE_EXCEPTIONS",
    "IGNORED_EXCEPTIONS",
    "CircuitSession",
    "circuit_for_url",
]

#: (connect, read) seconds used when neither the session nor the request sets a timeout.
#: 3.05: a little over a multiple of 3 s, the TCP retransmission window (requests' advice).
DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 10.0)

#: Exceptions that mean "the dependency did not answer": failures, re-raised.
FAILURE_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    RetryError,
)

#: Exceptions that are the caller's mistake: neither success nor failure, re-raised.
IGNORED_EXCEPTIONS: tuple[type[BaseException], ...] = (
    InvalidURL,
    InvalidSchema,
    MissingSchema,
    InvalidHeader,
    URLRequired,
    UnrewindableBodyError,
)

Timeout = float | int | tuple[float | int, float | int]


def check_timeout(value: Any, option: str = "timeout") -> tuple[float, float]:
    """``value`` as a ``(connect, read)`` pair of positive seconds, or TypeError/ValueError.

    A number applies to both phases. ``None`` is refused: no request may wait forever.
    """
    pair = value if isinstance(value, tuple) else (value, value)
    if len(pair) != 2:
        raise TypeError(
            f"{option} must be a number of seconds or a (connect, read) pair, but was {value!r}"
        )
    checked = []
    for part in pair:
        if not isinstance(part, int | float) or isinstance(part, bool):
            raise TypeError(
                f"{option} must be a number of seconds or a (connect, read) pair of numbers, "
                f"but was {value!r}"
            )
        if not math.isfinite(part) or part <= 0:
            raise ValueError(f"{option} must be finite and greater than 0, but was {value!r}")
        checked.append(float(part))
    return checked[0], checked[1]


_OUTCOME_ATTRS = ("circuit", "failure_statuses", "is_failure", "fallback")


class CircuitSession(requests.Session):
    """A ``requests.Session`` that guards every request with a circuit breaker.

    ``circuit``: the circuit's name; ``None`` (default) gives each host its own circuit,
    named by :func:`circuit_for_url`. ``timeout``: the default ``(connect, read)`` seconds
    (or one number for both), used whenever a request passes none; a request's own
    ``timeout=`` must be positive too. ``failure_statuses``: response statuses recorded as
    failures (default 429 and 5xx); or ``is_failure(response) -> bool`` instead.
    ``fallback(exc)``: its result is returned instead of raising when the circuit rejects
    the request or the request fails with a connection error or timeout.
    """

    __attrs__ = [*requests.Session.__attrs__, "timeout", *_OUTCOME_ATTRS]

    def __init__(
        self,
        circuit: str | None = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        failure_statuses: Iterable[int] | None = None,
        is_failure: Callable[[requests.Response], bool] | None = None,
        fallback: Callable[[BaseException], Any] | None = None,
    ) -> None:
        super().__init__()
        self.timeout = check_timeout(timeout)
        self._outcomes = HttpOutcomes(
            circuit,
            failures=FAILURE_EXCEPTIONS,
            ignored=IGNORED_EXCEPTIONS,
            failure_statuses=failure_statuses,
            is_failure=is_failure,
            fallback=fallback,
        )
        self._setup()

    def _setup(self) -> None:
        # Redirect hops re-enter send(); they belong to the request being guarded.
        self._local = threading.local()

    def __setstate__(self, state: dict[str, Any]) -> None:
        outcomes = {key: state.pop(key) for key in _OUTCOME_ATTRS}
        super().__setstate__(state)
        self._outcomes = HttpOutcomes(
            failures=FAILURE_EXCEPTIONS, ignored=IGNORED_EXCEPTIONS, **outcomes
        )
        self._setup()

    # The outcome table's options, read through (and pickled with) the session.
    circuit = property(lambda self: self._outcomes.circuit)
    failure_statuses = property(lambda self: self._outcomes.failure_statuses)
    is_failure = property(lambda self: self._outcomes.is_failure)
    fallback = property(lambda self: self._outcomes.fallback)

    def __repr__(self) -> str:
        return f"<CircuitSession circuit={self.circuit or 'per host'!r}>"

    # -- outcome of a response ------------------------------------------------------------
    def response_failed(self, response: requests.Response) -> bool:
        """True when ``response`` counts as a failure of the dependency."""
        return self._outcomes.response_failed(response)

    def breaker_for(self, url: str) -> Breaker:
        """The breaker guarding a request to ``url`` (the session's circuit, or the host's)."""
        return self._outcomes.breaker(self._outcomes.circuit or circuit_for_url(url))

    # -- the guard --------------------------------------------------------------------------
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        """Send ``request`` through its circuit, with the default timeout when none is given."""
        if getattr(self._local, "active", False):  # a redirect hop of a guarded request
            return super().send(request, **kwargs)
        timeout = kwargs.get("timeout")
        kwargs["timeout"] = self.timeout if timeout is None else check_timeout(timeout)
        guard = self.breaker_for(request.url or "")
        self._local.active = True
        try:
            return guard.call(super().send, request, **kwargs)
        finally:
            self._local.active = False
