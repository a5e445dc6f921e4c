"""A shop page whose payment call goes through the ``payments`` circuit breaker.

The "payments upstream" is fake: its behaviour is a switch kept in the cache
(``demo:upstream_mode``), flipped by the buttons on the page, so every process of the demo
(web server, Celery worker) sees the same upstream.
"""

import time

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from circuitbreaker_app import breaker

UPSTREAM_MODE_KEY = "demo:upstream_mode"
UPSTREAM_MODES = {
    "healthy": "answers at once",
    "failing": "raises RuntimeError",
    "slow": "answers after 1.5 s",
}


def upstream_mode() -> str:
    mode = cache.get(UPSTREAM_MODE_KEY)
    return mode if mode in UPSTREAM_MODES else "healthy"


def payments_fallback(exc: BaseException) -> dict:
    """Used when the breaker rejects the call or the call fails: queue the payment."""
    return {"status": "queued", "fallback": True, "reason": f"{type(exc).__name__}: {exc}"}


@breaker("payments", fallback=payments_fallback)
def charge(amount: str) -> dict:
    """The fake payments upstream."""
    mode = upstream_mode()
    if mode == "failing":
        raise RuntimeError("payments upstream failing")
    if mode == "slow":
        time.sleep(1.5)
    return {"status": "charged", "fallback": False, "amount": amount, "upstream": mode}


def index(request: HttpRequest) -> HttpResponse:
    """Every load of the page makes one guarded payment call."""
    started = time.perf_counter()
    result = charge("9.99")
    elapsed_ms = (time.perf_counter() - started) * 1000
    payments = breaker("payments")
    state = payments.state
    return render(
        request,
        "shop/index.html",
        {
            "result": result,
            "elapsed_ms": elapsed_ms,
            "state": getattr(state, "value", state),
            "retry_after": payments.retry_after,
            "mode": upstream_mode(),
            "modes": UPSTREAM_MODES,
        },
    )


@require_POST
def set_upstream_mode(request: HttpRequest) -> HttpResponse:
    mode = request.POST.get("mode", "")
    if mode in UPSTREAM_MODES:
        cache.set(UPSTREAM_MODE_KEY, mode, timeout=None)
    return redirect("shop:index")
