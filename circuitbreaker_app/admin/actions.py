"""The circuit admin's actions: the operator moves (:mod:`.moves`) and "Probe now".

All of them need the ``circuitbreaker_app.force_circuit`` permission.
"""

from __future__ import annotations

import logging

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app import extras
from circuitbreaker_app.admin.moves import MOVE_ACTIONS
from circuitbreaker_app.models import Circuit

logger = logging.getLogger("circuitbreaker_app")


@admin.action(description=_("Probe now (enqueue the probe task)"), permissions=["force"])
def probe_now(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Circuit]
) -> None:
    """Enqueue one probe task per selected circuit; say which could not be enqueued."""
    try:
        from circuitbreaker_app.tasks import probe_circuit  # Celery is only needed here
    except ImportError:
        modeladmin.message_user(
            request,
            gettext("Probing needs Celery, which is not installed: %(command)s")
            % {"command": extras.install_hint("celery")},
            messages.ERROR,
        )
        return
    names = list(queryset.order_by("name").values_list("name", flat=True))
    enqueued, failed = [], []
    for name in names:
        try:
            probe_circuit.delay(name)
        except Exception as exc:  # broker down: say so instead of a 500
            logger.exception("could not enqueue the probe of circuit %r", name)
            failed.append(f"{name} ({type(exc).__name__})")
        else:
            enqueued.append(name)
    if enqueued:
        modeladmin.message_user(
            request,
            gettext("Probe enqueued for: %(names)s.") % {"names": ", ".join(enqueued)},
            messages.SUCCESS,
        )
    if failed:
        modeladmin.message_user(
            request,
            gettext("Could not enqueue a probe for: %(names)s. Is the broker running?")
            % {"names": ", ".join(failed)},
            messages.ERROR,
        )


#: Every action of the circuit admin; all need the force_circuit permission.
ACTIONS = (*MOVE_ACTIONS, probe_now)
#: Their names, as a POST to the change list carries them.
PERMISSION_ACTIONS = frozenset(action.__name__ for action in ACTIONS)
