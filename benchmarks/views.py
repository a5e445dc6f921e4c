"""Two views for the HTTP load benchmark: the same upstream call, guarded and not.

Both GET the loopback upstream (``CB_BENCH_UPSTREAM_URL``) with the same timeout
(``CB_BENCH_UPSTREAM_TIMEOUT`` seconds) over a keep-alive session, and answer a few bytes
of JSON: 200 when the upstream answered 2xx, 502 when it failed. The guarded one goes
through ``circuitbreaker_app.http.CircuitSession`` on the circuit ``bench-http`` and
answers 503 with ``Retry-After`` when the circuit rejects the call. Nothing else differs.
"""

from __future__ import annotations

import math
import os

import requests
from django.http import HttpRequest, JsonResponse

from circuitbreaker_app import CircuitOpenError
from circuitbreaker_app.http import CircuitSession

CIRCUIT = "bench-http"
UPSTREAM_URL = os.environ.get("CB_BENCH_UPSTREAM_URL", "http://127.0.0.1:9/")
TIMEOUT = float(os.environ.get("CB_BENCH_UPSTREAM_TIMEOUT", "2"))

plain = requests.Session()
guarded_session = CircuitSession(CIRCUIT, timeout=TIMEOUT)


def _answer(response: requests.Response) -> JsonResponse:
    ok = response.status_code < 400
    return JsonResponse({"upstream": response.status_code}, status=200 if ok else 502)


def unguarded(request: HttpRequest) -> JsonResponse:
    try:
        response = plain.get(UPSTREAM_URL, timeout=TIMEOUT)
    except requests.RequestException as exc:
        return JsonResponse({"error": type(exc).__name__}, status=502)
    return _answer(response)


def guarded(request: HttpRequest) -> JsonResponse:
    try:
        response = guarded_session.get(UPSTREAM_URL)
    except CircuitOpenError as exc:
        answer = JsonResponse({"error": "circuit_open", "circuit": exc.circuit}, status=503)
        if exc.retry_after is not None:
            answer["Retry-After"] = str(math.ceil(exc.retry_after))
        return answer
    except requests.RequestException as exc:
        return JsonResponse({"error": type(exc).__name__}, status=502)
    return _answer(response)
