"""docs/benchmarks.md from the results of one run."""

from __future__ import annotations

import math
from typing import Any

from benchmarks import httpx_clients
from benchmarks.fleet import FLEET_LIBRARIES
from benchmarks.memory import MEMORY_LIBRARIES
from benchmarks.overhead import LIBRARIES, OUTCOME_TITLES, OUTCOMES
from benchmarks.plots import FLEET_PNG, LOAD_PNG, OVERHEAD_PNG

SECTIONS = (
    "## Machine and software",
    "## Targets",
    "## 1. Per-call overhead",
    "## 2. A fleet against a dead upstream",
    "## 3. HTTP load under gunicorn",
    "## 4. Memory",
    "## 5. httpx transports and last_good",
)

#: "0 on average": at most one operation per this many calls (tests/test_hot_path.py).
ZERO_ON_AVERAGE = 0.01


def _num(value: Any, digits: int = 0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}{unit}"


def _per_call(value: Any) -> str:
    if value is None:
        return "–"
    if value == 0:
        return "0"
    if value < 0.01:
        return f"{value:.5f}"
    return f"{value:.2f}"


def _bytes(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value / 2**20:,.1f} MiB"


def _status(ok: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[ok]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


# -- targets ------------------------------------------------------------------------------


def _find(results: list[dict], library: str, outcome: str) -> dict | None:
    for row in results:
        if row["library"] == library and row["outcome"] == outcome:
            return row
    return None


#: Issue 13's targets for a guarded call's overhead, in ns (LocMem and Redis alike).
SUCCESS_TARGET_NS = 300
REJECTION_TARGET_NS = 500
#: A failure on LocMem (process memory, no round trip).
LOCMEM_FAILURE_TARGET_NS = 10_000
#: A failure on Redis: at most one round trip (measured by PING in the same run) plus this.
REDIS_FAILURE_EXTRA_NS = 40_000


def targets(data: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    part = data.get("overhead") or {}
    overhead = part.get("results") or []
    round_trip = part.get("redis_round_trip_ns")
    ours = [lib for lib in ("cb_app-locmem", "cb_app-redis") if _find(overhead, lib, "success")]
    peers = [
        lib for lib in ("pybreaker-memory", "circuitbreaker") if _find(overhead, lib, "success")
    ]
    for lib in ours:
        success = _find(overhead, lib, "success")
        assert success is not None
        value = success["overhead_ns"]
        rows.append(
            [
                f"closed success overhead ≤ {SUCCESS_TARGET_NS} ns ({LIBRARIES[lib]})",
                f"{value:,.0f} ns (p99 of batch means {success['overhead_p99_ns']:,.0f} ns)",
                _status(value <= SUCCESS_TARGET_NS),
            ]
        )
        for peer in peers:
            other = _find(overhead, peer, "success")
            assert other is not None
            rows.append(
                [
                    f"… and below {LIBRARIES[peer]} in the same run",
                    f"{value:,.0f} ns vs {other['overhead_ns']:,.0f} ns",
                    _status(value < other["overhead_ns"]),
                ]
            )
        rejection = _find(overhead, lib, "rejection")
        if rejection:
            rows.append(
                [
                    f"open rejection ≤ {REJECTION_TARGET_NS} ns ({LIBRARIES[lib]})",
                    f"{rejection['overhead_ns']:,.0f} ns",
                    _status(rejection["overhead_ns"] <= REJECTION_TARGET_NS),
                ]
            )
        for outcome in ("success", "rejection"):
            row = _find(overhead, lib, outcome)
            if row is None:
                continue
            io = row["round_trips_per_call"] if lib.endswith("redis") else row["cache_ops_per_call"]
            rows.append(
                [
                    f"{OUTCOME_TITLES[outcome]}: 0 queries, on average 0 round trips "
                    f"({LIBRARIES[lib]})",
                    f"{_per_call(row['queries_per_call'])} queries, {_per_call(io)} "
                    f"{'Redis round trips' if lib.endswith('redis') else 'cache operations'}"
                    " per call",
                    _status(row["queries_per_call"] == 0 and (io or 0) <= ZERO_ON_AVERAGE),
                ]
            )
        failure = _find(overhead, lib, "failure")
        if failure and lib.endswith("redis"):
            io = failure["round_trips_per_call"]
            rows.append(
                [
                    f"failure: ≤ 1 round trip (DESIGN §4) ({LIBRARIES[lib]})",
                    f"{_per_call(io)} Redis round trips, "
                    f"{_per_call(failure['queries_per_call'])} queries per call",
                    # + the once-per-STATE_TTL refresh, "0 on average"
                    _status(
                        (io or 0) <= 1.0 + ZERO_ON_AVERAGE and failure["queries_per_call"] == 0
                    ),
                ]
            )
            bound = None if round_trip is None else round_trip + REDIS_FAILURE_EXTRA_NS
            rows.append(
                [
                    f"failure ≤ one round trip + {REDIS_FAILURE_EXTRA_NS / 1000:g} µs "
                    f"({LIBRARIES[lib]})",
                    f"{failure['overhead_ns'] / 1000:,.1f} µs; round trip (redis-py PING, "
                    f"this run) {_num(None if round_trip is None else round_trip / 1000, 1)} µs",
                    _status(None if bound is None else failure["overhead_ns"] <= bound),
                ]
            )
        elif failure:
            # LocMem is this process's memory: a count-window write is a get + set under
            # one lock, no round trip at all.
            io = failure["cache_ops_per_call"] or 0
            rows.append(
                [
                    f"failure: ≤ 1 round trip (DESIGN §4) ({LIBRARIES[lib]})",
                    f"0 round trips: {_per_call(io)} operations on this process's LocMem "
                    f"(a get + set under one lock), "
                    f"{_per_call(failure['queries_per_call'])} queries per call",
                    _status(io <= 2.0 + ZERO_ON_AVERAGE and failure["queries_per_call"] == 0),
                ]
            )
            rows.append(
                [
                    f"failure ≤ {LOCMEM_FAILURE_TARGET_NS / 1000:g} µs ({LIBRARIES[lib]})",
                    f"{failure['overhead_ns'] / 1000:,.1f} µs",
                    _status(failure["overhead_ns"] <= LOCMEM_FAILURE_TARGET_NS),
                ]
            )
    fleet = data.get("fleet") or {}
    options = fleet.get("options") or {}
    for result in fleet.get("results") or []:
        workers = result["workers"]
        if result["library"].startswith("cb_app"):
            hits = result["dead_hits"]
            label = f"{FLEET_LIBRARIES.get(result['library'], result['library'])}, W = {workers}"
            rows.append(
                [
                    f"fleet: ≤ 5 + W = {5 + workers} requests to a dead upstream ({label})",
                    " / ".join(str(h) for h in hits) + " (1st / 2nd outage)",
                    _status(all(h is not None and h <= 5 + workers for h in hits)),
                ]
            )
            rows.append(
                [
                    f"fleet: exactly N = {options.get('half_open_max_calls')} half-open trials "
                    f"({label})",
                    str(result.get("trials")),
                    _status(result.get("trials") == options.get("half_open_max_calls")),
                ]
            )
            together = result.get("release_to_all_seconds")
            rows.append(
                [
                    f"fleet: every process admits calls ≤ {RECOVERY_BOUND:g} s after a "
                    f"successful trial (DESIGN §3) ({label})",
                    _num(together, 2, " s"),
                    _status(together is not None and together <= RECOVERY_BOUND),
                ]
            )
        elif result["library"] == "pybreaker-memory":
            rows.append(
                [
                    f"for comparison: pybreaker in memory lets W × 5 = {workers * 5} through",
                    " / ".join(str(h) for h in result["dead_hits"]),
                    "(reference)",
                ]
            )
    load = data.get("load") or {}
    if load.get("healthy_ratio") is not None:
        ratio = load["healthy_ratio"]
        rows.append(
            [
                "guarded healthy throughput ≥ 95 % of unguarded",
                f"{ratio * 100:.1f} % (median of {len(load.get('healthy_ratios') or [])} "
                "paired runs)",
                _status(ratio >= 0.95),
            ]
        )
    if load.get("dead_guarded"):
        p99 = load["dead_guarded"].get("p99_ms")
        rows.append(
            [
                "guarded dead-upstream p99 < 20 ms once open",
                _num(p99, 1, " ms"),
                _status(p99 is not None and p99 < 20),
            ]
        )
        unguarded = load["dead_unguarded"].get("p50_ms")
        timeout_ms = load["options"]["dead_timeout"] * 1000
        rows.append(
            [
                f"unguarded dead-upstream latency ≥ the timeout ({timeout_ms / 1000:g} s)",
                _num(unguarded, 0, " ms (p50)"),
                _status(unguarded is not None and unguarded >= timeout_ms * 0.99),
            ]
        )
    rows += httpx_clients.targets(data)
    return rows


# -- sections ---------------------------------------------------------------------------------


def machine_section(machine: dict[str, Any], smoke: bool) -> list[str]:
    lines = [SECTIONS[0], ""]
    if smoke:
        lines += [
            "> **Smoke run** (`--smoke`): tiny iteration counts so the suite cannot rot. "
            "These figures are not measurements; run `make bench` on a quiet machine.",
            "",
        ]
    versions = machine["versions"]
    rows = [
        ["CPU", machine["cpu"]],
        ["cores", str(machine["cores"])],
        ["RAM", f"{(machine['ram_bytes'] or 0) / 2**30:.1f} GiB"],
        ["OS", machine["os"]],
        ["Python", machine["python"]],
        *([name, version] for name, version in versions.items()),
        ["Redis server", machine.get("redis_server") or "not reachable"],
        ["wrk", machine.get("wrk") or "not installed"],
        ["date", machine["date"]],
        ["command", f"`{machine['command']}` (what `make bench` runs)"],
    ]
    load = machine.get("load_average_at_start")
    if load:
        rows.append(["load average at start", ", ".join(f"{x:.2f}" for x in load)])
    lines += _table(["", ""], rows)
    return lines


#: The most a closed success may cost more with Prometheus metrics on (DESIGN §4).
METRICS_TARGET_NS = 30


def metrics_comparison(results: list[dict[str, Any]]) -> list[str]:
    """The closed success with metrics on and off, side by side (DESIGN §4's target)."""
    median = {
        row["library"]: row["median_ns"]
        for row in results
        if row["outcome"] == "success" and row["library"].startswith("cb_app-locmem")
    }
    off, on = median.get("cb_app-locmem"), median.get("cb_app-locmem-metrics")
    if off is None or on is None:
        return []
    verdict = "met" if on - off <= METRICS_TARGET_NS else "**missed**"
    return [
        "",
        "**Closed success, Prometheus metrics on vs off** (same run, same LocMem store; "
        f"target: at most {METRICS_TARGET_NS} ns more with metrics on, {verdict}):",
        "",
        *_table(
            ["metrics off, median ns", "metrics on, median ns", "difference ns"],
            [[_num(off), _num(on), _num(on - off)]],
        ),
    ]


def overhead_section(data: dict[str, Any]) -> list[str]:
    part = data.get("overhead")
    lines = [SECTIONS[2], ""]
    if not part:
        return [*lines, "Not run.", ""]
    options = part["options"]
    lines += [
        "One process, one run, every library side by side. Each scenario is a zero-argument "
        "function decorated by the library and called in a tight loop (`f()` for a success; "
        "`try: f() except Exception: pass` for a rejection or a failure); the *bare* rows are "
        "the same loops around the undecorated function (for a rejection, the bare row is the "
        "no-op function in the `try` loop).",
        "",
        "**Method.** Time is taken with `time.perf_counter_ns()` around batches of B calls; "
        "the per-call figure of a batch is its time divided by B (B is calibrated once per "
        "scenario to about 2 ms a batch, between 10 and 1,000 calls: 1,000 for every in-memory "
        "path). **median** and **p99** are the median and the 99th percentile of these per-call "
        "batch means, so p99 is the 99th percentile over batches, not over single calls (a single "
        "slow call is averaged with the B − 1 others of its batch). **overhead** = median − the "
        "median of the matching bare row. Scenarios run interleaved: "
        f"{options['rounds']} rounds, each running every scenario for at least "
        f"{options['min_seconds']} s and {options['min_batches']} batches "
        f"(at most {options['max_batches']}), so a noisy neighbour hurts all of them. The "
        "garbage collector stays on and is run before each turn. The circuitbreaker_app "
        "circuits are real rows in the database, with `STATE_TTL` = 1 s; the open circuits were "
        "tripped by 5 failures and stay open for a day. A failure scenario never trips: its "
        "circuit's window is emptied (reset) before every turn.",
        "",
        "**I/O per call** is counted during the same timed batches: database queries with "
        "Django's `CaptureQueriesContext` on every connection; Django cache operations with a "
        "counting wrapper around the store's cache; Redis round trips (a `send_packed_command`, "
        "or a script call the store reads straight from its own connection; a pipeline counts "
        "once) and commands with a patch of redis-py's connection class and of the store's "
        "script call in this process only (no `MONITOR`, and other clients of the server are "
        "not counted). "
        + (
            "Each turn lasts longer than `STATE_TTL` and starts with no warm-up call, so the "
            "periodic refresh and flush of circuitbreaker_app are inside the counts."
            if options["min_seconds"] >= 1.0
            else "In this run the turns were shorter than `STATE_TTL`: the periodic refresh "
            "and flush may be missing from the counts."
        ),
        "",
    ]
    results = part["results"]
    header = [
        "library",
        "outcome",
        "B",
        "calls",
        "median ns",
        "p99 ns",
        "overhead ns",
        "queries/call",
        "cache ops/call",
        "Redis round trips/call",
        "Redis commands/call",
    ]
    counted = {
        (row["library"], row["outcome"]): row["instructions_above_bare"]
        for row in (data.get("instructions") or {}).get("results") or []
    }
    if counted:
        header.insert(7, "instructions/call above bare")
    rows = []
    for outcome in OUTCOMES:
        for row in results:
            if row["outcome"] != outcome:
                continue
            rows.append(
                [
                    LIBRARIES.get(row["library"], row["library"]),
                    OUTCOME_TITLES[outcome],
                    str(row["batch"]),
                    f"{row['calls']:,}",
                    _num(row["median_ns"]),
                    _num(row["p99_ns"]),
                    "–" if row["library"] == "bare" else _num(row["overhead_ns"]),
                    _per_call(row["queries_per_call"]),
                    _per_call(row["cache_ops_per_call"]),
                    _per_call(row["round_trips_per_call"]),
                    _per_call(row["commands_per_call"]),
                ]
            )
            if counted:
                above = counted.get((row["library"], row["outcome"]))
                rows[-1].insert(7, "–" if above is None else f"{above:,}")
    lines += _table(header, rows)
    lines += instructions_note(data.get("instructions"))
    lines += metrics_comparison(results)
    lines += (
        ["", f"![Per-call time per library]({OVERHEAD_PNG})", ""]
        if data.get("plots", {}).get("overhead")
        else ["", "(plot skipped: matplotlib is not installed)", ""]
    )
    commands = [
        [
            LIBRARIES.get(r["library"], r["library"]),
            OUTCOME_TITLES[r["outcome"]],
            ", ".join(f"{name} {count:.4g}" for name, count in r["redis_commands"].items()),
        ]
        for r in results
        if r.get("redis_commands")
    ]
    if commands:
        lines += ["Which Redis commands each call sent (per call):", ""]
        lines += _table(["library", "outcome", "commands per call"], commands)
        lines.append("")
    round_trip = part.get("redis_round_trip_ns")
    if round_trip is not None:
        lines.append(
            f"- Redis loopback round trip in this run: {round_trip / 1000:,.1f} µs (a PING "
            "through redis-py, median of per-call batch means, timed before and after the "
            "rounds): the Redis failure's target is this plus "
            f"{REDIS_FAILURE_EXTRA_NS / 1000:g} µs."
        )
    for note in part.get("notes", []):
        lines.append(f"- {note}")
    lines += profiles_section(part.get("profiles") or [])
    return lines


def instructions_note(part: dict[str, Any] | None) -> list[str]:
    """How the instruction counts of the overhead table were taken (or why they are not)."""
    if not part:
        return []
    if part.get("skipped"):
        return ["", f"Instructions per call: not counted ({part['skipped']}).", ""]
    short, long = part["calls"]
    return [
        "",
        "**instructions/call above bare**: x86 instructions per call counted by callgrind "
        "(`python -m benchmarks.instructions`), above the matching bare loop: the same "
        f"scenarios in one process under valgrind, {long:,} calls minus {short:,} per "
        "scenario, with `STATE_TTL` an hour (the hot path alone, without the periodic "
        "refresh). Unlike the times they do not move with the machine's load.",
        "",
    ]


def profiles_section(profiles: list[dict[str, Any]]) -> list[str]:
    if not profiles:
        return []
    lines = [
        "",
        "### Profiles (cProfile, circuitbreaker_app with LocMem)",
        "",
        "What one guarded call runs, from `cProfile` over the same loops. cProfile's own cost "
        "per Python function call inflates sub-microsecond times several-fold: read the "
        "*function calls per guarded call* and the relative weights, not the absolute times. "
        "The bare loop makes 1 function call per iteration (the function itself).",
        "",
    ]
    for item in profiles:
        lines += [
            f"**{OUTCOME_TITLES[item['outcome']]}**: {item['function_calls_per_call']:.1f} "
            f"Python function calls per guarded call ({item['calls']:,} calls profiled).",
            "",
        ]
        lines += _table(
            ["function", "calls per guarded call", "own ns per call (inflated)", "cumulative ns"],
            [
                [
                    f"`{row['function']}`",
                    f"{row['calls_per_call']:.2f}",
                    _num(row["tottime_ns_per_call"]),
                    _num(row["cumtime_ns_per_call"]),
                ]
                for row in item["rows"]
            ],
        )
        lines.append("")
    return lines


#: DESIGN §3: every process admits calls this long after a successful trial at the latest.
RECOVERY_BOUND = 0.25


def fleet_section(data: dict[str, Any]) -> list[str]:
    part = data.get("fleet")
    lines = [SECTIONS[3], ""]
    if not part:
        return [*lines, "Not run.", ""]
    options = part["options"]
    lines += [
        f"W = {' and '.join(str(w) for w in options.get('worker_counts') or [options['workers']])}"
        " worker processes call one loopback upstream every "
        f'{options["pace"] * 1000:g} ms each, through their breaker configured as "open after 5 '
        f'consecutive failures, for {options["wait"]:g} s" (circuitbreaker_app: count window 5, '
        f"minimum 5 calls, 100 %, `half_open_max_calls` N = {options['half_open_max_calls']}, "
        "live trials, Redis cache, `STATE_TTL` 1 s; pybreaker `fail_max=5`; circuitbreaker "
        "`failure_threshold=5`). The upstream is a threaded HTTP server in its own process that "
        "counts every request. circuitbreaker_app runs on the single Redis server and also on a "
        "local 3-master Redis Cluster and a Sentinel group (primary, replica, 3 sentinels) "
        "started for the run. Per library and W, fresh workers and a fresh upstream:",
        "",
        "1. **1st outage.** The upstream answers 200 until every worker has made a call (the "
        "whole fleet is running), then 503. *Dead hits* = requests it answered 503 until "
        "every worker was being rejected. The upstream then *holds* "
        "requests (accepts, never answers): the trial calls of half-open hang there, so the "
        f"requests that arrive within {options['hold']:g} s of the first one are the trial "
        "calls the whole fleet admits at once (*trials*). Then it answers 200: the trials "
        "succeed, and *trial ok → all* is the time from the last trial's answer reaching its "
        "worker until every worker admits calls again (DESIGN §3: at most 0.25 s).",
        "2. **2nd outage, after a period of successes.** Once every worker passes calls again, "
        "the upstream answers 503 again (*dead hits*, 2nd figure: the requests it answered "
        "503, so that calls answered 200 while the switch travels to its process are not "
        "counted); as soon as every worker is "
        "rejected it is healed (200). *Heal → first* / *heal → all*: seconds from healed to "
        "the first worker's, and to every worker's, first admitted call. The floor of both "
        "is what is left of the open wait.",
        "",
        "A call is *admitted* when it starts and its breaker lets it through: recovery times "
        "are taken at the start of the first successful call, not at its answer (an upstream "
        "flooded by the first workers back answers the later ones late, which is no "
        "breaker's doing).",
        "",
    ]
    rows = []
    for r in part["results"]:
        rows.append(
            [
                FLEET_LIBRARIES.get(r["library"], r["library"]),
                str(r["workers"]),
                " / ".join(str(h) for h in r["dead_hits"]),
                str(r.get("trials")),
                _num(r.get("open_seconds"), 2, " s"),
                _num(r.get("release_to_all_seconds"), 2, " s"),
                _num(r.get("heal_to_first_seconds"), 2, " s"),
                _num(r.get("heal_to_all_seconds"), 2, " s"),
                f"{r['calls']:,}",
                ", ".join(f"{k} ×{v}" for k, v in r.get("breaker_errors", {}).items()) or "none",
            ]
        )
    lines += _table(
        [
            "library",
            "W",
            "dead hits (1st / 2nd)",
            "trials at once",
            "all rejected → first trial",
            "trial ok → all",
            "heal → first",
            "heal → all",
            "calls",
            "errors raised by the breaker",
        ],
        rows,
    )
    if data.get("plots", {}).get("fleet"):
        lines += ["", f"![Fleet results]({FLEET_PNG})", ""]
    else:
        lines += ["", "(plot skipped: matplotlib is not installed)", ""]
    for r in part["results"]:
        if r.get("transitions"):
            lines.append(
                "- circuitbreaker_app transitions (event log): "
                + ", ".join(f"{a} → {b}" for a, b in r["transitions"])
            )
    for r in part["results"]:
        for error in r.get("worker_errors") or []:
            label = FLEET_LIBRARIES.get(r["library"], r["library"])
            lines.append(f"- {label}, W = {r['workers']}: a worker failed ({error[:300]})")
    for note in part.get("notes", []):
        lines.append(f"- {note}")
    if any(r["library"] == "pybreaker-redis" for r in part["results"]):
        lines.append(
            "- pybreaker's `CircuitRedisStorage` keeps `opened_at` in whole seconds (it stores "
            "`int(calendar.timegm(...))`), so its circuit half-opens up to 1 s before "
            "`reset_timeout` has passed: its *heal* times can be below the open wait."
        )
    lines.append("")
    lines += [
        "Per-worker timelines (seconds from start: the outcome each worker saw from then on):",
        "",
    ]
    for r in part["results"]:
        lines.append(
            f"<details><summary>{FLEET_LIBRARIES.get(r['library'], r['library'])}, "
            f"W = {r['workers']}</summary>"
        )
        lines.append("")
        for index, events in enumerate(r.get("events", [])):
            lines.append(
                f"- worker {index + 1}: " + ", ".join(f"{e['t']:.3f} {e['kind']}" for e in events)
            )
        lines += ["", "</details>", ""]
    return lines


def load_section(data: dict[str, Any]) -> list[str]:
    part = data.get("load")
    lines = [SECTIONS[4], ""]
    if not part:
        return [*lines, "Not run.", ""]
    if part.get("skipped"):
        return [*lines, f"Skipped: {part['skipped']}.", ""]
    options = part["options"]
    tool = (
        "wrk"
        if part["tool"] == "wrk"
        else "the pure-Python load generator (`benchmarks/loadgen.py`)"
    )
    lines += [
        f"gunicorn with {options['workers']} sync workers serves two views of "
        "`benchmarks/views.py` that GET the loopback upstream over a keep-alive session with "
        f"the same {options['dead_timeout']:g} s timeout: `/unguarded/` with `requests`, "
        "`/guarded/` through `circuitbreaker_app.http.CircuitSession` (circuit `bench-http`: "
        "count window 10, minimum 5, 50 %, open 600 s; Redis cache shared by the workers). "
        "The project has only `CommonMiddleware`, so the breaker's cost is not hidden behind "
        f"other middleware. Load: {tool}, on loopback, bounded in time and requests.",
        "",
        f"- **Healthy upstream**: {options['connections']} connections, "
        f"{options['healthy_rounds']} runs of {options['healthy_seconds']:g} s per view, "
        "alternated (unguarded, guarded, unguarded, …); the figure is the median of the ratios "
        "of each guarded run to the unguarded run just before it, so drift of a shared machine "
        "cancels out. Between two runs, sequential requests drain what the load generator "
        "left queued in gunicorn.",
        f"- **Dead upstream** (accepts, never answers): `/unguarded/` with "
        f"{options['dead_connections']} connections (one per worker, so no request queues "
        f"behind another) for {options['dead_seconds']:g} s; then `/guarded/` is tripped "
        f"(requests until {options['consecutive']} answers in a row are 503) and measured while "
        f"open for {options['open_seconds']:g} s, with the same {options['dead_connections']} "
        f"connections (the target's figure), then with {options['connections']} (requests also "
        "wait in gunicorn's backlog behind each other).",
        "",
    ]
    rows = []
    for name in ("unguarded", "guarded"):
        for index, run in enumerate(part["healthy"][name]):
            rows.append(
                [
                    f"healthy, {name}",
                    str(index + 1),
                    f"{run['requests']:,}",
                    _num(run["rps"]),
                    _num(run.get("p50_ms"), 2),
                    _num(run.get("p99_ms"), 2),
                    str(run["non_2xx"]),
                    str(run["errors"]),
                ]
            )
    for label, key in (
        ("dead, unguarded", "dead_unguarded"),
        ("dead, guarded (open)", "dead_guarded"),
        (f"dead, guarded (open), {options['connections']} connections", "dead_guarded_loaded"),
    ):
        run = part.get(key)
        if run is None:
            continue
        rows.append(
            [
                label,
                "1",
                f"{run['requests']:,}",
                _num(run["rps"], 1),
                _num(run.get("p50_ms"), 2),
                _num(run.get("p99_ms"), 2),
                str(run["non_2xx"]),
                str(run["errors"]),
            ]
        )
    lines += _table(
        ["case", "run", "requests", "requests/s", "p50 ms", "p99 ms", "non-2xx", "socket errors"],
        rows,
    )
    trip = part.get("trip") or {}
    lines += [
        "",
        f"Healthy: median guarded {part['healthy_rps']['guarded']:,.0f} vs unguarded "
        f"{part['healthy_rps']['unguarded']:,.0f} requests/s; paired ratios "
        + ", ".join(f"{r * 100:.0f} %" for r in part.get("healthy_ratios") or [])
        + f" (median {(part['healthy_ratio'] or 0) * 100:.1f} %). Tripping `/guarded/` took "
        f"{trip.get('requests')} requests and {_num(trip.get('seconds'), 1, ' s')} (first 503 "
        f"after {_num(trip.get('first_503_after_s'), 1, ' s')}).",
        "",
    ]
    if data.get("plots", {}).get("load"):
        lines += [f"![HTTP load]({LOAD_PNG})", ""]
    for note in part.get("notes", []):
        lines.append(f"- {note}")
    if part.get("server_log_tail"):
        lines += ["", "gunicorn's log (tail):", "", "```", part["server_log_tail"], "```", ""]
    return lines


def memory_section(data: dict[str, Any]) -> list[str]:
    part = data.get("memory")
    lines = [SECTIONS[5], ""]
    if not part:
        return [*lines, "Not run.", ""]
    count = part["count"]
    lines += [
        f"Each library in a fresh process: RSS (`VmRSS`) before and after defining {count:,} "
        "circuits and making one successful call through each (so every circuit is loaded, as "
        "in a long-running worker); *heap* is what `tracemalloc` saw allocated by that step. "
        "circuitbreaker_app's definitions are database rows; what a process holds is its "
        "snapshot of each.",
        "",
    ]
    rows = []
    for r in part["results"]:
        redis = r.get("redis")
        rows.append(
            [
                MEMORY_LIBRARIES.get(r["library"], r["library"]),
                _bytes(r["rss_before"]),
                _bytes(r["rss_after"]),
                _bytes(r["rss_delta"]),
                f"{r['heap_bytes'] / count / 1024:,.2f} KiB",
                "–" if not redis else f"{redis['keys']:,} keys, {redis['bytes'] / 2**20:,.2f} MiB",
            ]
        )
    lines += _table(
        [
            "library",
            "RSS before",
            f"RSS with {count:,}",
            "RSS delta",
            "heap per circuit",
            "in Redis",
        ],
        rows,
    )
    for note in part.get("notes", []):
        lines.append(f"- {note}")
    lines.append("")
    return lines


def render(data: dict[str, Any]) -> str:
    machine = data["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks`): do not edit by hand. "
        "circuitbreaker_app next to [pybreaker](https://pypi.org/project/pybreaker/) and "
        "[circuitbreaker](https://pypi.org/project/circuitbreaker/), measured on the same machine "
        "in the same run. Everything runs on loopback (127.0.0.1); SQLite holds the circuit "
        "definitions; Redis is a local server.",
        "",
    ]
    lines += machine_section(machine, data.get("smoke", False))
    lines += ["", SECTIONS[1], ""]
    rows = targets(data)
    if rows:
        lines += _table(["target", "figure", ""], rows)
    else:
        lines.append("No part that has a target ran.")
    lines += [
        "",
        "A missed target is explained by the profile (part 1) or the per-worker timelines "
        "(part 2) next to its figure.",
        "",
    ]
    lines += overhead_section(data)
    lines += [""] + fleet_section(data)
    lines += [""] + load_section(data)
    lines += [""] + memory_section(data)
    lines += [""] + httpx_clients.section(data)
    if data.get("notes"):
        lines += ["## Notes", ""] + [f"- {note}" for note in data["notes"]] + [""]
    return "\n".join(lines).rstrip() + "\n"
