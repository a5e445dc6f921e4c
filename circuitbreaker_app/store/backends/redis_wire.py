"""What the Redis backend's script calls put on the wire, and the socket they go over:
a script and its SHA1, hiredis's command packer, kernel socket timeouts (``redis_link.py``
sends a failure's script call over a connection of its own with these)."""

from __future__ import annotations

import hashlib
import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

#: Packed script calls kept (a circuit's failures mostly send one command over and over).
PACKED_COMMANDS = 256


class LuaScript:
    """A Lua script and its SHA1, computed here: called with ``EVALSHA``, and with ``EVAL``
    (which also caches it in the server) when the server answers ``NOSCRIPT``."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


def hiredis_packer() -> Callable[[tuple[Any, ...]], Any] | None:
    """hiredis's ``pack_command`` (one C call for a whole command), when redis-py uses it."""
    try:
        from redis.utils import HIREDIS_AVAILABLE
    except ImportError:  # pragma: no cover - every supported redis-py has it
        return None
    if not HIREDIS_AVAILABLE:
        return None
    import hiredis

    return hiredis.pack_command


def kernel_timeouts(sock: Any, timeout: float) -> None:
    """Let the kernel time out the socket's sends and receives (``SO_SNDTIMEO``,
    ``SO_RCVTIMEO``: the same short ``timeout``) and make it blocking in Python's eyes, so
    a send and a receive are one system call each, without the ``poll`` Python runs
    before each on a socket with a timeout. A timeout is an ``OSError`` (``EAGAIN``), an
    outage like any other. Linux only; elsewhere Python keeps the timeouts.

    A TLS socket (``rediss://``) keeps Python's timeouts too: OpenSSL reads the kernel's
    ``EAGAIN`` as "want read", and Python's ``ssl`` module answers that on a blocking
    socket by reading again, so a server that stopped answering would hold the call for
    as long as it stays silent, not for one timeout."""
    if not sys.platform.startswith("linux") or type(sock) is not socket.socket:
        return
    seconds = int(timeout)
    timeval = struct.pack("ll", seconds, max(1, int((timeout - seconds) * 1e6)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    sock.settimeout(None)
