"""The async half of the ``breaker()`` handle: ``acall``, ``async with`` and async
decorated functions. The rules are ``call_rules.py``'s, as for sync calls; what differs
is that cache and database I/O runs off the event loop (``sync_to_async``), and only
when the runtime says a step may need it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async

from circuitbreaker_app.call_rules import CallRules
from circuitbreaker_app.core import CircuitOpenError, Outcome, Permit
from circuitbreaker_app.store import CircuitRuntime, get_store

P = ParamSpec("P")
R = TypeVar("R")


class AsyncCalls(CallRules):
    """``acall``, ``async with``; mixed into :class:`~circuitbreaker_app.breaker.Breaker`."""

    _cached: CircuitRuntime | None
    _store: object

    def _runtime(self) -> CircuitRuntime:
        raise NotImplementedError  # Breaker's

    def _adopt(self, store: object) -> None:
        raise NotImplementedError  # Breaker's

    async def _aruntime(self) -> CircuitRuntime:
        # The first use in a process reads the database: never on the event loop.
        store = get_store()
        runtime = store.loaded(self.name)
        if runtime is None:
            return await sync_to_async(self._runtime)()
        self._cached = runtime  # what _runtime() would remember
        self._adopt(store)
        return runtime

    async def _aacquire(self, runtime: CircuitRuntime) -> Permit:
        try:
            if runtime.acquire_needs_io():
                return await sync_to_async(runtime.acquire)()
            return runtime.acquire()
        except CircuitOpenError:
            self._rejected(runtime)
            raise

    async def _asettle(
        self, runtime: CircuitRuntime, permit: Permit, outcome: Outcome, duration: float
    ) -> None:
        if runtime.result_needs_io(permit, outcome, duration):
            await sync_to_async(runtime.on_result)(permit, outcome, duration)
        else:
            runtime.on_result(permit, outcome, duration)

    async def acall(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn`` through the circuit; cache and database I/O runs off the event loop."""
        runtime = self._cached
        if runtime is not None:  # no store comparison: see Breaker._guard
            token = runtime.count_token
            if token >= 0 and runtime.clock() < runtime.admit_until:
                return await self._acall_admitted(runtime, token, fn, args, kwargs)
        runtime = await self._aruntime()
        try:
            permit = await self._aacquire(runtime)
        except CircuitOpenError as exc:
            if self.fallback is not None:
                return await self._afall_back(exc, fn, args, kwargs)
            raise
        started = perf_counter()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            duration = perf_counter() - started
            return await self._afailed(runtime, permit, exc, duration, fn, args, kwargs)
        await self._aresult(runtime, permit, result, perf_counter() - started, fn, args, kwargs)
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
            return await self._afailed(runtime, permit, exc, 0.0, fn, args, kwargs)
        is_failure = self.is_failure
        if is_failure is not None and self._memory is None:
            # Judged here, not in _aresult: a passed check (an HTTP 200) is one count,
            # with no coroutine made and awaited for it.
            try:
                passed = not is_failure(result)
            except BaseException:
                await self._asettle(runtime, permit, Outcome.IGNORED, 0.0)
                raise
            if passed and runtime.batches(token):
                runtime.pending += 1
            else:
                outcome = Outcome.SUCCESS if passed else Outcome.FAILURE
                await self._asettle(runtime, permit, outcome, 0.0)
            return result
        if self._plain and runtime.batches(token):
            runtime.pending += 1  # flushed with the next refresh or failure, off the loop
            return result
        await self._aresult(runtime, permit, result, 0.0, fn, args, kwargs, token)
        return result

    async def _afailed(
        self,
        runtime: CircuitRuntime,
        permit: Permit,
        exc: BaseException,
        duration: float,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """:meth:`_failed` for ``acall``: record the exception's outcome; answer with the
        fallback or re-raise it."""
        outcome, error = self._outcome_of(exc)
        await self._asettle(runtime, permit, outcome, duration)
        if outcome is Outcome.FAILURE and self.fallback is not None:
            return await self._afall_back(exc, fn, args, kwargs)
        try:
            raise exc if error is None else error
        finally:
            del exc, error  # else error → traceback → this frame → error: a GC cycle

    async def _aresult(
        self,
        runtime: CircuitRuntime,
        permit: Permit,
        result: Any,
        duration: float,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        token: int | None = None,
    ) -> None:
        """Settle a returned call (``is_failure`` decides); with ``token`` (admitted on the
        hot path) a success is one count while the circuit is where it was."""
        try:
            outcome = self._result_outcome(result)
        except BaseException:
            await self._asettle(runtime, permit, Outcome.IGNORED, duration)
            raise
        if outcome is Outcome.SUCCESS and token is not None and runtime.batches(token):
            runtime.pending += 1
        else:
            await self._asettle(runtime, permit, outcome, duration)
        if outcome is Outcome.SUCCESS and self._memory is not None:
            await self._memory.asucceeded(self.name, fn, args, kwargs, result, runtime.clock())

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
        answer = self.fallback(exc)  # type: ignore[misc]
        if inspect.isawaitable(answer):
            return await answer
        return answer

    async def __aenter__(self) -> Any:
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
        await self._asettle(await self._aruntime(), permit, outcome, perf_counter() - started)
        if error is not None:
            raise error
