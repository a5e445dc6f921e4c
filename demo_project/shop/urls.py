from django.urls import path

from . import quotes, views

app_name = "shop"

urlpatterns = [
    path("", views.index, name="index"),
    path("circuit/", views.circuit_status, name="circuit_status"),
    path("upstream/", views.set_upstream_mode, name="set_upstream_mode"),
    path("upstream/payments/", views.upstream_payments, name="upstream_payments"),
    path("api/charge/", views.charge_api, name="charge_api"),
    path("api/charge-async/", views.charge_api_async, name="charge_api_async"),
    path("quote/", quotes.quote, name="quote"),
    path("upstream/quote/", quotes.upstream_quote, name="upstream_quote"),
    path("upstream/stock/", quotes.upstream_stock, name="upstream_stock"),
]
