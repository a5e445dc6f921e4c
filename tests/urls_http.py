"""Views for the middleware tests: sync and async views that call a circuit, or fail.

Used with ``@pytest.mark.urls("tests.urls_http")``; ``tests/urls.py`` stays untouched.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from circuitbreaker_app import breaker


def sync_call(request: HttpRequest, name: str) -> HttpResponse:
    return HttpResponse(breaker(name).call(lambda: "charged"))


async def async_call(request: HttpRequest, name: str) -> HttpResponse:
    async def charge() -> str:
        return "charged"

    return HttpResponse(await breaker(name).acall(charge))


async def async_with(request: HttpRequest, name: str) -> HttpResponse:
    async with breaker(name):
        return HttpResponse("charged")


def sync_boom(request: HttpRequest) -> HttpResponse:
    raise ValueError("not a circuit problem")


async def async_boom(request: HttpRequest) -> HttpResponse:
    raise ValueError("not a circuit problem")


urlpatterns = [
    path("sync/<str:name>/", sync_call),
    path("async/<str:name>/", async_call),
    path("async-with/<str:name>/", async_with),
    path("boom/sync/", sync_boom),
    path("boom/async/", async_boom),
]
