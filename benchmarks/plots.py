"""PNG plots of the results (matplotlib, Agg backend); skipped when matplotlib is missing."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

OVERHEAD_PNG = "benchmarks-overhead.png"
FLEET_PNG = "benchmarks-fleet.png"
LOAD_PNG = "benchmarks-load.png"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def overhead(results: list[dict[str, Any]], labels: dict[str, str], path: Path) -> None:
    from benchmarks.overhead import OUTCOME_TITLES, OUTCOMES

    plt = _pyplot()
    libraries = list(dict.fromkeys(r["library"] for r in results))
    figure, axes = plt.subplots(1, len(OUTCOMES), figsize=(15, 0.55 * len(libraries) + 1.8))
    for axis, outcome in zip(axes, OUTCOMES, strict=True):
        rows = {r["library"]: r for r in results if r["outcome"] == outcome}
        names = [name for name in libraries if name in rows]
        values = [max(rows[name]["median_ns"], 1.0) for name in names]
        colours = [
            "#999999" if n == "bare" else "#1f77b4" if n.startswith("cb_app") else "#ff7f0e"
            for n in names
        ]
        positions = range(len(names))
        axis.barh(list(positions), values, color=colours)
        axis.set_yticks(list(positions), [labels.get(n, n) for n in names], fontsize=8)
        axis.invert_yaxis()
        axis.set_xscale("log")
        axis.set_title(OUTCOME_TITLES[outcome])
        axis.set_xlabel("ns per call (median of batch means, log scale)")
        for y, value in zip(positions, values, strict=True):
            axis.text(value, y, f" {value:,.0f}", va="center", fontsize=7)
        if outcome != OUTCOMES[0]:
            axis.set_yticklabels([])
    figure.suptitle("Per-call time of a guarded call, same process, same run")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def fleet(results: list[dict[str, Any]], labels: dict[str, str], options: dict, path: Path) -> None:
    plt = _pyplot()
    names = [r["library"] for r in results]
    ticks = [
        labels.get(r["library"], r["library"]).replace(", ", "\n") + f"\nW={r['workers']}"
        for r in results
    ]
    figure, axes = plt.subplots(1, 3, figsize=(max(15, 1.3 * len(names) * 3), 4.6))
    positions = list(range(len(names)))
    width = 0.38
    first = [(r["dead_hits"] or [0])[0] for r in results]
    second = [(r["dead_hits"] + [0, 0])[1] for r in results]
    axes[0].bar([p - width / 2 for p in positions], first, width, label="1st outage")
    axes[0].bar([p + width / 2 for p in positions], second, width, label="2nd outage")
    axes[0].scatter(
        positions,
        [5 + r["workers"] for r in results],
        color="red",
        marker="_",
        s=400,
        label="target 5 + W",
        zorder=3,
    )
    axes[0].set_title("Requests reaching a dead upstream")
    axes[0].legend(fontsize=8)
    trials = [r.get("trials") or 0 for r in results]
    axes[1].bar(positions, trials, color="#2ca02c")
    axes[1].axhline(
        options["half_open_max_calls"], color="red", linestyle="--", label="N (half_open_max_calls)"
    )
    axes[1].set_title("Trial requests admitted at once in half-open")
    axes[1].legend(fontsize=8)
    heal_first = [r.get("heal_to_first_seconds") or 0 for r in results]
    heal_all = [r.get("heal_to_all_seconds") or 0 for r in results]
    axes[2].bar([p - width / 2 for p in positions], heal_first, width, label="first process")
    axes[2].bar([p + width / 2 for p in positions], heal_all, width, label="whole fleet")
    axes[2].axhline(options["wait"], color="grey", linestyle=":", label="open wait")
    axes[2].set_title("Seconds from upstream healed to calls passing")
    axes[2].legend(fontsize=8)
    for axis in axes:
        axis.set_xticks(positions, ticks, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def load(result: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    rps = result["healthy_rps"]
    axes[0].bar(["unguarded", "guarded"], [rps["unguarded"], rps["guarded"]], color="#1f77b4")
    axes[0].set_title("Healthy upstream: requests/s (median of runs)")
    dead = [result["dead_unguarded"], result["dead_guarded"]]
    p50 = [d.get("p50_ms", 0) for d in dead]
    p99 = [d.get("p99_ms", 0) for d in dead]
    axes[1].bar([0 - 0.2, 1 - 0.2], p50, 0.4, label="p50")
    axes[1].bar([0 + 0.2, 1 + 0.2], p99, 0.4, label="p99")
    axes[1].set_xticks([0, 1], ["unguarded", "guarded (open)"])
    axes[1].set_yscale("log")
    axes[1].set_ylabel("ms (log scale)")
    axes[1].set_title("Dead upstream: latency")
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
