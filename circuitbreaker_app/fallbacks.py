"""Fallbacks that degrade gracefully instead of failing: ``last_good`` answers a rejected or
failed call with the last successful result of the same call (DESIGN §1).

::

    from circuitbreaker_app import breaker
    from circuitbreaker_app.fallbacks import last_good

    @breaker("stock", fallback=last_good(ttl=300))
    def stock_level(sku: str) -> int:
        return partner.get(f"/stock/{sku}").json()["level"]

A success stores its result in the breaker's shared cache (at most once per ``refresh``
seconds per call key and process, so a closed success stays cheap); a rejection or a
recorded failure answers with the stored result of the same key if it is at most ``ttl``
seconds old, else re-raises the original error. Any process of the site may serve what
another stored.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Callable, Hashable
from typing import Any

from asgiref.sync import sync_to_async

from circuitbreaker_app.store import get_store
from circuitbreaker_app.store.answers import Recalled

__all__ = ["CallFallback", "LastGood", "last_good"]

logger = logging.getLogger("circuitbreaker_app")

#: Call keys one ``last_good`` tracks per process (refresh times, answers read) before it
#: starts over: a flood of distinct arguments never grows memory without bound.
MAX_KEYS = 10_000

#: Refresh times a breaker reads on its hot path: function -> arguments -> store clock time.
DueTable = dict[Callable[..., Any], dict[Hashable, float]]


class CallFallback:
    """A fallback that answers from the call itself and sees the call's successes.

    ``breaker(fallback=...)`` with an instance of a subclass (such as
    :func:`circuitbreaker_app.fallbacks.last_good`) calls :meth:`answer` instead of
    ``fallback(exc)``, and :meth:`succeeded` after every success of a guarded call (not of
    a ``with`` block, whose result it cannot see). Breakers with any other fallback, or
    none, never pay for this.
    """

    def answer(
        self, name: str, exc: BaseException, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        """The answer to ``fn(*args, **kwargs)`` rejected or failed with ``exc`` (or raise)."""
        raise NotImplementedError("subclasses of CallFallback must provide answer()")

    async def aanswer(
        self, name: str, exc: BaseException, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        """:meth:`answer` for ``acall``: must not block the event loop."""
        raise NotImplementedError("subclasses of CallFallback must provide aanswer()")

    def store_changed(self) -> None:
        """The process's store was replaced (settings changed, a fork, a test's own store):
        forget whatever was timed on the previous one's clock. A no-op by default."""

    def due_for(self, name: str) -> DueTable | None:
        """A table the breaker of circuit ``name`` may read on its hot path: a success of
        ``fn(*args)`` (no keyword arguments) at ``now < table[fn][args]`` needs no call to
        :meth:`succeeded`. None (the default): every success is reported."""
        return None

    def due_table(self, name: str, fn: Callable[..., Any]) -> dict[Hashable, float] | None:
        """``due_for(name)[fn]``, made now and kept while ``fn`` is decorated: the
        decorator reads it without looking ``fn`` up per call. None (the default): the
        decorator reads :meth:`due_for`'s table, if any."""
        return None

    def succeeded(
        self, name: str, fn: Callable[..., Any], args: Any, kwargs: Any, result: Any, now: float
    ) -> None:
        """``fn(*args, **kwargs)`` succeeded with ``result`` at ``now`` (the store's clock).
        Called on the hot path: it must be cheap on average."""
        raise NotImplementedError("subclasses of CallFallback must provide succeeded()")

    async def asucceeded(
        self, name: str, fn: Callable[..., Any], args: Any, kwargs: Any, result: Any, now: float
    ) -> None:
        """:meth:`succeeded` for ``acall``: must not block the event loop."""
        raise NotImplementedError("subclasses of CallFallback must provide asucceeded()")


def _check_seconds(option: str, value: Any, strict: bool) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"last_good() option {option!r} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0 or (strict and value == 0):
        bound = "greater than 0" if strict else "at least 0"
        raise ValueError(f"last_good() option {option!r} must be finite and {bound}, not {value!r}")
    return float(value)


class LastGood(CallFallback):
    """The fallback :func:`last_good` returns; see there."""

    def __init__(
        self,
        ttl: float = 300,
        key: Callable[..., Hashable] | None = None,
        refresh: float = 10,
        stale: Callable[[Any, float], Any] | None = None,
    ) -> None:
        self.ttl = _check_seconds("ttl", ttl, strict=True)
        self.refresh = _check_seconds("refresh", refresh, strict=False)
        if self.refresh > self.ttl:
            raise ValueError(
                f"last_good() option 'refresh' ({refresh!r}) must not exceed 'ttl' ({ttl!r}): "
                "a kept answer would expire before it is renewed"
            )
        if key is not None and not callable(key):
            raise TypeError(f"last_good() option 'key' must be callable, not {key!r}")
        if stale is not None and not callable(stale):
            raise TypeError(f"last_good() option 'stale' must be callable, not {stale!r}")
        self.key = key
        self.stale = stale
        #: Per circuit: the store clock time before which a call's successes are not
        #: stored again. Calls without keyword arguments and without ``key`` are found by
        #: function, then arguments (``fn -> args -> time``: two lookups that cost less than
        #: one by a ``(fn, args)`` tuple), which the breaker's hot path reads itself (see
        #: :meth:`due_for`); every other call by its key in ``_due_keys``.
        self._due: dict[str, DueTable] = {}
        self._due_keys: dict[str, dict[Hashable, float]] = {}
        #: Per circuit: how many calls the two tables track (at most ``MAX_KEYS``).
        self._tracked: dict[str, int] = {}
        #: Per circuit: functions whose table a decorator holds (:meth:`due_table`): kept,
        #: emptied in place, when the rest is forgotten.
        self._pinned: dict[str, set[Callable[..., Any]]] = {}
        #: (circuit, shared key) -> (answer, or None for none, store clock time it was read).
        self._seen: dict[tuple[str, str], tuple[Recalled | None, float]] = {}
        self._warned = False

    def __repr__(self) -> str:
        return f"<last_good ttl={self.ttl:g} refresh={self.refresh:g}>"

    def __call__(self, exc: BaseException) -> Any:
        """Called as a plain ``fallback(exc)`` it knows no call to answer for: re-raise."""
        raise exc

    # -- keys ------------------------------------------------------------------------------
    def shared_key(self, fn: Callable[..., Any], args: Any, kwargs: Any) -> str:
        """The key a call's answer is shared under by every process: ``key(*args,
        **kwargs)`` (as is when a string, else its ``repr``), or by default the function's
        qualified name and the ``repr`` of its arguments."""
        if self.key is not None:
            value = self.key(*args, **kwargs)
            return value if isinstance(value, str) else repr(value)
        name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        return f"{name}{args!r}{sorted(kwargs.items())!r}"

    def store_changed(self) -> None:
        """Forget refresh times and answers read: they belong to the previous store (its
        clock, its cache). The tables are emptied in place: breakers hold them."""
        for name in list(self._due):
            self._forget_due(name)
        self._due_keys.clear()
        self._tracked.clear()
        self._seen.clear()

    def due_for(self, name: str) -> DueTable | None:
        """Circuit ``name``'s table of refresh times by function and arguments (see
        :meth:`CallFallback.due_for`); None with a ``key`` function, whose keys only it
        can compute."""
        if self.key is not None:
            return None
        return self._due.setdefault(name, {})

    def due_table(self, name: str, fn: Callable[..., Any]) -> dict[Hashable, float] | None:
        """Circuit ``name``'s refresh times of ``fn``'s calls by arguments, kept for the
        decorator of ``fn`` (see :meth:`CallFallback.due_table`). Past ``MAX_KEYS``
        decorated functions a circuit's new ones get an empty table that nothing fills:
        their every success asks :meth:`succeeded`, which still decides right."""
        if self.key is not None:
            return None
        pinned = self._pinned.setdefault(name, set())
        if fn not in pinned and len(pinned) >= MAX_KEYS:
            return {}
        pinned.add(fn)
        return self._due.setdefault(name, {}).setdefault(fn, {})

    def _due_now(self, name: str, fn: Any, args: Any, kwargs: Any, now: float) -> bool:
        """True when a success of this call should be stored now (and no other until
        ``refresh`` seconds have passed)."""
        memo: Hashable = args
        try:
            if self.key is None and not kwargs:
                by_fn = self._due.setdefault(name, {})
                table = by_fn.get(fn)
                if table is None:
                    hash(args)  # unhashable arguments get no table of their own
                    table = by_fn[fn] = {}
            else:
                table = self._due_keys.setdefault(name, {})
                if self.key is None:
                    memo = (fn, args, *kwargs.items())
                else:
                    memo = self.key(*args, **kwargs)
            at = table.get(memo)
        except TypeError:  # an unhashable function or arguments: the call's text is its key
            table = self._due_keys.setdefault(name, {})
            memo = self.shared_key(fn, args, kwargs)
            at = table.get(memo)
        if at is not None and now < at:
            return False
        if at is None:
            tracked = self._tracked.get(name, 0)
            if tracked >= MAX_KEYS:  # start over: never grow without bound
                self._forget_due(name)
                tracked = 0
                if table is not self._due_keys.get(name):  # the function's table was dropped?
                    table = self._due[name].setdefault(fn, table)
            self._tracked[name] = tracked + 1
        table[memo] = now + self.refresh
        return True

    def _forget_due(self, name: str) -> None:
        """Forget circuit ``name``'s refresh times, in place: its breakers hold the table,
        decorators their function's (kept, empty); a table dropped is emptied first, so a
        holder left with it asks :meth:`succeeded` on every success."""
        by_fn = self._due.get(name, {})
        pinned = self._pinned.get(name, ())
        for fn, table in list(by_fn.items()):
            table.clear()
            if fn not in pinned:
                del by_fn[fn]
        self._due_keys.get(name, {}).clear()
        self._tracked.pop(name, None)

    # -- successes -------------------------------------------------------------------------
    def succeeded(
        self, name: str, fn: Callable[..., Any], args: Any, kwargs: Any, result: Any, now: float
    ) -> None:
        """Store ``result`` unless this call's was stored less than ``refresh`` s ago."""
        if self._due_now(name, fn, args, kwargs, now):
            data = self._pickled(result)
            if data is not None:
                self._keep(name, self.shared_key(fn, args, kwargs), result, data, now)

    async def asucceeded(
        self, name: str, fn: Callable[..., Any], args: Any, kwargs: Any, result: Any, now: float
    ) -> None:
        """:meth:`succeeded` with the cache write off the event loop (the result is
        pickled at once, as it is now)."""
        if self._due_now(name, fn, args, kwargs, now):
            data = self._pickled(result)
            if data is not None:
                text = self.shared_key(fn, args, kwargs)
                await sync_to_async(self._keep)(name, text, result, data, now)

    def _pickled(self, result: Any) -> bytes | None:
        try:
            return pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # PicklingError, TypeError, AttributeError, RecursionError…
            if not self._warned:
                self._warned = True
                logger.warning(
                    "circuitbreaker: last_good cannot keep a %s result (%s: %s); results "
                    "that cannot be pickled are never stored",
                    type(result).__qualname__,
                    type(exc).__name__,
                    exc,
                )
            return None

    def _keep(self, name: str, text: str, result: Any, data: bytes, now: float) -> None:
        get_store().remember_pickled(name, text, data, self.ttl)
        self._note((name, text), Recalled(result, 0.0), now)

    def _note(self, where: tuple[str, str], answer: Recalled | None, now: float) -> None:
        if len(self._seen) >= MAX_KEYS:
            self._seen.clear()
        self._seen[where] = (answer, now)

    # -- answers ---------------------------------------------------------------------------
    def _known(self, where: tuple[str, str], now: float) -> tuple[bool, Recalled | None]:
        """What this process read or kept for ``where`` less than ``refresh`` s ago, aged."""
        seen = self._seen.get(where)
        if seen is None or now - seen[1] >= max(self.refresh, 1e-9):
            return False, None
        answer, at = seen
        if answer is None:
            return True, None
        aged = Recalled(answer.value, answer.age + (now - at))
        return aged.age <= self.ttl, aged if aged.age <= self.ttl else None

    def _serve(self, answer: Recalled | None, exc: BaseException) -> Any:
        if answer is None:
            try:
                raise exc
            finally:
                del exc  # no cycle error → traceback → this frame → error
        if self.stale is not None:
            return self.stale(answer.value, answer.age)
        return answer.value

    def answer(
        self, name: str, exc: BaseException, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        """The stored answer to this call if one at most ``ttl`` old exists, else raise
        ``exc``. An answer read from the cache is reused for ``refresh`` seconds, so a
        flood of rejections costs one cache read per key and process, not one each."""
        store = get_store()
        where = (name, self.shared_key(fn, args, kwargs))
        now = store.clock()
        known, found = self._known(where, now)
        if not known:
            found = store.recall(name, where[1], self.ttl)
            self._note(where, found, now)
        return self._serve(found, exc)

    async def aanswer(
        self, name: str, exc: BaseException, fn: Callable[..., Any], args: Any, kwargs: Any
    ) -> Any:
        """:meth:`answer` with the cache read off the event loop."""
        store = get_store()
        where = (name, self.shared_key(fn, args, kwargs))
        now = store.clock()
        known, found = self._known(where, now)
        if not known:
            found = await sync_to_async(store.recall)(name, where[1], self.ttl)
            self._note(where, found, now)
        return self._serve(found, exc)


def last_good(
    ttl: float = 300,
    key: Callable[..., Hashable] | None = None,
    refresh: float = 10,
    *,
    stale: Callable[[Any, float], Any] | None = None,
) -> LastGood:
    """A fallback that answers a rejection or a recorded failure with the last successful
    result of the same call, at most ``ttl`` seconds old; with none, the original error.

    Pass it as ``breaker(name, fallback=last_good(...))`` (decorator, ``call`` and
    ``acall``). ``key(*args, **kwargs)``: what makes two calls "the same" (default: the
    function's qualified name and the ``repr`` of its arguments — pass ``key`` when an
    argument's ``repr`` is not a stable identity, e.g. an object, or ``self`` of a
    method). ``refresh``: a success stores its result at most once per ``refresh``
    seconds per key and process (the shared cache is written once per period, not per
    call). ``stale(value, age)``: what to answer with a stored ``value`` ``age`` seconds
    old (default the value itself), e.g. to mark it as stale. Results must be picklable:
    one that is not is never stored (one warning per ``last_good``). Bad options raise
    ``TypeError``/``ValueError`` naming the option.
    """
    return LastGood(ttl=ttl, key=key, refresh=refresh, stale=stale)
