"""The JSON status endpoint: every circuit's state, retry_after, rates and counts.

Staff with the ``view_circuit`` permission (or ``change_circuit``, as in the admin) by
default. ``CIRCUITBREAKER["STATUS_TOKEN"]`` lets monitoring systems read it
with ``Authorization: Bearer <token>`` (compared in constant time). Query parameters:
``circuit=<name>`` (repeatable) limits the answer to those circuits; ``history=1`` adds
each circuit's failure rate every 10 seconds over the last 15 minutes. Anything else is
ignored.
Probe URLs appear only with their credentials masked.
"""

from __future__ import annotations

import hmac
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from circuitbreaker_app import conf, samples
from circuitbreaker_app.live import iso, live_statuses, with_trip
from circuitbreaker_app.store import get_store

TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


def _bearer_token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def token_matches(given: str | None) -> bool:
    """True when ``given`` is the configured STATUS_TOKEN (constant-time comparison)."""
    expected = conf.get("STATUS_TOKEN")
    if not isinstance(expected, str) or not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


#: Either lets a staff user read the status (Django's admin: who may change may view).
VIEW_PERMISSIONS = ("circuitbreaker_app.view_circuit", "circuitbreaker_app.change_circuit")


def may_view(user: Any) -> bool:
    """True for active staff with ``view_circuit`` (or ``change_circuit``)."""
    return bool(
        user is not None
        and user.is_active
        and user.is_staff
        and any(user.has_perm(permission) for permission in VIEW_PERMISSIONS)
    )


def _denied(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read the status; otherwise the 401/403 answer."""
    user = getattr(request, "user", None)
    if may_view(user):
        return None
    if token_matches(_bearer_token(request)):
        return None
    if user is None or not user.is_authenticated:
        response = JsonResponse(
            {
                "error": "authentication_required",
                "detail": gettext("Log in as staff or send a token."),
            },
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="circuitbreaker"'
        return response
    return JsonResponse(
        {
            "error": "forbidden",
            "detail": gettext("Staff with the permission to view circuits only."),
        },
        status=403,
    )


def status_payload(names: list[str] | None = None, with_history: bool = False) -> dict[str, Any]:
    """The status document: every circuit (or those in ``names``), optionally with history."""
    from circuitbreaker_app.models import Circuit

    store = get_store()
    rows = with_trip(Circuit.objects.using(store.db_alias).order_by("name"))
    if names:
        rows = rows.filter(name__in=names)
    statuses = live_statuses(rows)
    # Sample every circuit now and then (off the hot path). A filtered request (the live
    # panel's, every 5 s) has only some of them and the sampler would read every circuit:
    # it does so only when no worker sampled for a while.
    if names:
        samples.maybe_record_samples(stale_after=samples.STALE_AFTER)
    else:
        samples.maybe_record_samples(statuses)
    entries = [status.as_json() for status in statuses]
    if with_history:
        found = samples.history([status.circuit.pk for status in statuses])
        for entry in entries:
            entry["history"] = [
                {
                    "t": iso(point.at),
                    "failure_rate": point.failure_rate,
                    "calls": point.calls,
                    "state": point.state,
                    "rejected": point.rejected,
                }
                for point in found[entry["id"]]
            ]
    return {"generated_at": iso(store.now()), "circuits": entries}


@never_cache
@require_GET
def status(request: HttpRequest) -> HttpResponse:
    """``GET`` the status of every circuit as JSON (see the module docstring)."""
    denied = _denied(request)
    if denied is not None:
        patch_vary_headers(denied, ("Cookie", "Authorization"))
        return denied
    names = [name for name in request.GET.getlist("circuit") if name]
    with_history = request.GET.get("history", "").strip().lower() in TRUE_VALUES
    response = JsonResponse(status_payload(names, with_history))
    patch_vary_headers(response, ("Cookie", "Authorization"))
    return response
