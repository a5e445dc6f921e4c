"""Start the demo: ``python -m demo_project.launcher`` (or ``make demo``).

Prepares the database (cache table, migrate, the circuits of its settings, an
``admin``/``admin`` superuser), then runs the development server on 127.0.0.1 and a Celery
worker with embedded beat that drives the open -> half-open -> closed probes. Ctrl-C or
SIGTERM stops every child process group, and the launcher waits until they are gone.

Environment: ``DEMO_PORT`` (default 8000), ``DEMO_DATA_DIR`` (default ``var/``: SQLite file,
broker folders), and the settings' ``DATABASE_URL``, ``CACHE_URL`` /
``REDIS_URL``, ``CELERY_BROKER_URL`` to use PostgreSQL, Redis or RabbitMQ instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop(Exception):
    pass


def _raise_stop(signum: int, frame: object) -> None:
    """Stop the demo: the first Ctrl-C or SIGTERM, and only the first.

    A second one (an impatient Ctrl-C, or `timeout` relaying the signal its group already
    got) used to land in the ``finally`` that stops the children, before it ignored
    signals: the launcher died there and left the server and the worker running.
    """
    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, signal.SIG_IGN)
    raise Stop(signum)


def prepare() -> list[str]:
    """Create the cache table, migrate, create circuits and the superuser; return circuits."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo_project.settings")
    django.setup()

    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    from circuitbreaker_app.models import Circuit
    from circuitbreaker_app.sync import sync_circuits

    # The cache table first: migrate's post_migrate handlers may already use the cache.
    call_command("createcachetable")
    call_command("migrate", interactive=False, verbosity=0)
    sync_circuits()  # migrate did it already, unless the database was up to date
    user_model = get_user_model()
    if not user_model.objects.filter(username="admin").exists():
        user_model.objects.create_superuser("admin", "admin@example.invalid", "admin")
        print("Created superuser admin/admin (demo only).")
    names = list(Circuit.objects.order_by("name").values_list("name", flat=True))
    connections.close_all()
    return names


def start(argv: list[str]) -> subprocess.Popen[bytes]:
    print("$ " + " ".join(argv), flush=True)
    # Each child leads its own process group, so stopping it also stops what it spawned
    # (the worker's embedded beat process).
    return subprocess.Popen(argv, cwd=BASE_DIR, start_new_session=True)


def stop(children: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM every child's process group, then SIGKILL whatever is left after ``timeout``."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(child, signal.SIGKILL)
            child.wait()
    for child in children:  # e.g. beat, if the worker left it behind
        _signal_group(child, signal.SIGKILL)


def _signal_group(child: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(child.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def wait_for_port(port: int, child: subprocess.Popen[bytes], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def port_taken(port: int) -> bool:
    """True when another program listens on 127.0.0.1:``port`` (the server could not bind).

    Bound as the development server binds (``SO_REUSEADDR``), so a port that only has
    connections in TIME_WAIT from a previous run counts as free.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def main() -> int:
    os.chdir(BASE_DIR)
    port = int(os.environ.get("DEMO_PORT", "8000"))
    os.environ["DEMO_PORT"] = str(port)  # the worker's payments probe calls this server
    if port_taken(port):
        # Checked first: the URLs printed below would otherwise point at that other program
        # until the development server gave up.
        print(
            f"Port {port} on 127.0.0.1 is in use by another program. Choose another port "
            f"with DEMO_PORT, e.g. DEMO_PORT={port + 1} make demo",
            flush=True,
        )
        return 1
    circuits = prepare()

    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)
    children: list[subprocess.Popen[bytes]] = []
    exit_code = 0
    try:
        manage = [sys.executable, str(BASE_DIR / "manage.py")]
        server = start([*manage, "runserver", f"127.0.0.1:{port}", "--noreload"])
        children.append(server)
        # Worker + embedded beat: probe_circuits every PROBE_INTERVAL, probes in threads.
        worker = [sys.executable, "-m", "celery", "-A", "demo_project", "worker", "-B"]
        worker += ["--pool=threads", "--concurrency=4", "-l", "warning"]
        worker += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        children.append(start(worker))
        if not wait_for_port(port, server):
            print(
                f"The web server did not start on port {port} (another port: DEMO_PORT); "
                "stopping the demo."
            )
            exit_code = 1
            raise Stop
        print(
            f"\nCircuits:   {', '.join(circuits)}\n"
            f"Demo shop:  http://127.0.0.1:{port}/\n"
            f"Admin:      http://127.0.0.1:{port}/admin/  (login admin / admin — demo only)\n"
            f"Circuits:   http://127.0.0.1:{port}/admin/circuitbreaker_app/circuit/\n"
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
        print("Demo stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
