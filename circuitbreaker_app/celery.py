"""Celery integration: a task that meets an open circuit retries when it may pass again.

A task that calls a dependency whose circuit is open should not fail (and page someone)
nor hammer the breaker with immediate retries: it should come back when the circuit
admits calls again. Two equivalent ways, pick one::

    from celery import shared_task
    from circuitbreaker_app.celery import CircuitBreakerTask, retry_when_open

    @shared_task(base=CircuitBreakerTask, max_retries=5)
    def sync_order(order_id): ...            # CircuitOpenError -> retry at retry_after

    @shared_task(bind=True, max_retries=5)
    @retry_when_open
    def sync_invoice(self, invoice_id): ...  # the same, as a decorator (bound tasks)

Either way, a :class:`~circuitbreaker_app.CircuitOpenError` escaping the task becomes
``task.retry(exc=exc, countdown=retry_countdown(exc))``: the task's state is RETRY, not
FAILURE, and it runs again after the circuit's ``retry_after`` (rounded up to whole
seconds), or the circuit's ``wait_duration`` when ``retry_after`` is unknown (forced open,
or half-open with every trial taken). ``max_retries`` is respected: past it, the
``CircuitOpenError`` is raised and the task fails as usual. A rejection is not a call,
so the breaker counts nothing for it either. Called directly (``sync_order(1)``, not
through a worker or ``apply()``), the task raises the ``CircuitOpenError`` unchanged.

This module is named ``celery`` inside the package; it imports the real Celery with
absolute imports, so ``from celery import ...`` keeps meaning the Celery library. It needs
Celery (the ``[celery]`` extra); without it, importing this module raises an ImportError
that says how to install it.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any, TypeVar

from circuitbreaker_app import extras

try:
    from celery import Task
    from celery.exceptions import Retry
except ImportError as exc:  # Celery is the [celery] extra
    raise extras.missing_celery(__name__) from exc

from circuitbreaker_app.core import CircuitOpenError
from circuitbreaker_app.core.config import DEFAULT_WAIT_DURATION

__all__ = ["CircuitBreakerTask", "retry_countdown", "retry_later", "retry_when_open"]

logger = logging.getLogger("circuitbreaker_app")

F = TypeVar("F", bound=Callable[..., Any])


def _wait_duration(circuit: str) -> float:
    from circuitbreaker_app.store import get_store

    try:
        return float(get_store().runtime(circuit).config.wait_duration)
    except Exception as exc:  # unknown circuit, database down: never fail the retry itself
        logger.warning(
            "circuit %r: no wait_duration (%s: %s); retrying in %s s",
            circuit,
            type(exc).__name__,
            exc,
            DEFAULT_WAIT_DURATION,
        )
        return DEFAULT_WAIT_DURATION


def retry_countdown(exc: CircuitOpenError) -> int:
    """Whole seconds until a task rejected with ``exc`` should run again (at least 1).

    ``exc.retry_after`` rounded up, so the retry never arrives just before the circuit
    admits calls; the circuit's ``wait_duration`` when ``retry_after`` is unknown.
    """
    if not isinstance(exc, CircuitOpenError):
        raise TypeError(f"retry_countdown() takes a CircuitOpenError, not {exc!r}")
    seconds = exc.retry_after if exc.retry_after is not None else _wait_duration(exc.circuit)
    return max(1, math.ceil(seconds))


def retry_later(task: Task, exc: CircuitOpenError, **options: Any) -> Retry:
    """``task.retry()`` at :func:`retry_countdown`; use as ``raise retry_later(self, exc)``.

    ``options`` go to :meth:`celery.Task.retry` (``max_retries``, ``queue``, ...); a
    ``countdown`` or ``eta`` there replaces the computed countdown.
    """
    if not isinstance(task, Task):
        raise TypeError(f"retry_later() needs the running Celery task, not {task!r}")
    if "countdown" not in options and "eta" not in options:
        options["countdown"] = retry_countdown(exc)
    return task.retry(exc=exc, **options)


class CircuitBreakerTask(Task):
    """Task base class: a ``CircuitOpenError`` escaping ``run`` retries the task later."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Celery calls a custom __call__ in place of run() with the request already
        # pushed; calling run() (not super().__call__) keeps that request, with its
        # retry count.
        try:
            return self.run(*args, **kwargs)
        except CircuitOpenError as exc:
            raise retry_later(self, exc) from exc


def retry_when_open(fn: F) -> F:
    """Decorate a *bound* task's function (``bind=True``) to retry on an open circuit."""
    if not callable(fn):
        raise TypeError(f"retry_when_open decorates a task function, not {fn!r}")

    @functools.wraps(fn)
    def wrapper(self: Task, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, Task):
            raise TypeError(
                f"{fn.__qualname__}: retry_when_open needs a bound task; write "
                "@app.task(bind=True) above @retry_when_open and take `self` first"
            )
        try:
            return fn(self, *args, **kwargs)
        except CircuitOpenError as exc:
            raise retry_later(self, exc) from exc

    return wrapper  # type: ignore[return-value]
