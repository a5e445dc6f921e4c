"""URLs of circuitbreaker_app: ``path("circuits/", include("circuitbreaker_app.urls"))``.

``status/`` is the JSON status endpoint (:func:`circuitbreaker_app.views.status`).
"""

from django.urls import path

from circuitbreaker_app import views

app_name = "circuitbreaker_app"

urlpatterns = [
    path("status/", views.status, name="status"),
]
