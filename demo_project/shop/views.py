"""A shop page whose payment call goes over real HTTP through ``CircuitSession``.

The "payments upstream" is a view of this same demo (``/upstream/payments/``) whose
behaviour is a switch kept in the cache (``demo:upstream_mode``), flipped by the buttons on
the page, so every process of the demo sees the same upstream:

- ``healthy``: answers 200 at once;
- ``failing``: answers 500 (a failure the session records, and still returns);
- ``slow``: answers after 1.5 s, past the session's 1 s read timeout (a failure);
- ``refusing``: the shop calls a closed loopback port instead (connection refused).

The shop page charges through ``CircuitSession("payments", fallback=...)``: a rejected or
failed call is answered by the fallback ("payment queued"). ``/api/charge/`` (sync) and
``/api/charge-async/`` (async) make the same call without a fallback, so an open circuit
reaches ``CircuitBreakerMiddleware`` and becomes a 503 with ``Retry-After``.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import requests
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from circuitbreaker_app import breaker
from circuitbreaker_app.ago import relative
from circuitbreaker_app.http import CircuitSession
from circuitbreaker_app.live import live_statuses, with_trip
from circuitbreaker_app.models import Circuit
from circuitbreaker_app.store import get_store

UPSTREAM_MODE_KEY = "demo:upstream_mode"
UPSTREAM_HITS_KEY = "demo:upstream_hits"
UPSTREAM_MODES = {
    "healthy": "answers 200 at once",
    "failing": "answers 500",
    "slow": "answers after 1.5 s (the shop's read timeout is 1 s)",
    "refusing": "refuses connections (the shop calls a closed port)",
}
SLOW_SECONDS = 1.5
#: Formats a translated text so that its placeholders stay for the page's script.
PLACEHOLDERS = {"rate": "%(rate)s", "calls": "%(calls)s", "failures": "%(failures)s"}
#: (connect, read) seconds: a slow upstream costs the shop at most this, then a failure.
TIMEOUT = (0.5, 1.0)
MAX_TIMES = 20


def payments_fallback(exc: BaseException) -> dict[str, Any]:
    """Used when the breaker rejects the call or the call fails: queue the payment."""
    return {"status": "queued", "fallback": True, "reason": f"{type(exc).__name__}: {exc}"}


# One session per process, shared by every request (urllib3's pool is thread-safe).
payments = CircuitSession("payments", timeout=TIMEOUT, fallback=payments_fallback)
payments_api = CircuitSession("payments", timeout=TIMEOUT)  # no fallback: 503 via middleware


def upstream_mode() -> str:
    mode = cache.get(UPSTREAM_MODE_KEY)
    return mode if mode in UPSTREAM_MODES else "healthy"


_refused_port: int | None = None


def refused_port() -> int:
    """A loopback port nothing listens on (bound once, then closed)."""
    global _refused_port
    if _refused_port is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            _refused_port = sock.getsockname()[1]
    return _refused_port


def payments_url(request: HttpRequest) -> str:
    """Where the shop sends payments: this demo's upstream view, or a closed port."""
    path = reverse("shop:upstream_payments")
    if upstream_mode() == "refusing":
        return f"http://127.0.0.1:{refused_port()}{path}"
    return request.build_absolute_uri(path)


def charge(request: HttpRequest, amount: str) -> dict[str, Any]:
    """One guarded payment: the upstream's answer, its error, or the fallback's."""
    result = payments.post(payments_url(request), json={"amount": amount})
    if isinstance(result, dict):  # the fallback answered
        return result
    if result.status_code >= 500:
        return {"status": f"failed (upstream answered {result.status_code})", "fallback": False}
    try:
        return {**result.json(), "fallback": False}
    except ValueError:  # malformed JSON is ours to handle; the breaker already counted
        return {"status": "unreadable answer", "fallback": False}


def circuit_view() -> dict[str, Any]:
    """The ``payments`` circuit as the page's panel shows it (and polls it, as JSON).

    Read like the admin reads it (:func:`circuitbreaker_app.live.live_statuses`), so an
    open circuit carries the window that opened it (``at_trip``): its own window is empty
    while calls are rejected.
    """
    breaker("payments")  # defined on first use
    store = get_store()
    status = live_statuses(with_trip(Circuit.objects.filter(name="payments")))[0]
    return {
        "state": status.state.value,
        "retry_after": status.retry_after,
        "calls": status.window.calls,
        "failures": status.window.failures,
        "at_trip": status.trip.as_json() if status.trip else None,
        "changed": relative(status.changed_at, store.now()) if status.changed_at else None,
        "upstream_hits": cache.get(UPSTREAM_HITS_KEY, 0),
        "mode": upstream_mode(),
    }


@never_cache
def circuit_status(request: HttpRequest) -> JsonResponse:
    """The panel's data, polled every second by the page (no login: it is the demo's)."""
    return JsonResponse(circuit_view())


def index(request: HttpRequest) -> HttpResponse:
    """Each load charges ``times`` times (default 1) through the ``payments`` circuit."""
    try:
        times = max(1, min(MAX_TIMES, int(request.GET.get("times", "1"))))
    except ValueError:
        times = 1
    started = time.perf_counter()
    results = [charge(request, "9.99") for _ in range(times)]
    elapsed_ms = (time.perf_counter() - started) * 1000
    return render(
        request,
        "shop/index.html",
        {
            "result": results[-1],
            "times": times,
            "fallbacks": sum(1 for result in results if result["fallback"]),
            "elapsed_ms": elapsed_ms,
            "circuit": circuit_view(),
            "mode": upstream_mode(),
            "modes": UPSTREAM_MODES,
            "panel_labels": {
                # the template's own words, for the script that refreshes the panel
                "at_trip": gettext("%(rate)s %% failures over %(calls)s calls") % PLACEHOLDERS,
                "window": gettext("%(calls)s calls, %(failures)s failures") % PLACEHOLDERS,
            },
        },
    )


@require_POST
def set_upstream_mode(request: HttpRequest) -> HttpResponse:
    mode = request.POST.get("mode", "")
    if mode in UPSTREAM_MODES:
        cache.set(UPSTREAM_MODE_KEY, mode, timeout=None)
        cache.set(UPSTREAM_HITS_KEY, 0, timeout=None)
    return redirect("shop:quote" if request.POST.get("back") == "quote" else "shop:index")


def _api_answer(response: requests.Response) -> JsonResponse:
    try:
        body = response.json()
    except ValueError:
        body = {"status": "unreadable answer"}
    return JsonResponse({"upstream_status": response.status_code, **body})


def charge_api(request: HttpRequest) -> JsonResponse:
    """No fallback: an open circuit escapes as CircuitOpenError, answered by the middleware."""
    try:
        return _api_answer(payments_api.post(payments_url(request), json={"amount": "9.99"}))
    except requests.RequestException as exc:  # timeout, refused: counted, then our 502
        return JsonResponse({"error": "upstream_unreachable", "detail": str(exc)}, status=502)


async def charge_api_async(request: HttpRequest) -> JsonResponse:
    """The async version: the blocking HTTP call runs in a thread, the loop stays free."""
    url = await sync_to_async(payments_url)(request)
    try:
        response = await sync_to_async(payments_api.post)(url, json={"amount": "9.99"})
    except requests.RequestException as exc:
        return JsonResponse({"error": "upstream_unreachable", "detail": str(exc)}, status=502)
    return _api_answer(response)


def count_upstream_hit() -> None:
    """One more request reached the fake upstream (payments, quote or stock)."""
    try:
        cache.incr(UPSTREAM_HITS_KEY)
    except ValueError:
        cache.set(UPSTREAM_HITS_KEY, 1, timeout=None)


@csrf_exempt
def upstream_payments(request: HttpRequest) -> HttpResponse:
    """The fake payments service, behaving as the switch on the shop page says."""
    count_upstream_hit()
    try:
        amount = str(json.loads(request.body or b"{}").get("amount", "0.00"))
    except (ValueError, AttributeError):
        return JsonResponse({"error": "expected a JSON object"}, status=400)
    mode = upstream_mode()
    if mode == "failing":
        return JsonResponse({"error": "payments upstream failing"}, status=500)
    if mode == "slow":
        time.sleep(SLOW_SECONDS)
    return JsonResponse({"status": "charged", "amount": amount, "upstream": mode})
