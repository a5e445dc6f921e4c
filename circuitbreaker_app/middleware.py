"""``CircuitBreakerMiddleware``: an unhandled ``CircuitOpenError`` becomes a 503.

A view that lets :class:`~circuitbreaker_app.CircuitOpenError` escape tells the client
"this part of the site depends on something that is down; come back later" — which is
what HTTP 503 with ``Retry-After`` says, and what a generic 500 page does not. Add it to
``MIDDLEWARE`` (anywhere; it only handles exceptions raised by views)::

    MIDDLEWARE = [
        ...,
        "circuitbreaker_app.middleware.CircuitBreakerMiddleware",
    ]

The response is JSON (``{"error": "circuit_open", "circuit": ..., "retry_after": ...}``)
when the client prefers ``application/json`` to ``text/html`` in its ``Accept`` header,
and otherwise the template ``circuitbreaker_app/circuit_open.html``, which a project
overrides by putting its own file at that path in a template directory. ``Retry-After``
(and ``retry_after`` in JSON) is the whole number of seconds, rounded up, until the
circuit admits calls again; both are omitted (``null``) when that is unknown, e.g. for a
circuit forced open by an operator. Every other exception passes through untouched.

The middleware works in sync and async stacks alike; it does no I/O of its own.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string
from django.utils.cache import add_never_cache_headers, patch_vary_headers

from circuitbreaker_app.core import CircuitOpenError

logger = logging.getLogger("circuitbreaker_app")

TEMPLATE_NAME = "circuitbreaker_app/circuit_open.html"
JSON_TYPE = "application/json"


def retry_after_seconds(exc: CircuitOpenError) -> int | None:
    """``exc.retry_after`` as whole seconds, rounded up (``None`` when unknown)."""
    if exc.retry_after is None:
        return None
    return max(0, math.ceil(exc.retry_after))


def wants_json(request: HttpRequest) -> bool:
    """True when the client prefers JSON to HTML (ties and ``*/*`` go to HTML)."""
    return request.get_preferred_type(["text/html", JSON_TYPE]) == JSON_TYPE


def circuit_open_response(request: HttpRequest, exc: CircuitOpenError) -> HttpResponse:
    """The 503 response for ``exc``, negotiated between JSON and the HTML template."""
    seconds = retry_after_seconds(exc)
    response: HttpResponse
    if wants_json(request):
        response = JsonResponse(
            {"error": "circuit_open", "circuit": exc.circuit, "retry_after": seconds},
            status=503,
        )
    else:
        context = {"circuit": exc.circuit, "state": exc.state.value, "retry_after": seconds}
        response = HttpResponse(
            render_to_string(TEMPLATE_NAME, context, request=request), status=503
        )
    if seconds is not None:
        response["Retry-After"] = str(seconds)
    patch_vary_headers(response, ["Accept"])
    add_never_cache_headers(response)  # a shared cache must not keep serving the outage
    return response


class CircuitBreakerMiddleware:
    """Turn an unhandled ``CircuitOpenError`` into a 503 with ``Retry-After``."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.async_mode:
            return self.__acall__(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        return await self.get_response(request)

    def process_exception(
        self, request: HttpRequest, exception: BaseException
    ) -> HttpResponse | None:
        """Answer a rejected call; return None (Django carries on) for anything else."""
        if not isinstance(exception, CircuitOpenError):
            return None
        seconds = retry_after_seconds(exception)
        logger.warning(
            "circuit %r is %s: answered %s %r with 503 (retry after %s)",
            exception.circuit,
            exception.state.value,
            request.method,
            request.path,
            "unknown" if seconds is None else f"{seconds} s",
        )
        response = circuit_open_response(request, exception)
        # Logged above, once: Django would log this 503 again as "Service Unavailable".
        response._has_been_logged = True  # type: ignore[attr-defined]
        return response
