"""Per-host circuit names (``http:<host>``) for the HTTP helpers: one rule for every client.

Two different hosts never share a circuit, and one host always gets the same circuit
whichever client names it (DESIGN §4b):

* the host is taken in its IDNA form, lowercased: ``münchen.de``, ``MÜNCHEN.de`` and
  ``xn--mnchen-3ya.de`` are one circuit, ``http:xn--mnchen-3ya.de`` (requests passes the
  punycode host, httpx the Unicode one);
* a trailing dot is dropped (``example.com.`` is ``example.com``); the port is part of the
  name only when it is not the scheme's default (two services on one host are two
  dependencies), as ``:<port>``; credentials, path and query never are;
* an IPv6 address is written in its compressed form without brackets, and its port
  follows an underscore (``http:::1_9000``), so ``[::1]:9000`` and ``[::1:9000]`` stay
  two circuits;
* a host a circuit name cannot hold as it is — a character outside letters, digits and
  ``._:-`` (``a!b.example``), a Unicode host that is not valid IDNA, or a name longer than
  100 characters — is named by a hash: ``http:`` + the host with each such character as
  ``-`` (shortened to fit) + ``-H`` + 16 upper-case hex digits of the SHA-256 of the host
  and port. Plain names are always lower case, so a hashed name (it has upper-case letters)
  can never equal a plain one, and two hashed names are equal only if their hosts are.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import unicodedata
from urllib.parse import urlsplit

import idna

from circuitbreaker_app.core.config import NAME_RE

__all__ = ["DEFAULT_PORTS", "circuit_for_host", "circuit_for_url", "idna_host"]

#: Ports that are not part of a name, by scheme.
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
PREFIX = "http:"
MAX_NAME = 100
_PLAIN_HOST = re.compile(r"[a-z0-9._-]+")
_IPV6 = re.compile(r"[0-9a-f:]+")  # compressed, no zone (a zone has "%": hashed)
_UNSAFE = re.compile(r"[^a-z0-9._:-]")
_HASH_DIGITS = 16


def idna_host(host: str) -> str | None:
    """``host`` lowercased, without a trailing dot, Unicode labels in IDNA (punycode) form;
    None when it is Unicode that IDNA cannot encode."""
    host = host.rstrip(".")
    if host.isascii():
        if ":" in host:
            try:  # one spelling per address: 0:0:0:0:0:0:0:1 is ::1
                return ipaddress.IPv6Address(host).compressed
            except ValueError:
                pass
        return host.lower()
    try:
        return idna.encode(host, uts46=True).decode("ascii").lower()
    except idna.IDNAError:
        return None


def circuit_for_host(host: str, port: int | None = None, scheme: str = "") -> str:
    """The per-host circuit name for ``host`` (and ``port`` when not ``scheme``'s default)."""
    host = host.rstrip(".")
    if not host:
        raise ValueError("cannot name a circuit for a request without a host")
    if port is not None and port == DEFAULT_PORTS.get(scheme.lower()):
        port = None
    encoded = idna_host(host)
    suffix = "" if port is None else f":{port}"
    if encoded is not None and ":" in encoded and _IPV6.fullmatch(encoded):
        return f"{PREFIX}{encoded}" + ("" if port is None else f"_{port}")
    if encoded is not None and _PLAIN_HOST.fullmatch(encoded):
        name = f"{PREFIX}{encoded}{suffix}"
        if len(name) <= MAX_NAME:
            return name
    # Unrepresentable: a readable prefix plus a hash of exactly what identifies the host.
    exact = encoded if encoded is not None else unicodedata.normalize("NFC", host).casefold()
    digest = hashlib.sha256(f"{exact}{suffix}".encode()).hexdigest()[:_HASH_DIGITS].upper()
    tail = f"-H{digest}"
    readable = _UNSAFE.sub("-", f"{exact}{suffix}".encode("ascii", "replace").decode().lower())
    name = PREFIX + readable[: MAX_NAME - len(PREFIX) - len(tail)] + tail
    assert NAME_RE.fullmatch(name), name
    return name


def circuit_for_url(url: str) -> str:
    """The per-host circuit name for ``url``: ``http:<host>``, or ``http:<host>:<port>``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not host.rstrip("."):
        raise ValueError(f"cannot name a circuit for a URL without a host: {url!r}")
    try:
        port = parts.port
    except ValueError:  # a malformed port: the client reports it; the name ignores it
        port = None
    return circuit_for_host(host, port, parts.scheme)
