"""The ``breaker()`` handle: guard a call as decorator, context manager, ``call``/``acall``.

The sync hot path lives here; how a call's ending is judged (``record``/``ignore``,
``is_failure``, the fallback) is ``call_rules.py``'s, and the async half is
``async_calls.py``'s.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Hashable
from time import perf_counter
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from circuitbreaker_app.async_calls import AsyncCalls
from circuitbreaker_app.call_rules import RERAISE, UNTIMED, ExceptionRule
from circuitbreaker_app.core import CircuitOpenError, Permit, State
from circuitbreaker_app.core.config import check_name
from circuitbreaker_app.fallbacks import CallFallback
from circuitbreaker_app.store import CircuitRuntime, get_store
from circuitbreaker_app.store import registry as store_module

P = ParamSpec("P")
R = TypeVar("R")

_ALLOWED_OPTIONS = ("record", "ignore", "is_failure", "fallback")


class Breaker(AsyncCalls):
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
        self.name = name
        self._set_rules(record, ignore, is_failure, fallback)
        self._store: object = None
        self._cached: CircuitRuntime | None = None

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

    # -- sync ------------------------------------------------------------------------------
    def call(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn`` through the circuit; fallback (if any) on rejection or failure."""
        return self._guard(fn, args, kwargs)

    def _guard(self, fn: Callable[..., R], args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        """:meth:`call`, with the arguments as a tuple and a dict (forwarding ``*args`` and
        ``**kwargs`` through one more frame would cost more than the rest of the hot path)."""
        # The hot path (DESIGN §4: no I/O, next to no cost) reads the plan the runtime keeps
        # in plain attributes: one clock reading, no method call, no allocation. A plan
        # that admits or rejects is the process's store's (a replaced one retires, see
        # reset_store()): the stores are compared only when the plan does neither.
        runtime = self._cached
        if runtime is None:
            runtime = self._runtime()
        now = runtime.clock()
        if now < runtime.admit_until:
            token = runtime.count_token
            if token < 0:
                return self._call_admitted(runtime, fn, args, kwargs)
            try:  # without keywords, no copy of the empty dict (BUILD_MAP + DICT_MERGE)
                result = fn(*args, **kwargs) if kwargs else fn(*args)
            except BaseException as exc:
                answer = self._failed(runtime, token, exc, UNTIMED, fn, args, kwargs)
                if answer is RERAISE:
                    raise
                return answer
            # Dated when it ends (runtime.batches(), inlined): a count window's batch
            # takes it whenever; a time window's only if it ends before admit_until.
            batches = runtime.batch_token == token or (
                runtime.count_token == token and runtime.clock() < runtime.admit_until
            )
            if self._plain and batches:
                runtime.pending += 1  # flushed with the next refresh or failure
                return result
            due = self._due
            if due is not None and not kwargs and batches:
                # last_good: most successes come within its refresh period; they cost a
                # dict lookup here, not a call.
                runtime.pending += 1
                try:  # subscripts are cheaper than .get(); a miss is once per key
                    if now < due[fn][args]:
                        return result
                except (KeyError, TypeError):  # new key, or unhashable: the fallback decides
                    pass
                self._memory.succeeded(self.name, fn, args, kwargs, result, now)
                return result
            self._closed_result(runtime, token, fn, args, kwargs, result, now)
            return result
        if now < runtime.reject_until:
            runtime.rejected += 1.0  # the fleet's totals (read at scrape time)
            # retry_after = retry_clock - now, taken when read (core/errors.py)
            if self.fallback is not None:
                return self._fall_back(
                    CircuitOpenError(self.name, runtime.reject_state, runtime.retry_clock, now),
                    fn,
                    args,
                    kwargs,
                )
            # Raised without a name in this frame: a local holding it would make a cycle
            # (error → traceback → frame → error) that only the garbage collector frees.
            raise CircuitOpenError(self.name, runtime.reject_state, runtime.retry_clock, now)
        if store_module._store is not self._store:
            runtime = self._runtime()  # replaced: this call takes a permit of the new store
        return self._call_with_permit(runtime, fn, args, kwargs)

    def _call_admitted(
        self,
        runtime: CircuitRuntime,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        """A call admitted without a permit whose success needs more than a count: timed
        (slow calls configured), DISABLED, or at the failure threshold."""
        generation = runtime.fast_admit()
        if generation < 0:
            return self._call_with_permit(runtime, fn, args, kwargs)
        # The clock is read only when a duration matters (slow calls).
        started = perf_counter() if runtime._slow_after is not None else UNTIMED
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            answer = self._failed(runtime, generation, exc, started, fn, args, kwargs)
            if answer is RERAISE:
                raise
            return answer
        if self.is_failure is None or not self.is_failure(result):
            duration = perf_counter() - started if started != UNTIMED else 0.0
            if runtime.fast_success(generation, duration):
                if self._memory is not None:
                    self._memory.succeeded(self.name, fn, args, kwargs, result, runtime.clock())
                return result
        permit = Permit(runtime.status.state, generation)
        return self._finish(runtime, permit, result, started, fn, args, kwargs)

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
            self._rejected(runtime)
            if self.fallback is not None:
                return self._fall_back(exc, fn, args, kwargs)
            raise
        started = perf_counter()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            answer = self._failed(runtime, permit, exc, started, fn, args, kwargs)
            if answer is RERAISE:
                raise
            return answer
        return self._finish(runtime, permit, result, started, fn, args, kwargs)

    def __enter__(self) -> Breaker:
        runtime = self._runtime()
        try:
            permit = runtime.acquire()
        except CircuitOpenError:
            self._rejected(runtime)
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

    # -- decorator -------------------------------------------------------------------------
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a sync or async function so every call goes through the circuit."""
        if not callable(fn):
            raise TypeError(f"breaker({self.name!r}) decorates callables, not {fn!r}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            # Calling one only creates the generator: every call would count as a success
            # and the errors raised while it is iterated would never reach the circuit.
            raise TypeError(
                f"breaker({self.name!r}) cannot decorate the generator function "
                f"{getattr(fn, '__qualname__', fn)!r}: its errors come while it is iterated, "
                "after the guarded call returned. Guard the calls it makes, or the code that "
                "consumes it (with breaker(...) as a context manager or breaker(...).call)."
            )
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_guarded(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.acall(fn, *args, **kwargs)

            async_guarded.breaker = self  # type: ignore[attr-defined]
            return async_guarded  # type: ignore[return-value]

        if self._due is not None:
            table = self._memory.due_table(self.name, fn)
            if table is not None:
                return self._remembering(fn, table)
        guard = self._guard
        if not (self._plain and self.fallback is None):

            @functools.wraps(fn)
            def delegating(*args: P.args, **kwargs: P.kwargs) -> R:
                return guard(fn, args, kwargs)

            delegating.breaker = self  # type: ignore[attr-defined]
            return delegating

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            # The two commonest calls of a handle without fallback or is_failure, done in
            # this frame: a closed success (one count) and an open rejection (raised here,
            # so its traceback has one entry fewer: an entry and its frame object cost more
            # than the rest of a rejection). Anything else is _guard's, which decides anew.
            # No store comparison: a replaced store's runtimes plan neither (reset_store()).
            runtime = self._cached
            if runtime is not None:
                now = runtime.clock()
                if now < runtime.admit_until:
                    token = runtime.count_token
                    if token >= 0:
                        try:  # without keywords, no copy of the empty dict
                            result = fn(*args, **kwargs) if kwargs else fn(*args)  # type: ignore[call-arg]
                        except BaseException as exc:
                            answer = self._failed(runtime, token, exc, UNTIMED, fn, args, kwargs)
                            if answer is RERAISE:
                                raise
                            return answer
                        if runtime.batch_token == token or (  # runtime.batches(token)
                            runtime.count_token == token and runtime.clock() < runtime.admit_until
                        ):
                            runtime.pending += 1  # flushed with the next refresh or failure
                        else:
                            self._closed_result(runtime, token, fn, args, kwargs, result, now)
                        return result
                    # At the failure threshold, timed or DISABLED: _guard would say so too.
                    return self._call_admitted(runtime, fn, args, kwargs)
                elif now < runtime.reject_until:
                    runtime.rejected += 1.0  # the fleet's totals (read at scrape time)
                    # retry_after = retry_clock - now, taken when read (core/errors.py)
                    raise CircuitOpenError(
                        self.name, runtime.reject_state, runtime.retry_clock, now
                    )
            return guard(fn, args, kwargs)

        guarded.breaker = self  # type: ignore[attr-defined]
        return guarded

    def _remembering(self, fn: Callable[P, R], due: dict[Hashable, float]) -> Callable[P, R]:
        """The decorator of a handle whose fallback sees successes through a table of
        refresh times (last_good): a closed success is done in the wrapper's own frame, a
        count and one lookup in ``due``, ``fn``'s own table; anything else is _guard's."""
        guard = self._guard
        memory: CallFallback = self._memory  # type: ignore[assignment]

        @functools.wraps(fn)
        def remembering(*args: P.args, **kwargs: P.kwargs) -> R:
            runtime = self._cached
            if runtime is not None and not kwargs:  # stores: see guarded
                now = runtime.clock()
                if now < runtime.admit_until:
                    token = runtime.count_token
                    if token >= 0:
                        try:
                            result = fn(*args)  # type: ignore[call-arg]  # no kwargs
                        except BaseException as exc:
                            answer = self._failed(runtime, token, exc, UNTIMED, fn, args, kwargs)
                            if answer is RERAISE:
                                raise
                            return answer
                        if not (
                            runtime.batch_token == token  # runtime.batches(token), inlined
                            or (
                                runtime.count_token == token
                                and runtime.clock() < runtime.admit_until
                            )
                        ):
                            self._closed_result(runtime, token, fn, args, kwargs, result, now)
                            return result
                        runtime.pending += 1  # flushed with the next refresh or failure
                        try:  # as in _guard: most successes come within the refresh period
                            if now < due[args]:  # fn's own table (due_table)
                                return result
                        except (KeyError, TypeError):  # new key, or unhashable
                            pass
                        memory.succeeded(self.name, fn, args, kwargs, result, now)
                        return result
            return guard(fn, args, kwargs)

        remembering.breaker = self  # type: ignore[attr-defined]
        return remembering


def breaker(name: str, **options: Any) -> Breaker:
    """A handle on the circuit ``name``; see :class:`Breaker` for the options."""
    unknown = sorted(set(options) - set(_ALLOWED_OPTIONS))
    if unknown:
        raise TypeError(
            f"breaker() got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(_ALLOWED_OPTIONS)}"
        )
    return Breaker(name, **options)
