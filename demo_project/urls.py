from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("circuits/", include("circuitbreaker_app.urls")),
    path("", include("demo_project.shop.urls")),
]
