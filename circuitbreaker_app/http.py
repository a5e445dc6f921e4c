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

import hashlib
import math
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

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
from circuitbreaker_app.core.config import NAME_RE, check_name

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

#: Statuses recorded as failures by default: 429 Too Many Requests and every 5xx.
DEFAULT_FAILURE_STATUSES: frozenset[int] = frozenset({429, *range(500, 600)})

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

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._:-]")
_MAX_BREAKERS_PER_SESSION = 1_024

Timeout = float | int | tuple[float | int, float | int]


def circuit_for_url(url: str) -> str:
    """The per-host circuit name for ``url``: ``http:<host>``, or ``http:<host>:<port>``.

    The port is part of the name only when the URL gives one that is not the scheme's
    default: two services on one host are two dependencies. Credentials, path and query
    never are. Characters a circuit name cannot hold become ``-``, and a name longer
    than 100 characters is shortened with a hash so distinct hosts stay distinct.
    """
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"cannot name a circuit for a URL without a host: {url!r}")
    try:
        port = parts.port
    except ValueError:  # a malformed port: requests reports it; the name ignores it
        port = None
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        host = f"{host}:{port}"
    name = "http:" + _UNSAFE_NAME_CHARS.sub("-", host)
    if len(name) > 100:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:91]}-{digest}"
    assert NAME_RE.fullmatch(name), name
    return name


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


def _check_statuses(value: Any) -> frozenset[int]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(f"failure_statuses must be a collection of ints, but was {value!r}")
    statuses = frozenset(value)
    for status in statuses:
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError(f"failure_statuses must hold ints, but held {status!r}")
        if not 100 <= status <= 599:
            raise ValueError(f"failure_statuses must be HTTP statuses (100-599), not {status!r}")
    return statuses


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

    __attrs__ = [
        *requests.Session.__attrs__,
        "circuit",
        "timeout",
        "failure_statuses",
        "is_failure",
        "fallback",
    ]

    def __init__(
        self,
        circuit: str | None = None,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        failure_statuses: Iterable[int] | None = None,
        is_failure: Callable[[requests.Response], bool] | None = None,
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
        super().__init__()
        self.circuit = circuit
        self.timeout = check_timeout(timeout)
        self.failure_statuses = (
            DEFAULT_FAILURE_STATUSES
            if failure_statuses is None
            else _check_statuses(failure_statuses)
        )
        self.is_failure = is_failure
        self.fallback = fallback
        self._setup()

    def _setup(self) -> None:
        self._breakers: dict[str, Breaker] = {}
        # Redirect hops re-enter send(); they belong to the request being guarded.
        self._local = threading.local()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._setup()

    def __repr__(self) -> str:
        return f"<CircuitSession circuit={self.circuit or 'per host'!r}>"

    # -- outcome of a response ------------------------------------------------------------
    def response_failed(self, response: requests.Response) -> bool:
        """True when ``response`` counts as a failure of the dependency."""
        if self.is_failure is not None:
            return bool(self.is_failure(response))
        return response.status_code in self.failure_statuses

    def breaker_for(self, url: str) -> Breaker:
        """The breaker guarding a request to ``url`` (the session's circuit, or the host's)."""
        name = self.circuit or circuit_for_url(url)
        guard = self._breakers.get(name)
        if guard is None:
            if len(self._breakers) >= _MAX_BREAKERS_PER_SESSION:
                self._breakers.clear()  # handles are cheap to rebuild; never grow unbounded
            guard = Breaker(
                name,
                record=FAILURE_EXCEPTIONS,
                ignore=IGNORED_EXCEPTIONS,
                is_failure=self.response_failed,
                fallback=self.fallback,
            )
            self._breakers[name] = guard
        return guard

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
