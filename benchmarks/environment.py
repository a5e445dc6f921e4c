"""The run's environment: working folder, run id, Redis, Django set up for the runner."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import delete_run_keys, redis_available

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/8"


@dataclass
class RunEnvironment:
    workdir: Path
    run_id: str
    redis_url: str
    redis_ok: bool
    own_workdir: bool

    def cleanup(self, keep: bool = False) -> None:
        if self.redis_ok:
            try:
                delete_run_keys(self.redis_url, self.run_id)
            except Exception:  # best effort: the keys are prefixed by the run id anyway
                pass
        if self.own_workdir and not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def prepare(workdir: str | None, redis_url: str | None, use_redis: bool = True) -> RunEnvironment:
    """Create the working folder, pick a run id, export both for child processes, and set
    Django up with :mod:`benchmarks.settings` (SQLite in the working folder, migrated)."""
    own = workdir is None
    path = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="cb-bench-"))
    path.mkdir(parents=True, exist_ok=True)
    database = path / "bench.sqlite3"
    for suffix in ("", "-wal", "-shm"):  # a fresh database every run
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    run_id = secrets.token_hex(4)
    url = redis_url or os.environ.get("CB_BENCH_REDIS_URL") or DEFAULT_REDIS_URL
    ok = use_redis and redis_available(url)
    os.environ.update(
        CB_BENCH_DIR=str(path),
        CB_BENCH_RUN=run_id,
        CB_BENCH_REDIS_URL=url,
        CB_BENCH_CACHE="locmem",
        DJANGO_SETTINGS_MODULE="benchmarks.settings",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    return RunEnvironment(path, run_id, url, ok, own)
