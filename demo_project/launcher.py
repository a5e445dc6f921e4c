"""Start the demo: `python -m demo_project.launcher` (or `make demo`).

Prepares the database (cache table, migrate, an ``admin``/``admin`` superuser), then runs the
development server on 127.0.0.1 (port ``DEMO_PORT``, default 8000) and, once the package
provides ``circuitbreaker_app.tasks``, a Celery worker with embedded beat that drives the
open -> half-open probes. Ctrl-C or SIGTERM stops every child process group.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signum)


def prepare() -> None:
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")
    django.setup()

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    # The cache table first: migrate's post_migrate handlers may already use the cache.
    call_command("createcachetable")
    call_command("migrate", interactive=False)
    user_model = get_user_model()
    if not user_model.objects.filter(username="admin").exists():
        user_model.objects.create_superuser("admin", "admin@example.invalid", "admin")
        print("Created superuser admin/admin (demo only).")
    connections.close_all()


def start(argv: list[str]) -> subprocess.Popen:
    print("$ " + " ".join(argv), flush=True)
    # Each child leads its own process group, so stopping it also stops what it spawned.
    return subprocess.Popen(argv, cwd=BASE_DIR, start_new_session=True)


def stop(children: list[subprocess.Popen], timeout: float = 10.0) -> None:
    for child in children:
        if child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait()


def main() -> int:
    os.chdir(BASE_DIR)
    port = os.environ.get("DEMO_PORT", "8000")
    prepare()

    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)
    children: list[subprocess.Popen] = []
    exit_code = 0
    try:
        manage = [sys.executable, str(BASE_DIR / "manage.py")]
        children.append(start([*manage, "runserver", f"127.0.0.1:{port}", "--noreload"]))
        # The worker (with embedded beat) runs the probe task; it is started only once the
        # package provides circuitbreaker_app.tasks.
        if importlib.util.find_spec("circuitbreaker_app.tasks") is not None:
            children.append(
                start(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "demo_project",
                        "worker",
                        "-B",
                        "--pool=solo",
                        "-l",
                        "info",
                    ]
                )
            )
        else:
            print("circuitbreaker_app.tasks does not exist: no Celery worker started.")
        print(
            f"\nDemo shop:  http://127.0.0.1:{port}/\n"
            f"Admin:      http://127.0.0.1:{port}/admin/  (login admin / admin — demo only)\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        while True:
            for child in children:
                code = child.poll()
                if code is not None:
                    name = " ".join(str(arg) for arg in child.args[1:4])
                    print(f"{name!r} exited with code {code}; stopping the demo.")
                    exit_code = code or 1
                    raise Stop
            time.sleep(0.5)
    except (Stop, KeyboardInterrupt):
        pass
    finally:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        stop(children)
        print("Demo stopped.")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
