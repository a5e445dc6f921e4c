from django.urls import path

from benchmarks import views

urlpatterns = [
    path("guarded/", views.guarded),
    path("unguarded/", views.unguarded),
]
