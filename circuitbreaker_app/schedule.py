"""When probes run: the Celery beat entry, and the probe a trip schedules for itself.

Beat runs :func:`~circuitbreaker_app.tasks.probe_circuits` every ``PROBE_INTERVAL``
seconds (the safety net). On top of that, the process that trips a circuit sends one
``probe_circuit`` task with ``countdown`` = the wait (from a background thread), so recovery
does not wait for the next beat tick. Nothing here needs a broker, or Celery itself:
without a configured Celery app (or with ``task_always_eager``) no task is sent, and a
broker that refuses a task is logged once per outage and never delays or raises into the
guarded call.

This module imports nothing from Django models, so settings files may use
:func:`beat_schedule`.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import sys
import threading
import time
from typing import Any

from circuitbreaker_app.core import State

logger = logging.getLogger("circuitbreaker_app")

PROBE_CIRCUITS_TASK = "circuitbreaker_app.tasks.probe_circuits"
PROBE_CIRCUIT_TASK = "circuitbreaker_app.tasks.probe_circuit"
BEAT_ENTRY = "circuitbreaker-probe-circuits"
#: Added to a trip's countdown so the task never arrives a hair before ``retry_at``.
COUNTDOWN_SLACK = 0.1
#: After a broker refused a task, stop trying for this long (beat catches up).
SEND_PAUSE = 30.0


def beat_schedule(interval: float | None = None) -> dict[str, dict[str, Any]]:
    """The beat entry that runs ``probe_circuits`` every ``interval`` seconds.

    ``interval`` defaults to ``CIRCUITBREAKER["PROBE_INTERVAL"]`` (pass it explicitly in
    a settings module, where settings cannot be read yet). Use it as, or merge it into,
    ``CELERY_BEAT_SCHEDULE``; django-celery-beat's ``DatabaseScheduler`` imports the same
    entry into its tables on start (intervals of whole seconds there).
    """
    if interval is None:
        from circuitbreaker_app import conf

        interval = conf.get("PROBE_INTERVAL")
    if (
        not isinstance(interval, int | float)
        or isinstance(interval, bool)
        or not math.isfinite(interval)
        or interval <= 0
    ):
        raise ValueError(f"beat_schedule() needs a positive number of seconds, not {interval!r}")
    seconds = float(interval)
    return {
        BEAT_ENTRY: {
            "task": PROBE_CIRCUITS_TASK,
            "schedule": seconds,
            # A backlog (beat ran while no worker did) never replays stale runs.
            "options": {"expires": seconds},
        }
    }


def celery_app() -> Any | None:
    """The Celery app to send probe tasks with, or None when Celery is not set up.

    Set up means: the current app is a project's app (not Celery's implicit fallback),
    it has a ``broker_url`` (``CELERY_BROKER_URL``), and it is not ``task_always_eager``
    (where sending would run the probe right away, inside the guarded call). An app that
    merely exists, say imported by a test without a broker configured, sends nothing.

    A project's Celery app is created by importing Celery (``proj/celery.py``), so when
    nothing in this process imported Celery there is no app to send with: return None
    without importing it. A project without Celery (it is the ``[celery]`` extra) never
    loads it this way.
    """
    if "celery" not in sys.modules:
        return None
    from celery import current_app

    app = current_app._get_current_object()
    if app.main == "default" and not app.fixups:  # Celery's implicit fallback app
        return None
    if not app.conf.broker_url or app.conf.task_always_eager:
        return None
    return app


class _SendState:
    """Whether sending is failing, so an outage is logged once and not retried per trip."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.failing = False
        self.paused_until = 0.0


_send_state = _SendState()


def send_probe(
    name: str, generation: int | None, countdown: float = 0.0, app: Any | None = None
) -> bool:
    """Send one ``probe_circuit(name, generation=...)`` task; True when the broker took it.

    The task expires one ``PROBE_INTERVAL`` after it is due. Never raises: a refused
    task is logged (once per outage) and sending pauses for :data:`SEND_PAUSE` seconds.
    """
    from circuitbreaker_app import conf

    app = app if app is not None else celery_app()
    if app is None or time.monotonic() < _send_state.paused_until:
        return False
    interval = float(conf.get("PROBE_INTERVAL"))
    countdown = max(0.0, float(countdown))
    try:
        app.send_task(
            PROBE_CIRCUIT_TASK,
            args=[name],
            kwargs={"generation": generation},
            countdown=countdown or None,
            expires=countdown + interval,
            retry=False,
        )
    except Exception as exc:  # any broker error: beat is the safety net
        with _send_state.lock:
            first = not _send_state.failing
            _send_state.failing = True
            _send_state.paused_until = time.monotonic() + SEND_PAUSE
        if first:
            logger.warning(
                "circuitbreaker: cannot send probe tasks (%s: %s); the beat task will "
                "probe instead. Retrying in %.0f s.",
                type(exc).__name__,
                exc,
                SEND_PAUSE,
            )
        return False
    if _send_state.failing:
        with _send_state.lock:
            _send_state.failing = False
        logger.info("circuitbreaker: sending probe tasks works again")
    return True


def probe_on_open(sender: Any, name: str, new_state: State, **kwargs: Any) -> None:
    """``state_changed`` receiver: a circuit that opened gets its probe at ``retry_at``.

    Runs after the transition commits, in the process that tripped the circuit. The
    task is sent by a background thread (:class:`_Sender`), so a slow or dead broker
    never delays, and never raises into, the guarded call that tripped the circuit.
    """
    if new_state != State.OPEN:
        return
    try:
        app = celery_app()
        if app is not None:
            _sender.submit(app, name)
    except Exception:  # a scheduling bug must never fail the guarded call
        logger.exception("circuitbreaker: could not schedule the probe of %r", name)


class _Sender:
    """One daemon thread per process that sends trip-scheduled probes.

    Restarted lazily after a fork (Celery prefork, gunicorn). The queue is bounded: a
    trip that finds it full is dropped (beat still probes that circuit).
    """

    MAX_PENDING = 1000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: queue.Queue[tuple[Any, str]] | None = None
        self.thread: threading.Thread | None = None
        self.pid: int | None = None

    def submit(self, app: Any, name: str) -> None:
        with self.lock:
            if self.pid != os.getpid() or self.thread is None or not self.thread.is_alive():
                self.queue = queue.Queue(self.MAX_PENDING)
                self.thread = threading.Thread(
                    target=self._run, args=(self.queue,), name="circuitbreaker-probe-sender"
                )
                self.thread.daemon = True
                self.thread.start()
                self.pid = os.getpid()
            pending = self.queue
        assert pending is not None
        try:
            pending.put_nowait((app, name))
        except queue.Full:
            logger.debug("circuitbreaker: probe sender busy; beat will probe %r", name)

    @staticmethod
    def _run(pending: queue.Queue[tuple[Any, str]]) -> None:
        from django.db import connections

        while True:
            app, name = pending.get()
            try:
                deadline = _open_deadline(name)
                if deadline is not None:
                    countdown, generation = deadline
                    send_probe(name, generation, countdown + COUNTDOWN_SLACK, app=app)
            except Exception:
                logger.exception("circuitbreaker: could not schedule the probe of %r", name)
            finally:
                connections.close_all()  # this thread's own connections only
                pending.task_done()

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every submitted probe was handled (tests); False on timeout."""
        deadline = time.monotonic() + timeout
        while self.queue is not None and self.queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


_sender = _Sender()


def _open_deadline(name: str) -> tuple[float, int] | None:
    """(seconds until ``retry_at``, generation) of an open circuit; None when not open."""
    from circuitbreaker_app.store import get_store

    store = get_store()
    entry = store.shared_entry(name)
    state: str  # a State from the entry, the column's value from the row
    if entry is not None:
        state, generation, retry_at = entry.status.state, entry.generation, entry.status.retry_at
    else:  # missing, malformed, or the cache is down: ask the database
        from circuitbreaker_app.models import Circuit

        row = (
            Circuit.objects.using(store.db_alias)
            .filter(name=name)
            .values("state", "generation", "retry_at")
            .first()
        )
        if row is None:
            return None
        state, generation = row["state"], row["generation"]
        retry_at = row["retry_at"].timestamp() if row["retry_at"] else None
    if state != State.OPEN or retry_at is None:
        return None
    return max(0.0, retry_at - store.now()), int(generation)
