"""httpx transports that guard every request with a circuit breaker (extra ``[httpx]``).

Pass one as ``transport=`` to an httpx client (DESIGN §1)::

    import httpx
    from circuitbreaker_app.httpx import AsyncCircuitTransport, CircuitTransport

    payments = httpx.Client(transport=CircuitTransport("payments"), timeout=5)
    partners = httpx.AsyncClient(transport=AsyncCircuitTransport())  # a circuit per host

What counts is the outcome table of :mod:`circuitbreaker_app.outcomes`, shared with
``CircuitSession``: a 429 or 5xx response is a failure and still returned;
``httpx.TransportError`` (connect errors, timeouts, protocol errors) is a failure and
re-raised; ``httpx.UnsupportedProtocol``, ``httpx.InvalidURL`` and
``httpx.LocalProtocolError`` (the request is the caller's mistake) are not counted. An open
circuit raises :class:`~circuitbreaker_app.CircuitOpenError` before the wrapped transport
is asked, so no connection is opened.

The guard sits at the transport, below the client: one guarded call per request sent. A
redirect the client follows is a new request (on its own host's circuit); the connect
retries of ``httpx.HTTPTransport(retries=n)`` run inside one guarded call. The response
is judged by its status line: the transport returns before the body is read, so a streamed
response stays streamed, and an error while reading the body later is the caller's (the
dependency answered). The async transport never blocks the event loop: it guards with
``Breaker.acall``, whose rare cache and database I/O (a circuit's first use in a process, a
failure, a transition) runs in a thread.

Nothing else in the package imports httpx: without the extra, only this module is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

try:
    import httpx
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without httpx
    raise ImportError(
        "circuitbreaker_app.httpx needs httpx: pip install 'django-circuitbreaker-app[httpx]'"
    ) from exc

from circuitbreaker_app.breaker import Breaker
from circuitbreaker_app.hosts import circuit_for_host
from circuitbreaker_app.outcomes import DEFAULT_FAILURE_STATUSES, MAX_HANDLES, HttpOutcomes

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "FAILURE_EXCEPTIONS",
    "IGNORED_EXCEPTIONS",
    "AsyncCircuitTransport",
    "CircuitTransport",
]

#: The dependency did not answer: failures, re-raised.
FAILURE_EXCEPTIONS: tuple[type[BaseException], ...] = (httpx.TransportError,)

#: The request is the caller's mistake: not counted, re-raised (they win over the
#: failures they subclass: ``UnsupportedProtocol`` and ``LocalProtocolError`` are
#: ``TransportError`` subclasses).
IGNORED_EXCEPTIONS: tuple[type[BaseException], ...] = (
    httpx.UnsupportedProtocol,
    httpx.InvalidURL,
    httpx.LocalProtocolError,
)


class _RequestGuard:
    """The outcome table of one transport and the handles it guards requests with."""

    def __init__(
        self,
        circuit: str | None,
        failure_statuses: Iterable[int] | None,
        is_failure: Callable[[httpx.Response], bool] | None,
    ) -> None:
        self.outcomes = HttpOutcomes(
            circuit,
            failures=FAILURE_EXCEPTIONS,
            ignored=IGNORED_EXCEPTIONS,
            failure_statuses=failure_statuses,
            is_failure=is_failure,
        )
        #: The named circuit's handle, or None for per-host circuits.
        self.named = None if circuit is None else self.outcomes.breaker(circuit)
        self._hosts: dict[tuple[bytes, int | None, str], Breaker] = {}

    def breaker_for(self, request: httpx.Request) -> Breaker | None:
        """The breaker for ``request``; None for a URL without a host (the wrapped
        transport refuses it: the caller's mistake, never counted)."""
        if self.named is not None:
            return self.named
        url = request.url
        key = (url.raw_host, url.port, url.scheme)
        guard = self._hosts.get(key)
        if guard is None:
            if not url.raw_host:
                return None
            if len(self._hosts) >= MAX_HANDLES:
                self._hosts.clear()  # never grow without bound on many hosts
            # raw_host is the IDNA (punycode) host httpx connects to.
            name = circuit_for_host(url.raw_host.decode("ascii"), url.port, url.scheme)
            guard = self._hosts[key] = self.outcomes.breaker(name)
        return guard


def _check_transport(value: object, expected: type, option: str = "transport") -> None:
    if not isinstance(value, expected):
        raise TypeError(
            f"{option} must be an {expected.__module__}.{expected.__qualname__}, but was {value!r}"
        )


class CircuitTransport(httpx.BaseTransport):
    """An httpx transport that sends every request through a circuit breaker.

    ``circuit``: the circuit's name; None (default) gives each host its own circuit,
    ``http:<host>`` (see :mod:`circuitbreaker_app.hosts`). ``transport``: the transport
    that sends the request (default ``httpx.HTTPTransport()``; pass your own for
    ``verify``, ``retries``, proxies or HTTP/2: with ``transport=`` an httpx client ignores
    its own transport options). ``failure_statuses``: statuses recorded as failures
    (default 429 and 5xx); or ``is_failure(response) -> bool`` instead.
    """

    def __init__(
        self,
        circuit: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        failure_statuses: Iterable[int] | None = None,
        is_failure: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        if transport is not None:
            _check_transport(transport, httpx.BaseTransport)
        self._guard = _RequestGuard(circuit, failure_statuses, is_failure)
        self._named = self._guard.named
        self.transport = transport if transport is not None else httpx.HTTPTransport()

    @property
    def transport(self) -> httpx.BaseTransport:
        """The transport that sends the requests."""
        return self._transport

    @transport.setter
    def transport(self, transport: httpx.BaseTransport) -> None:
        self._transport = transport
        self._send = transport.handle_request  # bound once, not per request

    def __repr__(self) -> str:
        return f"<CircuitTransport circuit={self._guard.outcomes.circuit or 'per host'!r}>"

    def breaker_for(self, request: httpx.Request) -> Breaker | None:
        """The breaker guarding ``request`` (the transport's circuit, or the host's)."""
        return self._guard.breaker_for(request)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its circuit; CircuitOpenError while it is open."""
        guard = self._named or self._guard.breaker_for(request)
        if guard is None:
            return self._send(request)
        # Breaker.call without its own frame (what the decorator does).
        return guard._guard(self._send, (request,), {})

    def close(self) -> None:
        """Close the wrapped transport."""
        self.transport.close()


class AsyncCircuitTransport(httpx.AsyncBaseTransport):
    """:class:`CircuitTransport` for ``httpx.AsyncClient``; never blocks the event loop.

    ``transport`` defaults to ``httpx.AsyncHTTPTransport()``; the other options are
    :class:`CircuitTransport`'s.
    """

    def __init__(
        self,
        circuit: str | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        failure_statuses: Iterable[int] | None = None,
        is_failure: Callable[[httpx.Response], bool] | None = None,
    ) -> None:
        if transport is not None:
            _check_transport(transport, httpx.AsyncBaseTransport)
        self._guard = _RequestGuard(circuit, failure_statuses, is_failure)
        self._named = self._guard.named
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The transport that sends the requests."""
        return self._transport

    @transport.setter
    def transport(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport
        self._send = transport.handle_async_request  # bound once, not per request

    def __repr__(self) -> str:
        return f"<AsyncCircuitTransport circuit={self._guard.outcomes.circuit or 'per host'!r}>"

    def breaker_for(self, request: httpx.Request) -> Breaker | None:
        """The breaker guarding ``request`` (the transport's circuit, or the host's)."""
        return self._guard.breaker_for(request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through its circuit; CircuitOpenError while it is open."""
        guard = self._named or self._guard.breaker_for(request)
        if guard is None:
            return await self._send(request)
        return await guard.acall(self._send, request)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self.transport.aclose()
