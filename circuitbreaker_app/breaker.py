"""The ``breaker()`` handle: guard a call as decorator, context manager, ``call``/``acall``."""

from __future__ import annotations

import contextvars
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async

from circuitbreaker_app.core import CircuitOpenError, Outcome, Permit, State
from circuitbreaker_app.core.config import check_name
from circuitbreaker_app.fallbacks import CallFallback
from circuitbreaker_app.observers import OBSERVERS, notify
from circuitbreaker_app.store import CircuitRuntime, get_store
from circuitbreaker_app.store import registry as store_module

P = ParamSpec("P")
R = TypeVar("R")

#: ``started`` of a call whose duration nobody needs (no slow-call threshold, no observer).
UNTIMED = -1.0

_ALLOWED_OPTIONS = ("record", "ignore", "is_failure", "fallback")


ExceptionRule = type[BaseException] | tuple[type[BaseException], ...] | Callable[[Any], object]


def _exception_rule(
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


class Breaker:
    """A handle on the circuit ``name`` with call-site options (DESIGN §1).

    Handles are cheap: every handle of one name shares this process's snapshot of it.
    """

    def __init__(
        self,
        name: str,
        *,
        record: ExceptionRule = (Exception,),
        ignore: ExceptionRule = (),
        is_failure: Callable[[Any], bool] | None = None,
        fallback: Callable[[BaseException], Any] | None = None,
    ) -> None:
        check_name(name)
        if is_failure is not None and not callable(is_failure):
            raise TypeError(
                f"breaker() option 'is_failure' must be callable, but was {is_failure!r}"
            )
        if fallback is not None and not callable(fallback):
            raise TypeError(f"breaker() option 'fallback' must be callable, but was {fallback!r}")
        self.name = name
        self._record_types, self._record_test = _exception_rule("record", record)
        self._ignore_types, self._ignore_test = _exception_rule("ignore", ignore)
        self.record = self._record_test or self._record_types
        self.ignore = self._ignore_test or self._ignore_types
        self.is_failure = is_failure
        self.fallback = fallback
        #: A fallback that sees successes (last_good), else None.
        self._memory: CallFallback | None = fallback if isinstance(fallback, CallFallback) else None
        #: A closed success is one count: no result check, no fallback that sees it.
        self._plain = is_failure is None and self._memory is None
        #: When a fallback sees successes (and no is_failure judges them): its table of
        #: ``(fn, args) -> time`` before which a success needs no call to it.
        self._due = (
            self._memory.due_for(name) if self._memory is not None and is_failure is None else None
        )
        self._store: object = None
        self._cached: CircuitRuntime | None = None
        self._permits: contextvars.ContextVar[tuple[tuple[Permit, float], ...]] = (
            contextvars.ContextVar(f"circuitbreaker_permits_{name}", default=())
        )

    def __repr__(self) -> str:
        return f"<Breaker {self.name!r}>"

    # -- what this process sees ------------------------------------------------------------
    def _runtime(self) -> CircuitRuntime:
        # One dict lookup per call; the handle remembers its runtime until the process's
        # store is replaced (settings changed, fork).
        store = store_module._store
        if store is not None and store is self._store:
            return self._cached  # type: ignore[return-value]
        store = get_store()
        self._cached = store.runtime(self.name)
        self._adopt(store)
        return self._cached

    async def _aruntime(self) -> CircuitRuntime:
        # The first use in a process reads the database: never on the event loop.
        store = get_store()
        runtime = store.loaded(self.name)
        if runtime is None:
            return await sync_to_async(self._runtime)()
        self._cached = runtime  # what _runtime() would remember
        self._adopt(store)
        return runtime

    def _adopt(self, store: object) -> None:
        """Use ``store`` from now on; a fallback that timed things on the previous store's
        clock (last_good) forgets them."""
        if self._memory is not None and self._store is not None and store is not self._store:
            self._memory.store_changed()
        self._store = store

    @property
    def state(self) -> State:
        """The state of the circuit as this process sees it now."""
        return self._runtime().status.state

    @property
    def retry_after(self) -> float | None:
        """Seconds until calls may pass again, or None (closed, or unknown)."""
        return self._runtime().retry_after

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
        if self.is_failure is None and runtime.count_token == token:
            runtime.pending += 1  # as on the hot path: only a fallback wants to see it
            self._memory.succeeded(self.name, fn, args, kwargs, result, now)  # type: ignore[union-attr]
            return
        try:
            outcome = self._result_outcome(result)
        except BaseException:
            self._settle(runtime, Permit(runtime.status.state, token), Outcome.IGNORED, UNTIMED)
            raise
        if outcome is Outcome.SUCCESS and runtime.count_token == token:
            runtime.pending += 1
        else:
            self._settle(runtime, Permit(runtime.status.state, token), outcome, UNTIMED)
        if outcome is Outcome.SUCCESS and self._memory is not None:
            self._memory.succeeded(self.name, fn, args, kwargs, result, now)

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

    # -- sync ------------------------------------------------------------------------------
    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn`` through the circuit; fallback (if any) on rejection or failure."""
        return self._guard(fn, args, kwargs)

    def _guard(self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """:meth:`call`, with the arguments as a tuple and a dict (forwarding ``*args`` and
        ``**kwargs`` through one more frame would cost more than the rest of the hot path)."""
        # The hot path (DESIGN §4: no I/O, next to no cost) reads the plan the runtime keeps
        # in plain attributes: one clock reading, no method call, no allocation.
        runtime = self._cached
        if runtime is None or store_module._store is not self._store:
            runtime = self._runtime()
        now = runtime.clock()
        if now < runtime.admit_until:
            token = runtime.count_token
            if token < 0 or OBSERVERS:
                return self._call_admitted(runtime, fn, args, kwargs)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                return self._failed(
                    runtime, Permit(runtime.status.state, token), exc, UNTIMED, fn, args, kwargs
                )
            if self._plain and runtime.count_token == token:
                runtime.pending += 1  # flushed with the next refresh or failure
                return result
            due = self._due
            if due is not None and not kwargs and runtime.count_token == token:
                # last_good: most successes come within its refresh period; they cost a
                # dict lookup here, not a call.
                runtime.pending += 1
                try:  # a subscript is cheaper than .get(); a miss is once per key
                    if now < due[fn, args]:
                        return result
                except (KeyError, TypeError):  # new key, or unhashable: the fallback decides
                    pass
                self._memory.succeeded(self.name, fn, args, kwargs, result, now)  # type: ignore[union-attr]
                return result
            self._closed_result(runtime, token, fn, args, kwargs, result, now)
            return result
        if now < runtime.reject_until:
            runtime.rejected += 1  # the fleet's totals (read at scrape time)
            if OBSERVERS:
                notify(self.name, "rejected", None)
            retry = None if runtime.retry_clock is None else runtime.retry_clock - now
            if self.fallback is not None:
                return self._fall_back(  # type: ignore[no-any-return]
                    CircuitOpenError(self.name, runtime.reject_state, retry), fn, args, kwargs
                )
            # Raised without a name in this frame: a local holding it would make a cycle
            # (error → traceback → frame → error) that only the garbage collector frees.
            raise CircuitOpenError(self.name, runtime.reject_state, retry)
        return self._call_with_permit(runtime, fn, args, kwargs)

    def _call_admitted(
        self,
        runtime: CircuitRuntime,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        """A call admitted without a permit whose success needs more than a count: timed
        (slow calls configured, or an observer), DISABLED, or at the failure threshold."""
        generation = runtime.fast_admit()
        if generation < 0:
            return self._call_with_permit(runtime, fn, args, kwargs)
        # The clock is read only when a duration matters (slow calls, or an observer).
        started = perf_counter() if runtime._slow_after is not None or OBSERVERS else UNTIMED
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            return self._failed(
                runtime, Permit(runtime.status.state, generation), exc, started, fn, args, kwargs
            )
        if self.is_failure is None or not self.is_failure(result):
            duration = perf_counter() - started if started != UNTIMED else 0.0
            if runtime.fast_success(generation, duration):
                if OBSERVERS:
                    notify(self.name, "success", duration)
                if self._memory is not None:
                    self._memory.succeeded(self.name, fn, args, kwargs, result, runtime.clock())
                return result
        permit = Permit(runtime.status.state, generation)
        outcome = self._settle_result(runtime, permit, result, started)
        if outcome is Outcome.SUCCESS and self._memory is not None:
            self._memory.succeeded(self.name, fn, args, kwargs, result, runtime.clock())
        return result

    def _call_with_permit(
        self,
        runtime: CircuitRuntime,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        try:
            permit = runtime.acquire()
        except CircuitOpenError as exc:
            runtime.rejected += 1
            if OBSERVERS:
                notify(self.name, "rejected", None)
            if self.fallback is not None:
                return self._fall_back(exc, fn, args, kwargs)  # type: ignore[no-any-return]
            raise
        started = perf_counter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            return self._failed(runtime, permit, exc, started, fn, args, kwargs)
        outcome = self._settle_result(runtime, permit, result, started)
        if outcome is Outcome.SUCCESS and self._memory is not None:
            self._memory.succeeded(self.name, fn, args, kwargs, result, runtime.clock())
        return result

    def _failed(
        self,
        runtime: CircuitRuntime,
        permit: Permit,
        exc: BaseException,
        started: float,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Record an exception's outcome; answer with the fallback or re-raise it."""
        outcome, error = self._outcome_of(exc)
        self._settle(runtime, permit, outcome, started)
        if outcome is Outcome.FAILURE and self.fallback is not None:
            return self._fall_back(exc, fn, args, kwargs)
        try:
            raise exc if error is None else error
        finally:
            del exc, error  # else error → traceback → this frame → error: a GC cycle

    def _settle(
        self, runtime: CircuitRuntime, permit: Permit, outcome: Outcome, started: float
    ) -> None:
        duration = perf_counter() - started if started != UNTIMED else 0.0
        runtime.on_result(permit, outcome, duration)
        if OBSERVERS:
            notify(self.name, outcome.value, duration)

    def __enter__(self) -> Breaker:
        runtime = self._runtime()
        try:
            permit = runtime.acquire()
        except CircuitOpenError:
            runtime.rejected += 1
            if OBSERVERS:
                notify(self.name, "rejected", None)
            raise
        self._enter(permit)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        permit, outcome, started, error = self._leave(exc)
        self._settle(self._runtime(), permit, outcome, started)
        if error is not None:
            raise error

    def _enter(self, permit: Permit) -> None:
        """Hold ``permit`` for the innermost ``with`` block (per thread and task)."""
        self._permits.set((*self._permits.get(), (permit, time.perf_counter())))

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

    # -- async -----------------------------------------------------------------------------
    async def _aacquire(self, runtime: CircuitRuntime) -> Permit:
        try:
            if runtime.acquire_needs_io():
                return await sync_to_async(runtime.acquire)()
            return runtime.acquire()
        except CircuitOpenError:
            runtime.rejected += 1
            if OBSERVERS:
                notify(self.name, "rejected", None)
            raise

    async def _asettle(
        self, runtime: CircuitRuntime, permit: Permit, outcome: Outcome, duration: float
    ) -> None:
        if runtime.result_needs_io(permit, outcome, duration):
            await sync_to_async(runtime.on_result)(permit, outcome, duration)
        else:
            runtime.on_result(permit, outcome, duration)
        if OBSERVERS:
            notify(self.name, outcome.value, duration)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn`` through the circuit; cache and database I/O runs off the event loop."""
        runtime = self._cached
        if runtime is not None and store_module._store is self._store and not OBSERVERS:
            token = runtime.count_token
            if token >= 0 and runtime.clock() < runtime.admit_until:
                return await self._acall_admitted(runtime, token, fn, args, kwargs)  # type: ignore[no-any-return]
        runtime = await self._aruntime()
        try:
            permit = await self._aacquire(runtime)
        except CircuitOpenError as exc:
            if self.fallback is not None:
                return await self._afall_back(exc, fn, args, kwargs)  # type: ignore[no-any-return]
            raise
        started = time.perf_counter()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            outcome, error = self._outcome_of(exc)
            await self._asettle(runtime, permit, outcome, time.perf_counter() - started)
            if outcome is Outcome.FAILURE and self.fallback is not None:
                return await self._afall_back(exc, fn, args, kwargs)  # type: ignore[no-any-return]
            if error is not None:
                raise error  # noqa: B904 - chained to exc by _outcome_of
            raise
        try:
            outcome = self._result_outcome(result)
        except BaseException:
            await self._asettle(runtime, permit, Outcome.IGNORED, time.perf_counter() - started)
            raise
        await self._asettle(runtime, permit, outcome, time.perf_counter() - started)
        if outcome is Outcome.SUCCESS and self._memory is not None:
            await self._memory.asucceeded(self.name, fn, args, kwargs, result, runtime.clock())
        return result

    async def _acall_admitted(
        self,
        runtime: CircuitRuntime,
        token: int,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """The hot path of :meth:`call` for coroutines: a fresh snapshot admits the call
        with no permit and no I/O, and a plain success is one count. The permit of an
        outcome that needs settling is the admission's (state and generation): a circuit
        that moved on meanwhile drops it, as it drops any outcome of an earlier period."""
        permit = Permit(runtime.reject_state, token)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            outcome, error = self._outcome_of(exc)
            await self._asettle(runtime, permit, outcome, 0.0)
            if outcome is Outcome.FAILURE and self.fallback is not None:
                return await self._afall_back(exc, fn, args, kwargs)
            if error is not None:
                raise error  # noqa: B904 - chained to exc by _outcome_of
            raise
        if self._plain and runtime.count_token == token:
            runtime.pending += 1  # flushed with the next refresh or failure, off the loop
            return result
        try:
            outcome = self._result_outcome(result)
        except BaseException:
            await self._asettle(runtime, permit, Outcome.IGNORED, 0.0)
            raise
        if outcome is Outcome.SUCCESS and runtime.count_token == token:
            runtime.pending += 1
        else:
            await self._asettle(runtime, permit, outcome, 0.0)
        if outcome is Outcome.SUCCESS and self._memory is not None:
            await self._memory.asucceeded(self.name, fn, args, kwargs, result, runtime.clock())
        return result

    async def _afall_back(
        self,
        exc: BaseException,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """:meth:`_fall_back` for ``acall``: an async fallback is awaited."""
        if self._memory is not None:
            return await self._memory.aanswer(self.name, exc, fn, args, kwargs)
        return await _maybe_await(self.fallback(exc))  # type: ignore[misc]

    async def __aenter__(self) -> Breaker:
        permit = await self._aacquire(await self._aruntime())
        self._enter(permit)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        permit, outcome, started, error = self._leave(exc)
        await self._asettle(await self._aruntime(), permit, outcome, time.perf_counter() - started)
        if error is not None:
            raise error

    # -- decorator -------------------------------------------------------------------------
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function so every call goes through the circuit."""
        if not callable(fn):
            raise TypeError(f"breaker({self.name!r}) decorates callables, not {fn!r}")
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.acall(fn, *args, **kwargs)  # type: ignore[arg-type]

            async_guarded.breaker = self  # type: ignore[attr-defined]
            return async_guarded  # type: ignore[return-value]

        guard = self._guard

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            return guard(fn, args, kwargs)

        guarded.breaker = self  # type: ignore[attr-defined]
        return guarded


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def breaker(name: str, **options: Any) -> Breaker:
    """A handle on the circuit ``name``; see :class:`Breaker` for the options."""
    unknown = sorted(set(options) - set(_ALLOWED_OPTIONS))
    if unknown:
        raise TypeError(
            f"breaker() got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(_ALLOWED_OPTIONS)}"
        )
    return Breaker(name, **options)
