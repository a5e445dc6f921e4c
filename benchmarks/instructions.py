"""Instructions per guarded call, counted by callgrind: a measure that holds on a busy machine.

    python -m benchmarks.instructions [--calls N] [--no-redis] [--json FILE]

Runs :mod:`benchmarks.overhead`'s own scenarios (the same zero-argument functions, the
same loops, the same circuits on LocMem and Redis) in one Python process under
``valgrind --tool=callgrind``, and prints for each the instructions per call above the
matching bare loop (a success above ``f()``, a rejection and a failure above
``try: f() except Exception: pass``).

How: the child runs each measured loop through ``operator.call`` (a C function nothing
else in the process calls), and callgrind collects only inside it
(``--collect-atstart=no --toggle-collect=_operator_call``) and dumps its counts after
each (``--dump-after=_operator_call``). Every scenario runs ``SHORT`` and then ``LONG``
calls; per call = (instructions of the long run − those of the short one) / (LONG −
SHORT), so what a loop costs once (the first call, a refresh it triggers) cancels out.
``STATE_TTL`` is an hour here, so the count is the hot path's alone: the once-per-
``STATE_TTL`` refresh and flush of the timed benchmark are not in it (under valgrind a
second holds a few thousand calls, which would make it count them 50 times too often).

Instruction counts change with the code and the interpreter, not with the load: a change
of a few instructions per call is a real one. Times are :mod:`benchmarks.overhead`'s.
"""

from __future__ import annotations

import argparse
import gc
import json
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT

#: Calls of the short and the long run of each scenario (the failure runs fewer: each
#: costs ~100x a success under valgrind, and it is measured for completeness only).
SHORT, LONG = 200, 2_200
FAILURE_SHORT, FAILURE_LONG = 20, 220
#: Where callgrind collects: the C function the child runs every measured loop through.
REGION = "_operator_call"


def _child(calls: int, redis_url: str | None, out: Path) -> None:
    """Run inside valgrind: every scenario's short and long loop, in order; write the
    order of the regions to ``out`` (callgrind numbers its dumps in the same order)."""
    # The parent made the folder, the run id and the migrated database (environment.py):
    # migrating under valgrind would take a minute. Here Django is only set up.
    import django

    django.setup()
    try:
        from django.conf import settings
        from django.test import override_settings

        from benchmarks import overhead

        with override_settings(CIRCUITBREAKER={**settings.CIRCUITBREAKER, "STATE_TTL": 3600}):
            scenarios = overhead.bare_scenarios()
            scenarios += overhead.cb_app_scenarios("cb_app-locmem", "default")
            if redis_url:
                scenarios += overhead.cb_app_scenarios("cb_app-redis", "redis")
            regions = []
            for scenario in scenarios:
                failure = scenario.outcome == "failure"
                short, long = (FAILURE_SHORT, FAILURE_LONG) if failure else (SHORT, LONG)
                short, long = short * calls // SHORT, long * calls // SHORT
                scenario.setup()
                loop, fn = scenario.loop(), scenario.fn
                loop(fn, 20)  # warm: the first call's refresh, caches, specialisation
                for n in (short, long):
                    gc.collect()
                    operator.call(loop, fn, n)
                    regions.append(
                        {"library": scenario.library, "outcome": scenario.outcome, "n": n}
                    )
                scenario.teardown()
        out.write_text(json.dumps(regions))
    finally:
        from django.db import connections

        connections.close_all()


def _instructions(dump: Path) -> int:
    """The instructions (event Ir) a callgrind dump counted."""
    text = dump.read_text()
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if not found:
        raise RuntimeError(f"no instruction total in {dump}")
    return int(found.group(1))


def measure(calls: int = SHORT, redis_url: str | None = None) -> dict[str, Any]:
    """Run the child under callgrind; instructions per call above the bare loop.

    Django must be set up already (:func:`benchmarks.environment.prepare`): the child
    inherits its folder, run id and migrated database through the environment."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="cb-instr-") as folder:
        work = Path(folder)
        regions_file = work / "regions.json"
        command = [
            valgrind,
            "--tool=callgrind",
            "--collect-atstart=no",
            f"--toggle-collect={REGION}",
            f"--dump-after={REGION}",
            f"--callgrind-out-file={work}/cg.out",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--child",
            str(regions_file),
            "--calls",
            str(calls),
        ]
        command += ["--redis-url", redis_url] if redis_url else ["--no-redis"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run(command, check=True, cwd=ROOT, env=env, stderr=subprocess.PIPE)
        regions = json.loads(regions_file.read_text())
        dumps = sorted(work.glob("cg.out.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        if len(dumps) < len(regions):
            raise RuntimeError(f"{len(dumps)} callgrind dumps for {len(regions)} regions")
        counts = [_instructions(dump) for dump in dumps[: len(regions)]]
    per_call: dict[tuple[str, str], float] = {}
    for i in range(0, len(regions), 2):
        short, long = regions[i], regions[i + 1]
        per_call[short["library"], short["outcome"]] = (counts[i + 1] - counts[i]) / (
            long["n"] - short["n"]
        )
    results = []
    for (library, outcome), value in per_call.items():
        bare = per_call["bare", outcome]
        results.append(
            {
                "library": library,
                "outcome": outcome,
                "instructions_per_call": round(value),
                "instructions_above_bare": None if library == "bare" else round(value - bare),
            }
        )
    return {"results": results, "calls": [SHORT * calls // SHORT, LONG * calls // SHORT]}


def run(redis_url: str | None) -> dict[str, Any]:
    """The ``instructions`` part of ``python -m benchmarks`` (a note instead when valgrind
    is missing: the part is optional)."""
    if shutil.which("valgrind") is None:
        return {"results": [], "skipped": "valgrind is not installed (apt-get install valgrind)"}
    return measure(SHORT, redis_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions")
    parser.add_argument("--calls", type=int, default=SHORT, help="calls of the short run")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.calls, None if args.no_redis else args.redis_url, Path(args.child))
        return 0
    from benchmarks import environment

    env = environment.prepare(None, args.redis_url, use_redis=not args.no_redis)
    try:
        data = measure(args.calls, env.redis_url if env.redis_ok else None)
    finally:
        env.cleanup()
    print(f"{'library':<22} {'outcome':<10} {'instr/call':>11} {'above bare':>11}")
    for row in data["results"]:
        above = row["instructions_above_bare"]
        print(
            f"{row['library']:<22} {row['outcome']:<10} {row['instructions_per_call']:>11,}"
            f" {'–' if above is None else f'{above:,}':>11}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
