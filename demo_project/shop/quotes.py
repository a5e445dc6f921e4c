"""The async quote page: a price over httpx through ``AsyncCircuitTransport``, and a stock
line that ``last_good`` serves (marked stale, with its age) while the partner is down.

Both calls go to the demo's own fake upstream (``/upstream/quote/`` and
``/upstream/stock/``), switched by the same buttons as the payments upstream
(``views.UPSTREAM_MODES``): healthy, failing (500), slow (past the 1 s read timeout) or
refusing (a closed port).

- The price goes through ``httpx.AsyncClient(transport=AsyncCircuitTransport("quotes"))``:
  a 500 is returned and counted, a timeout or a refused connection raises and counts, and
  an open circuit raises ``CircuitOpenError`` before any connection is opened.
- The stock level comes from ``stock_level()``, guarded by ``breaker("stock",
  fallback=last_good(...))``: while the partner fails or the circuit is open, the page
  shows the last level that was read, with how old it is.

A client per request: under WSGI (``runserver``, gunicorn's sync workers) each async view
runs in an event loop of its own, and an httpx connection pool belongs to one loop. Under
ASGI, keep one ``AsyncClient`` per process instead.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from circuitbreaker_app import CircuitOpenError, breaker
from circuitbreaker_app.fallbacks import last_good
from circuitbreaker_app.httpx import AsyncCircuitTransport

from . import views

#: The quote page's timeouts: a slow partner costs it at most 1 s per call.
TIMEOUT = httpx.Timeout(1.0, connect=0.5)
SKU = "book-42"


def _stale(value: dict[str, Any], age: float) -> dict[str, Any]:
    """How ``last_good`` answers: the kept stock line, marked stale with its age."""
    return {**value, "stale": True, "age": age}


@breaker("stock", fallback=last_good(ttl=600, refresh=5, key=lambda url, sku: sku, stale=_stale))
async def stock_level(url: str, sku: str) -> dict[str, Any]:
    """The partner's stock level for ``sku``; a 5xx raises, so it counts as a failure."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        response = await client.get(url, params={"sku": sku})
        response.raise_for_status()
        return {**response.json(), "stale": False}


async def fetch_price(url: str, sku: str) -> dict[str, Any]:
    """The price line: the upstream's answer, or what went wrong."""
    transport = AsyncCircuitTransport("quotes")
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
        try:
            response = await client.get(url, params={"sku": sku})
        except CircuitOpenError as exc:
            return {"error": f"circuit open, retry in {exc.retry_after or 0:.0f} s"}
        except httpx.TransportError as exc:  # counted by the transport, then ours
            return {"error": f"{type(exc).__name__}: {exc}"}
    if response.status_code != 200:
        return {"error": f"upstream answered {response.status_code}"}
    return response.json()  # type: ignore[no-any-return]


def _urls(request: HttpRequest) -> tuple[str, str]:
    """Where the quote page calls: this demo's upstream views, or a closed port."""
    paths = reverse("shop:upstream_quote"), reverse("shop:upstream_stock")
    if views.upstream_mode() == "refusing":
        return tuple(f"http://127.0.0.1:{views.refused_port()}{path}" for path in paths)  # type: ignore[return-value]
    return tuple(request.build_absolute_uri(path) for path in paths)  # type: ignore[return-value]


def _circuits() -> dict[str, str]:
    return {name: breaker(name).state.value for name in ("quotes", "stock")}


async def quote(request: HttpRequest) -> HttpResponse:
    """An async view: the price and the stock line of one product."""
    started = time.perf_counter()
    price_url, stock_url = await sync_to_async(_urls)(request)
    price = await fetch_price(price_url, SKU)
    try:
        stock: dict[str, Any] = await stock_level(stock_url, SKU)
    except (CircuitOpenError, httpx.HTTPError) as exc:  # nothing kept yet, or too old
        stock = {"error": f"{type(exc).__name__}: {exc}"}
    context = {
        "sku": SKU,
        "price": price,
        "stock": stock,
        "circuits": await sync_to_async(_circuits)(),
        "mode": await sync_to_async(views.upstream_mode)(),
        "modes": views.UPSTREAM_MODES,
        "elapsed_ms": (time.perf_counter() - started) * 1000,
    }
    return render(request, "shop/quote.html", context)


def _upstream_answer(request: HttpRequest, body: dict[str, Any]) -> HttpResponse:
    views.count_upstream_hit()
    mode = views.upstream_mode()
    if mode == "failing":
        return JsonResponse({"error": "partner failing"}, status=500)
    if mode == "slow":
        time.sleep(views.SLOW_SECONDS)
    return JsonResponse({"sku": request.GET.get("sku", ""), **body, "upstream": mode})


@csrf_exempt
def upstream_quote(request: HttpRequest) -> HttpResponse:
    """The fake partner's price."""
    return _upstream_answer(request, {"price": "12.50", "currency": "EUR"})


@csrf_exempt
def upstream_stock(request: HttpRequest) -> HttpResponse:
    """The fake partner's stock level: it changes every 10 s, so a stale one shows."""
    return _upstream_answer(request, {"level": 40 + int(time.time() // 10) % 20})
