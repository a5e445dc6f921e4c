"""Part ``httpx``: what the httpx transports add to a real request, and what ``last_good``
adds to a closed success.

Method (repeated in docs/benchmarks.md):

* **Transports.** The loopback upstream (its own process, :mod:`benchmarks.upstream`)
  answers 200. One keep-alive ``httpx.Client`` without a guard and one with
  ``CircuitTransport`` (named circuit, and per host) each send a batch of ``B`` GET
  requests; a *pair* is one unguarded batch and one guarded batch run back to back (in
  alternating order). Two pairs in a row (one in each order) make a *quad*, whose figure
  is the guarded batches' time ÷ the unguarded batches' time: whichever batch of a pair
  runs first is faster or slower (a connection's first request after the other client's
  batch), and a quad cancels that. The reported overhead is the median over the quads,
  minus 1. (The median of the pairs' own ratios did not: their two orders make two
  clusters, and the median can fall anywhere between them.) The same with
  ``httpx.AsyncClient`` and ``AsyncCircuitTransport`` (sequential awaits in one event loop).
  Every request the upstream counted is checked against the number sent.
* **The guard alone.** The same transports around ``httpx.MockTransport`` (no socket):
  the time ``handle_request``/``handle_async_request`` takes with and without the guard,
  median of 20 paired batches; this is what the guard adds to every request, whatever
  the network.
* **last_good.** Two breakers guard the same function in CLOSED, one plain and one with
  ``fallback=last_good()``; a pair is one batch of each (alternating order) and its figure
  is the difference of their mean times per call; reported: the median over the pairs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.common import median, percentile, upstream

#: DESIGN/issue 16 targets.
TRANSPORT_TARGET = 0.03
LAST_GOOD_TARGET_NS = 100.0
TITLE = "## 5. httpx transports and last_good"


@dataclass
class HttpxOptions:
    pairs: int = 200
    requests: int = 20
    guard_calls: int = 20_000
    last_good_pairs: int = 2_000
    last_good_calls: int = 1_000


def _paired(
    first: Callable[[], float], second: Callable[[], float], pairs: int
) -> list[tuple[float, float]]:
    """``pairs`` paired timings (first, second), alternating which runs first."""
    out = []
    for index in range(pairs):
        if index % 2:
            b = second()
            a = first()
        else:
            a = first()
            b = second()
        out.append((a, b))
    return out


def _sync(url: str, options: HttpxOptions) -> dict[str, Any]:
    import httpx

    from circuitbreaker_app.httpx import CircuitTransport

    clients = {
        "unguarded": httpx.Client(),
        "named": httpx.Client(transport=CircuitTransport("bench-httpx")),
        "per host": httpx.Client(transport=CircuitTransport()),
    }
    try:

        def batch(client: httpx.Client) -> Callable[[], float]:
            def run() -> float:
                started = time.perf_counter_ns()
                for _ in range(options.requests):
                    client.get(url).raise_for_status()
                return (time.perf_counter_ns() - started) / options.requests

            return run

        for client in clients.values():  # warm: connection, circuit loaded
            batch(client)()
        results = {}
        for name in ("named", "per host"):
            timings = _paired(batch(clients["unguarded"]), batch(clients[name]), options.pairs)
            results[name] = _summary(timings)
        return results
    finally:
        for client in clients.values():
            client.close()


def _async(url: str, options: HttpxOptions) -> dict[str, Any]:
    import httpx

    from circuitbreaker_app.httpx import AsyncCircuitTransport

    async def scenario() -> dict[str, Any]:
        clients = {
            "unguarded": httpx.AsyncClient(),
            "named": httpx.AsyncClient(transport=AsyncCircuitTransport("bench-httpx-async")),
            "per host": httpx.AsyncClient(transport=AsyncCircuitTransport()),
        }
        try:

            async def batch(client: httpx.AsyncClient) -> float:
                started = time.perf_counter_ns()
                for _ in range(options.requests):
                    (await client.get(url)).raise_for_status()
                return (time.perf_counter_ns() - started) / options.requests

            for client in clients.values():
                await batch(client)
            results = {}
            for name in ("named", "per host"):
                timings = []
                for index in range(options.pairs):
                    if index % 2:
                        b = await batch(clients[name])
                        a = await batch(clients["unguarded"])
                    else:
                        a = await batch(clients["unguarded"])
                        b = await batch(clients[name])
                    timings.append((a, b))
                results[name] = _summary(timings)
            return results
        finally:
            for client in clients.values():
                await client.aclose()

    return asyncio.run(scenario())


def _guard_cost(options: HttpxOptions) -> dict[str, float]:
    """µs the guard adds to one request, measured around a transport that does no I/O."""
    import httpx

    from circuitbreaker_app.httpx import AsyncCircuitTransport, CircuitTransport

    answer = httpx.Response(200)
    request = httpx.Request("GET", "http://127.0.0.1:9/")

    async def answer_async(request: httpx.Request) -> httpx.Response:
        return answer

    bare = httpx.MockTransport(lambda request: answer)
    guarded = CircuitTransport("bench-guard", transport=bare)
    bare_async = httpx.MockTransport(answer_async)
    guarded_async = AsyncCircuitTransport("bench-guard-async", transport=bare_async)
    calls = options.guard_calls

    def batch(transport: httpx.BaseTransport) -> Callable[[], float]:
        def run() -> float:
            handle = transport.handle_request
            started = time.perf_counter_ns()
            for _ in range(calls):
                handle(request)
            return (time.perf_counter_ns() - started) / calls

        return run

    async def abatch(transport: httpx.AsyncBaseTransport) -> float:
        handle = transport.handle_async_request
        started = time.perf_counter_ns()
        for _ in range(calls):
            await handle(request)
        return (time.perf_counter_ns() - started) / calls

    async def async_pairs() -> list[tuple[float, float]]:
        await guarded_async.handle_async_request(request)  # the circuit loaded
        out = []
        for _ in range(20):
            out.append((await abatch(bare_async), await abatch(guarded_async)))
        return out

    guarded.handle_request(request)
    sync = _paired(batch(bare), batch(guarded), 20)
    async_ = asyncio.run(async_pairs())
    return {
        "sync_us": median([b - a for a, b in sync]) / 1000,
        "async_us": median([b - a for a, b in async_]) / 1000,
    }


def _summary(timings: list[tuple[float, float]]) -> dict[str, Any]:
    # Pairs 2k and 2k + 1 ran in opposite orders (see _paired): together, the order cancels.
    ratios = [
        (timings[i][1] + timings[i + 1][1]) / (timings[i][0] + timings[i + 1][0]) - 1
        for i in range(0, len(timings) - 1, 2)
    ] or [b / a - 1 for a, b in timings]
    return {
        "pairs": len(timings),
        "unguarded_us": median([a for a, _ in timings]) / 1000,
        "guarded_us": median([b for _, b in timings]) / 1000,
        "overhead": median(ratios),
        "overhead_p90": percentile(ratios, 90),
    }


def _last_good(options: HttpxOptions) -> dict[str, Any]:
    from circuitbreaker_app import breaker
    from circuitbreaker_app.fallbacks import last_good

    def price(sku: int) -> int:
        return sku

    plain = breaker("bench-plain")(price)
    remembering = breaker("bench-last-good", fallback=last_good())(price)
    for guarded in (plain, remembering):
        guarded(1)

    def batch(guarded: Callable[[int], int]) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter_ns()
            for _ in range(options.last_good_calls):
                guarded(1)
            return (time.perf_counter_ns() - started) / options.last_good_calls

        return run

    timings = _paired(batch(plain), batch(remembering), options.last_good_pairs)
    added = [b - a for a, b in timings]
    return {
        "pairs": len(timings),
        "plain_ns": median([a for a, _ in timings]),
        "last_good_ns": median([b for _, b in timings]),
        "added_ns": median(added),
        "added_p90_ns": percentile(added, 90),
    }


def run(options: HttpxOptions) -> dict[str, Any]:
    """The part's results (``None`` figures when httpx is not installed)."""
    try:
        import httpx  # noqa: F401
    except ImportError:
        return {"options": options.__dict__, "notes": ["httpx is not installed: not run."]}
    with upstream("ok") as server:
        server.reset()
        sync = _sync(server.url, options)
        async_ = _async(server.url, options)
        sent = 2 * (3 + 2 * 2 * options.pairs) * options.requests
        hits = server.hits
    return {
        "options": options.__dict__,
        "sync": sync,
        "async": async_,
        "requests_sent": sent,
        "requests_counted": hits,
        "guard": _guard_cost(options),
        "last_good": _last_good(options),
        "notes": [],
    }


# -- report -------------------------------------------------------------------------------


def targets(data: dict[str, Any]) -> list[list[str]]:
    """Rows of the report's target table."""
    part = data.get("httpx") or {}
    rows = []
    for mode in ("sync", "async"):
        result = (part.get(mode) or {}).get("named")
        if result:
            rows.append(
                [
                    f"guarded httpx request ≤ 3 % over unguarded ({mode}, loopback)",
                    f"{result['overhead'] * 100:+.2f} % (median of {result['pairs'] // 2} quads "
                    f"of {result['pairs']} pairs)",
                    "met" if result["overhead"] <= TRANSPORT_TARGET else "**missed**",
                ]
            )
    lg = part.get("last_good")
    if lg:
        rows.append(
            [
                "last_good adds ≤ 100 ns to a closed success",
                f"{lg['added_ns']:,.0f} ns (median of {lg['pairs']} pairs)",
                "met" if lg["added_ns"] <= LAST_GOOD_TARGET_NS else "**missed**",
            ]
        )
    return rows


def section(data: dict[str, Any]) -> list[str]:
    """The report's section for this part."""
    part = data.get("httpx")
    lines = [TITLE, ""]
    if not part or "sync" not in part:
        notes = (part or {}).get("notes") or ["Not run."]
        return [*lines, *notes, ""]
    options = part["options"]
    lines += [
        f"{options['pairs']} pairs of {options['requests']} keep-alive GET requests to the "
        "loopback upstream (200), unguarded and through the transport, alternating which "
        "runs first; overhead = median over the quads (two pairs in a row, one in each "
        "order, so that which batch runs first cancels) of guarded ÷ unguarded − 1. The "
        f"upstream counted {part['requests_counted']:,} requests of "
        f"{part['requests_sent']:,} sent.",
        "",
    ]
    rows = []
    for mode in ("sync", "async"):
        for circuit, result in part[mode].items():
            rows.append(
                [
                    mode,
                    circuit,
                    _us(result["unguarded_us"]),
                    _us(result["guarded_us"]),
                    f"{result['overhead'] * 100:+.2f} %",
                    f"{result['overhead_p90'] * 100:+.2f} %",
                ]
            )
    lines += _table(
        ["client", "circuit", "unguarded", "guarded", "overhead (median)", "overhead (p90)"],
        rows,
    )
    guard = part.get("guard")
    if guard:
        lines += [
            "",
            "The guard alone (around `httpx.MockTransport`, no socket), per request: "
            f"**{guard['sync_us']:,.2f} µs** sync, **{guard['async_us']:,.2f} µs** async; "
            "as a share of the unguarded loopback request above: "
            + ", ".join(
                f"{mode} {guard[mode + '_us'] / part[mode]['named']['unguarded_us'] * 100:.2f} %"
                for mode in ("sync", "async")
            )
            + ".",
        ]
    lg = part["last_good"]
    lines += [
        "",
        f"`last_good` on a closed success: {lg['pairs']:,} pairs of "
        f"{options['last_good_calls']:,} calls, a plain breaker and one with "
        f"`fallback=last_good()`: {lg['plain_ns']:,.0f} ns and {lg['last_good_ns']:,.0f} ns "
        f"per call (medians); added: **{lg['added_ns']:,.0f} ns** (median of the paired "
        f"differences; p90 {lg['added_p90_ns']:,.0f} ns).",
        "",
    ]
    return lines


def _us(value: float) -> str:
    return f"{value:,.1f} µs"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [row(header), row(["---"] * len(header)), *(row(r) for r in rows)]
