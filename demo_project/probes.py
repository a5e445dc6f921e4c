"""The demo's probe of its fake payments upstream, run by the Celery worker.

Registered with ``circuitbreaker_app.probes.register`` when the demo's Celery worker starts
(``demo_project/celery.py`` imports this module on ``worker_init``). It asks
the upstream the way the shop reaches it: a GET of ``/upstream/payments/`` on this demo's
own server (``DEMO_PORT``), or, when the switch says "refusing", of the closed port the
shop would call. The ``inventory`` circuit has no probe: live calls are its trials.
"""

from __future__ import annotations

import os

from circuitbreaker_app import probes

#: (connect, read) seconds, as the shop's own session: a slow upstream fails the probe.
TIMEOUT = (0.5, 1.0)


@probes.register("payments")
def payments_upstream() -> bool:
    """True when the fake payments upstream answers 2xx within the shop's timeout."""
    import requests
    from django.urls import reverse

    from demo_project.shop import views

    port = int(os.environ.get("DEMO_PORT", "8000"))
    if views.upstream_mode() == "refusing":
        port = views.refused_port()
    url = f"http://127.0.0.1:{port}{reverse('shop:upstream_payments')}"
    return requests.get(url, timeout=TIMEOUT).ok
