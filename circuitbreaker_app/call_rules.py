"""What a guarded call's ending means, for sync and async calls alike: the ``record`` and
``ignore`` rules, ``is_failure``, settling an outcome with the runtime, the fallback's
turn, and the permits ``with`` blocks hold. ``Breaker`` (``breaker.py``) and its async
half (``async_calls.py``) share these; only the waiting differs between them.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable
from time import perf_counter
from typing import Any

from circuitbreaker_app.core import Outcome, Permit
from circuitbreaker_app.fallbacks import CallFallback
from circuitbreaker_app.store import CircuitRuntime

#: ``started`` of a call whose duration nobody needs (no slow-call threshold).
UNTIMED = -1.0
#: What :meth:`CallRules._failed` returns when the caller is to re-raise the call's own
#: error with a bare ``raise``: its traceback stays as the call left it (no entry of the
#: frames that recorded it), and raising it again costs no new traceback entries.
RERAISE: Any = object()

ExceptionRule = type[BaseException] | tuple[type[BaseException], ...] | Callable[[Any], object]


def exception_rule(
    option: str, value: Any
) -> tuple[tuple[type[BaseException], ...], Callable[[BaseException], object] | None]:
    """``record``/``ignore`` as (types, None), or ((), predicate) for a predicate."""
    if isinstance(value, type):
        value = (value,)
    if isinstance(value, tuple | list):
        if all(isinstance(item, type) and issubclass(item, BaseException) for item in value):
            return tuple(value), None
    elif callable(value):
        try:
            signature = inspect.signature(value)
        except (TypeError, ValueError):  # a builtin without a signature: trust it
            return (), value
        try:
            signature.bind(BaseException())
        except TypeError:
            raise TypeError(
                f"breaker() option {option!r} must be a predicate taking the exception "
                f"(exc -> bool), but {value!r} does not take one argument"
            ) from None
        return (), value
    raise TypeError(
        f"breaker() option {option!r} must be an exception class, a tuple of them, or a "
        f"predicate exc -> bool, but was {value!r}"
    )


class CallRules:
    """The call-site options of a handle and how they judge a call's ending."""

    name: str
    fallback: Callable[[BaseException], Any] | None

    def _set_rules(
        self,
        record: ExceptionRule,
        ignore: ExceptionRule,
        is_failure: Callable[[Any], bool] | None,
        fallback: Callable[[BaseException], Any] | None,
    ) -> None:
        if is_failure is not None and not callable(is_failure):
            raise TypeError(
                f"breaker() option 'is_failure' must be callable, but was {is_failure!r}"
            )
        if fallback is not None and not callable(fallback):
            raise TypeError(f"breaker() option 'fallback' must be callable, but was {fallback!r}")
        self._record_types, self._record_test = exception_rule("record", record)
        self._ignore_types, self._ignore_test = exception_rule("ignore", ignore)
        self.record = self._record_test or self._record_types
        self.ignore = self._ignore_test or self._ignore_types
        #: ``record`` and ``ignore`` are exception types (no predicate): a failure is
        #: classified by two ``isinstance`` calls in :meth:`_failed`'s own frame.
        self._typed = self._record_test is None and self._ignore_test is None
        self.is_failure = is_failure
        self.fallback = fallback
        #: A fallback that sees successes (last_good), else None.
        self._memory: CallFallback | None = fallback if isinstance(fallback, CallFallback) else None
        #: A closed success is one count: no result check, no fallback that sees it.
        self._plain = is_failure is None and self._memory is None
        #: When a fallback sees successes (and no is_failure judges them): its table of
        #: ``fn -> args -> time`` before which a success needs no call to it.
        self._due = (
            self._memory.due_for(self.name)
            if self._memory is not None and is_failure is None
            else None
        )
        self._permits: contextvars.ContextVar[tuple[tuple[Permit, float], ...]] = (
            contextvars.ContextVar(f"circuitbreaker_permits_{self.name}", default=())
        )

    # -- outcome classification ----------------------------------------------------------
    def classify(self, exc: BaseException) -> Outcome:
        """Failure, ignored, or success (the dependency answered; the error is the caller's).

        ``ignore`` is asked first, then ``record``. A predicate's own error propagates
        (see :meth:`_outcome_of`)."""
        if not isinstance(exc, Exception):
            return Outcome.IGNORED
        if self._ignore_test is None:
            if isinstance(exc, self._ignore_types):
                return Outcome.IGNORED
        elif self._ignore_test(exc):
            return Outcome.IGNORED
        if self._record_test is None:
            return Outcome.FAILURE if isinstance(exc, self._record_types) else Outcome.SUCCESS
        return Outcome.FAILURE if self._record_test(exc) else Outcome.SUCCESS

    def _outcome_of(self, exc: BaseException) -> tuple[Outcome, BaseException | None]:
        """:meth:`classify`, and the error of a ``record``/``ignore`` predicate that raised.

        A predicate that raises makes the call *ignored* (it says nothing about the
        dependency), and its error is what the caller gets, chained to the call's own
        error (``raise predicate_error from exc``): a bug in a predicate is never hidden,
        and the original error stays in the traceback."""
        try:
            return self.classify(exc), None
        except BaseException as error:
            error.__cause__ = exc
            return Outcome.IGNORED, error

    def _result_outcome(self, result: Any) -> Outcome:
        if self.is_failure is not None and self.is_failure(result):
            return Outcome.FAILURE
        return Outcome.SUCCESS

    def _rejected(self, runtime: CircuitRuntime) -> None:
        """Count a rejection (the fleet's totals, read at scrape time)."""
        runtime.rejected += 1.0

    # -- settling, sync (the async half awaits the same steps off the event loop) ----------
    def _settle(
        self, runtime: CircuitRuntime, permit: Permit, outcome: Outcome, started: float
    ) -> None:
        duration = perf_counter() - started if started != UNTIMED else 0.0
        runtime.on_result(permit, outcome, duration)

    def _settle_result(
        self, runtime: CircuitRuntime, permit: Permit, result: Any, started: float
    ) -> Outcome:
        """Settle a returned call; an ``is_failure`` that raises still hands the permit back."""
        try:
            outcome = self._result_outcome(result)
        except BaseException:
            self._settle(runtime, permit, Outcome.IGNORED, started)
            raise
        self._settle(runtime, permit, outcome, started)
        return outcome

    def _finish(
        self,
        runtime: CircuitRuntime,
        permit: Permit,
        result: Any,
        started: float,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Settle a returned call admitted with ``permit``; a fallback that sees successes
        sees this one."""
        outcome = self._settle_result(runtime, permit, result, started)
        if outcome is Outcome.SUCCESS and self._memory is not None:
            self._memory.succeeded(self.name, fn, args, kwargs, result, runtime.clock())
        return result

    def _closed_result(
        self,
        runtime: CircuitRuntime,
        token: int,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result: Any,
        now: float,
    ) -> None:
        """Settle the result of a call admitted on the hot path that needs a look:
        ``is_failure``, or a fallback that sees successes."""
        is_failure = self.is_failure
        if is_failure is None:
            passed = True
        else:
            try:
                passed = not is_failure(result)
            except BaseException:
                self._settle(runtime, Permit(runtime.status.state, token), Outcome.IGNORED, UNTIMED)
                raise
        if passed and (
            runtime.batch_token == token  # runtime.batches(token), inlined
            or (runtime.count_token == token and runtime.clock() < runtime.admit_until)
        ):
            runtime.pending += 1  # as on the hot path (an HTTP 200 through a transport)
        else:
            outcome = Outcome.SUCCESS if passed else Outcome.FAILURE
            self._settle(runtime, Permit(runtime.status.state, token), outcome, UNTIMED)
        if passed and self._memory is not None:
            self._memory.succeeded(self.name, fn, args, kwargs, result, now)

    def _failed(
        self,
        runtime: CircuitRuntime,
        permit: Permit | int,
        exc: BaseException,
        started: float,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Record an exception's outcome; the fallback's answer, or :data:`RERAISE`: the
        caller re-raises ``exc`` itself (``raise`` in its ``except`` block).

        ``permit`` is the call's permit, or the generation (``count_token``) of a call
        admitted on the hot path without one: its commonest failure (recorded, CLOSED)
        is classified here and settled by one runtime call (:meth:`CircuitRuntime.failed`).
        A ``record``/``ignore`` predicate that raises is raised from here (see
        :meth:`_outcome_of`)."""
        if (
            type(permit) is int
            and self._typed
            and isinstance(exc, self._record_types)
            and isinstance(exc, Exception)
            and not isinstance(exc, self._ignore_types)
        ):
            duration = perf_counter() - started if started != UNTIMED else 0.0
            runtime.failed(permit, duration)
            if self.fallback is not None:
                return self._fall_back(exc, fn, args, kwargs)
            return RERAISE
        held = Permit(runtime.status.state, permit) if isinstance(permit, int) else permit
        outcome, error = self._outcome_of(exc)
        self._settle(runtime, held, outcome, started)
        if outcome is Outcome.FAILURE and self.fallback is not None:
            return self._fall_back(exc, fn, args, kwargs)
        if error is None:
            return RERAISE
        try:
            raise error
        finally:
            del exc, error  # else error → traceback → this frame → error: a GC cycle

    def _fall_back(
        self,
        exc: BaseException,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The fallback's answer to a rejection or a recorded failure."""
        if self._memory is not None:
            return self._memory.answer(self.name, exc, fn, args, kwargs)
        return self.fallback(exc)  # type: ignore[misc]

    # -- the permits of ``with`` blocks ----------------------------------------------------
    def _enter(self, permit: Permit) -> None:
        """Hold ``permit`` for the innermost ``with`` block (per thread and task)."""
        self._permits.set((*self._permits.get(), (permit, perf_counter())))

    def _leave(
        self, exc: BaseException | None
    ) -> tuple[Permit, Outcome, float, BaseException | None]:
        """Hand back the innermost block's permit, how the block ended, its start, and the
        error of a predicate that raised (see :meth:`_outcome_of`)."""
        stack = self._permits.get()
        (permit, started), rest = stack[-1], stack[:-1]
        self._permits.set(rest)
        outcome, error = (Outcome.SUCCESS, None) if exc is None else self._outcome_of(exc)
        return permit, outcome, started, error
