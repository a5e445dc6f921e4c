"""What the numbers were measured on: machine, software versions, date, command."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

PACKAGES = (
    "django-circuitbreaker-app",
    "Django",
    "pybreaker",
    "circuitbreaker",
    "redis",
    "hiredis",
    "requests",
    "gunicorn",
    "prometheus-client",
    "matplotlib",
    "psutil",
)


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def ram_bytes() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def os_name() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return f"{line.split('=', 1)[1].strip(chr(34))}, Linux {platform.release()}"
    return platform.platform()


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def wrk_version() -> str | None:
    if not shutil.which("wrk"):
        return None
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].split(" [")[0] if text else "wrk"


def redis_version(url: str) -> str | None:
    try:
        import redis

        return str(redis.Redis.from_url(url, socket_timeout=2).info("server")["redis_version"])
    except Exception:
        return None


def describe(redis_url: str | None) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_bytes": ram_bytes(),
        "os": os_name(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions(),
        "redis_server": redis_version(redis_url) if redis_url else None,
        "wrk": wrk_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python -m benchmarks", shlex.join(sys.argv[1:])]).strip(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
