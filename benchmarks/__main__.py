"""``python -m benchmarks``: run every part and write docs/benchmarks.md and its plots.

    python -m benchmarks                    # the full run (what `make bench` does)
    python -m benchmarks --smoke --out DIR  # tiny counts, for CI: checks it all still runs

Options: ``--parts overhead,instructions,fleet,load,memory,httpx`` (default all;
``instructions`` needs valgrind and is skipped by ``--smoke``), ``--load-tool
auto|wrk|python``, ``--redis-url URL`` (default ``$CB_BENCH_REDIS_URL`` or
``redis://127.0.0.1:6379/8``), ``--no-redis``, ``--workdir DIR`` (SQLite file and
scratch; default a fresh temporary folder, removed afterwards), ``--json FILE`` (raw
results). Ports come from ``CB_BENCH_PORTS`` (default 18800-18899), all on 127.0.0.1.
The run is bounded: every loop stops on a count and a time limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT

PARTS = ("overhead", "instructions", "fleet", "load", "memory", "httpx")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="tiny iteration counts (CI)")
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder of benchmarks.md")
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument("--load-tool", choices=("auto", "wrk", "python"), default=None)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--no-redis", action="store_true", help="skip every Redis variant")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    args.parts = parts
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    from benchmarks import environment, machine, report

    started = time.monotonic()
    env = environment.prepare(args.workdir, args.redis_url, use_redis=not args.no_redis)
    redis_url = env.redis_url if env.redis_ok else None
    data: dict[str, Any] = {
        "smoke": args.smoke,
        "machine": machine.describe(redis_url),
        "notes": [],
        "plots": {},
    }
    if not env.redis_ok:
        data["notes"].append(
            f"Redis at {env.redis_url} was not used "
            f"({'--no-redis' if args.no_redis else 'unreachable'}): every Redis variant is missing."
        )
    failed = False
    try:
        for part in args.parts:
            print(f"benchmarks: {part} …", file=sys.stderr, flush=True)
            part_started = time.monotonic()
            try:
                data[part] = run_part(part, args, env)
            except Exception:
                failed = True
                data["notes"].append(f"Part {part} failed:\n\n```\n{traceback.format_exc()}```")
                traceback.print_exc()
            print(
                f"benchmarks: {part} done in {time.monotonic() - part_started:.1f} s",
                file=sys.stderr,
                flush=True,
            )
    finally:
        env.cleanup(keep=args.keep)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        draw(data, out)
    except Exception:
        failed = True
        data["notes"].append(f"Plotting failed:\n\n```\n{traceback.format_exc()}```")
        traceback.print_exc()
    data["seconds"] = time.monotonic() - started
    data["notes"].append(f"The whole run took {data['seconds']:.0f} s.")
    (out / "benchmarks.md").write_text(report.render(data))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1, default=str))
    print(f"benchmarks: wrote {out / 'benchmarks.md'} in {data['seconds']:.0f} s", file=sys.stderr)
    return 1 if failed else 0


def run_part(part: str, args: argparse.Namespace, env: Any) -> dict[str, Any]:
    redis_url = env.redis_url if env.redis_ok else None
    if part == "overhead":
        from benchmarks import overhead

        options = (
            overhead.OverheadOptions(
                rounds=1, min_batches=2, min_seconds=0.05, max_batches=5, profile_calls=500
            )
            if args.smoke
            else overhead.OverheadOptions()
        )
        return overhead.run(options, redis_url, env.run_id)
    if part == "instructions":
        from benchmarks import instructions

        if args.smoke:
            return {"results": [], "skipped": "not in a smoke run (about a minute of valgrind)"}
        return instructions.run(redis_url)
    if part == "fleet":
        from benchmarks import fleet

        options = (
            fleet.FleetOptions(
                worker_counts=(2,),
                topologies=(),
                half_open_max_calls=2,
                wait=1.0,
                hold=0.3,
                phase_timeout=10.0,
            )
            if args.smoke
            else fleet.FleetOptions()
        )
        return fleet.run(
            options, env.workdir, env.run_id, env.redis_ok, list(fleet.FLEET_LIBRARIES)
        )
    if part == "load":
        from benchmarks import load

        if args.smoke:
            options = load.LoadOptions(
                tool=args.load_tool or "python",
                connections=4,
                healthy_seconds=0.5,
                healthy_rounds=1,
                dead_timeout=0.3,
                dead_seconds=1.0,
                open_seconds=0.5,
                consecutive=5,
            )
        else:
            options = load.LoadOptions(tool=args.load_tool or "auto")
        return load.run(options, env.redis_ok)
    if part == "memory":
        from benchmarks import memory

        return memory.run(100 if args.smoke else 1_000, env.redis_ok, env.redis_url, env.run_id)
    if part == "httpx":
        from benchmarks import httpx_clients

        return httpx_clients.run(
            httpx_clients.HttpxOptions(
                pairs=2, requests=5, guard_calls=100, last_good_pairs=5, last_good_calls=100
            )
            if args.smoke
            else httpx_clients.HttpxOptions()
        )
    raise ValueError(part)


def draw(data: dict[str, Any], out: Path) -> None:
    from benchmarks import plots
    from benchmarks.fleet import FLEET_LIBRARIES
    from benchmarks.overhead import LIBRARIES

    if not plots.available():
        data["notes"].append("matplotlib is not installed: no plots (pip install -e '.[bench]').")
        return
    if data.get("overhead"):
        plots.overhead(data["overhead"]["results"], LIBRARIES, out / plots.OVERHEAD_PNG)
        data["plots"]["overhead"] = plots.OVERHEAD_PNG
    if data.get("fleet") and data["fleet"]["results"]:
        plots.fleet(
            data["fleet"]["results"],
            FLEET_LIBRARIES,
            data["fleet"]["options"],
            out / plots.FLEET_PNG,
        )
        data["plots"]["fleet"] = plots.FLEET_PNG
    if data.get("load") and data["load"].get("healthy_rps"):
        plots.load(data["load"], out / plots.LOAD_PNG)
        data["plots"]["load"] = plots.LOAD_PNG


if __name__ == "__main__":
    sys.exit(main())
