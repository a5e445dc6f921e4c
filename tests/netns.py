"""A second "host" for fleet tests: a Linux network namespace joined to this one by a veth
pair on a private /24 (``ip netns``, needs root).

Processes started with :meth:`Namespace.prefix` in front of their command line have their
own network stack: they reach this namespace only over the veth pair, at
:attr:`Namespace.host_address`, as a second machine on a LAN would. Made by the test and
removed on the way out (the namespace, and with it both ends of the pair).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def unavailable() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "the ip command is not installed (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    name = f"cbprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", name)
    except RuntimeError as exc:
        return f"ip netns is not available here ({exc})"
    _ip("netns", "delete", name)
    return None


class Namespace:
    """A network namespace with a veth pair: ``host_address`` here, ``address`` there."""

    def __init__(self) -> None:
        tag = f"{os.getpid() % 10000}{random.randrange(100)}"
        self.name = f"cbns{tag}"
        self.host_link, self.link = f"cbh{tag}", f"cbn{tag}"  # interface names ≤ 15 chars
        used = _ip("-4", "addr") + _ip("-4", "route")
        free = [n for n in range(1, 255) if f"10.231.{n}." not in used]
        subnet = random.choice(free)
        self.host_address = f"10.231.{subnet}.1"
        self.address = f"10.231.{subnet}.2"

    def __enter__(self) -> Namespace:
        try:
            _ip("netns", "add", self.name)
            _ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.link)
            _ip("link", "set", self.link, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/24", "dev", self.host_link)
            _ip("link", "set", self.host_link, "up")
            _ip("-n", self.name, "addr", "add", f"{self.address}/24", "dev", self.link)
            _ip("-n", self.name, "link", "set", self.link, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.delete()

    def prefix(self) -> list[str]:
        """Put in front of a command line to run it in the namespace."""
        return ["ip", "netns", "exec", self.name]

    def delete(self) -> None:
        subprocess.run(["ip", "link", "delete", self.host_link], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=10)
