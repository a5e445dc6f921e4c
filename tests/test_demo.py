"""Smoke test of ``make demo``: the launcher on embedded defaults, then Ctrl-C; and a
port that another program holds.

Runs ``python -m demo_project.launcher`` with a fresh data folder and a free port (no
database, cache or broker server), fetches the shop page and the admin login page over
HTTP, sends SIGINT as a terminal's Ctrl-C would, and checks that every process the demo
started (web server, Celery worker, its embedded beat) is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import requests

from tests.loopback import closed_port

pytestmark = pytest.mark.celery

BASE_DIR = Path(__file__).resolve().parent.parent
#: Settings of the test suite that must not leak into the demo's environment.
SERVICE_VARIABLES = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CACHE_URL", "REDIS_URL")


def descendants(root: int) -> set[int]:
    """Every live process below ``root`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_until(condition, timeout: float, what: str, log: Path) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; launcher output:\n{log.read_text()}")
        time.sleep(0.2)


def test_the_demo_starts_serves_and_stops_with_no_process_left(tmp_path):
    port = closed_port()
    data = tmp_path / "var"
    log = tmp_path / "launcher.log"
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.pop("CELERY_BROKER_URL", None)
    env.update({"DEMO_DATA_DIR": str(data), "DEMO_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "demo_project.launcher"],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    seen: set[int] = set()
    try:
        wait_until(lambda: "Press Ctrl-C" in log.read_text(), 120, "the demo's URLs", log)
        text = log.read_text()
        assert f"http://127.0.0.1:{port}/" in text
        assert "admin / admin" in text

        shop = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert shop.status_code == 200
        assert "payments" in shop.text
        login = requests.get(f"http://127.0.0.1:{port}/admin/login/", timeout=10)
        assert login.status_code == 200
        assert 'name="password"' in login.text

        with contextlib.closing(sqlite3.connect(data / "demo.sqlite3")) as db:
            names = {row[0] for row in db.execute("SELECT name FROM circuitbreaker_app_circuit")}
        assert {"payments", "inventory"} <= names

        def worker_and_beat_running() -> bool:
            seen.update(descendants(launcher.pid))
            celery = [pid for pid in seen if alive(pid) and "celery" in command(pid)]
            return len(celery) >= 2  # the worker and its embedded beat process

        wait_until(worker_and_beat_running, 60, "the Celery worker and beat", log)
        assert any("runserver" in command(pid) for pid in seen)
        for folder in ("queue", "processed", "control"):
            assert (data / "broker" / folder).is_dir()

        stopping = time.monotonic()
        launcher.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert launcher.wait(timeout=60) == 0
        print(f"\ndemo stopped {time.monotonic() - stopping:.1f} s after Ctrl-C")
        assert "Demo stopped." in log.read_text()
        left = [pid for pid in seen if alive(pid)]
        assert left == [], [command(pid) for pid in left]
    finally:
        if launcher.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launcher.pid, signal.SIGKILL)
        for pid in seen:  # only processes still running the demo's commands
            if alive(pid) and ("demo_project" in command(pid) or "runserver" in command(pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            launcher.wait(timeout=10)


def test_a_taken_port_is_named_with_how_to_choose_another_and_nothing_starts(tmp_path):
    """Port 8000 is often taken on a Django developer's machine: the launcher says so and
    how to pick another, before it prepares anything or prints URLs of that other program."""
    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.pop("CELERY_BROKER_URL", None)
    with socket.create_server(("127.0.0.1", 0)) as other:  # listening, as a server would
        port = other.getsockname()[1]
        env.update({"DEMO_DATA_DIR": str(data), "DEMO_PORT": str(port)})
        result = subprocess.run(
            [sys.executable, "-m", "demo_project.launcher"],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"Port {port} on 127.0.0.1 is in use by another program. Choose another port with "
        f"DEMO_PORT, e.g. DEMO_PORT={port + 1} make demo"
    ]
    assert result.stderr == ""
    assert not data.exists()  # no database, broker folders or superuser were made


def demo_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a demo on its own data folder and port, without the suite's."""
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
    env.pop("CELERY_BROKER_URL", None)
    env.update({"DEMO_DATA_DIR": str(tmp_path / "var"), "DEMO_PORT": str(port)})
    env.update({"PYTHONUNBUFFERED": "1", **extra})
    return env


@pytest.mark.redis
@pytest.mark.backend_independent
def test_beat_keeps_running_on_a_redis_broker(tmp_path):
    """The tutorial's `CELERY_BROKER_URL=redis://…`: with the demo's own extras only, the
    embedded beat died within seconds in 3 of 4 starts (its shelve, SQLite on Python 3.13,
    failed with "disk I/O error" or "locking protocol"), and no probe ran. Beat keeps its
    schedule in memory, and is still there to end a forced state 10 s later."""
    import redis

    broker = os.environ.get("CB_REDIS_URL", "redis://127.0.0.1:6379/15")
    redis.Redis.from_url(broker).flushdb()
    env = demo_env(tmp_path, closed_port(), CELERY_BROKER_URL=broker)
    log = tmp_path / "launcher.log"
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "demo_project.launcher"],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: "Press Ctrl-C" in log.read_text(), 120, "the demo's URLs", log)
        subprocess.run(
            [sys.executable, "manage.py", "circuits", "open", "inventory", "--for", "10s"],
            cwd=BASE_DIR,
            env={**env, "DJANGO_SETTINGS_MODULE": "demo_project.settings"},
            check=True,
            capture_output=True,
        )
        ended = "circuit 'inventory': forced_open -> half_open (forced_until_elapsed)"
        wait_until(lambda: ended in log.read_text(), 90, "beat to end the forced state", log)
        assert "ERROR/Beat" not in log.read_text()
        assert not (tmp_path / "var" / "celerybeat-schedule").exists()  # kept in memory
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=60) == 0
    finally:
        if launcher.poll() is None:  # failed: let the launcher stop its children first
            launcher.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                launcher.wait(timeout=60)
        if launcher.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launcher.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                launcher.wait(timeout=10)


def test_the_filesystem_broker_never_shows_a_message_before_it_is_whole(tmp_path):
    """A worker polling the folder read a message file that was created but not yet
    written, and stopped with JSONDecodeError ("Unrecoverable error"), stopping the demo.
    Every message appears under its .msg name only once complete."""
    import kombu

    from demo_project.broker import Transport

    folder = tmp_path / "queue"
    folder.mkdir()
    options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(tmp_path),
        "store_processed": False,
    }
    seen_while_writing: list[list[str]] = []
    real_replace = os.replace

    def replace(src, dst):  # type: ignore[no-untyped-def]
        # the message is complete under its .part name; no .msg file exists yet
        seen_while_writing.append(sorted(os.listdir(folder)))
        assert json.loads(Path(src).read_text())["body"] == "probe"
        real_replace(src, dst)

    # The class itself, not the filesystem:// alias: in a suite run, a test that patched
    # sys.modules may have made kombu import its transport module twice, so the alias the
    # demo sets can be in a dict this Connection does not read (the next test checks the
    # alias in a fresh interpreter, as the worker starts).
    with kombu.Connection(transport=Transport, transport_options=options) as connection:
        assert isinstance(connection.transport, Transport)
        channel = connection.default_channel
        with mock.patch("demo_project.broker.os.replace", side_effect=replace):
            channel._put("celery", {"body": "probe"})
        assert len(seen_while_writing) == 1
        (written,) = seen_while_writing[0]
        assert written.endswith(".celery.msg.part")
        (ready,) = os.listdir(folder)
        assert ready == written.removesuffix(".part")
        assert channel._get("celery") == {"body": "probe"}
        assert os.listdir(folder) == []


def test_the_demo_celery_app_makes_filesystem_urls_use_the_whole_message_transport():
    """What a worker or beat the launcher starts sees: importing the demo's Celery app maps
    filesystem:// to demo_project.broker.Transport (a fresh interpreter)."""
    probe = (
        "import kombu, demo_project.celery; "
        "print(type(kombu.Connection('filesystem://').transport).__module__)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "demo_project.settings"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "demo_project.broker"


def test_a_second_stop_signal_cannot_interrupt_the_stop():
    """The first SIGINT/SIGTERM stops the demo; from then on both are ignored, so a second
    one cannot cut the launcher's clean-up short (it died in its `finally`, leaving the
    server and worker running)."""
    from demo_project import launcher

    saved = {signum: signal.getsignal(signum) for signum in launcher.STOP_SIGNALS}
    try:
        for signum in launcher.STOP_SIGNALS:
            signal.signal(signum, launcher._raise_stop)
        with pytest.raises(launcher.Stop):
            signal.raise_signal(signal.SIGINT)
        assert {signal.getsignal(signum) for signum in launcher.STOP_SIGNALS} == {signal.SIG_IGN}
        signal.raise_signal(signal.SIGTERM)  # ignored: nothing raised, nothing killed
        signal.raise_signal(signal.SIGINT)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
