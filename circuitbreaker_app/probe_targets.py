"""Where a ``probe_url`` may point (DESIGN §4b): no link-local or cloud-metadata targets.

The probe task sends GET requests from inside the network, and its pass/fail verdict
and logged detail reach whoever may edit a circuit. Left open, ``probe_url`` would be a
way to reach a cloud's instance-metadata service (credentials at
``http://169.254.169.254/``) or to scan internal ports. So a probe URL must:

* be ``http://`` or ``https://`` with a host;
* not name a metadata host (``metadata.google.internal`` and similar, :data:`BLOCKED_HOSTS`);
* not be, or resolve to, an address in :data:`BLOCKED_NETWORKS` (IPv4 link-local, IPv6
  link-local, AWS's IPv6 metadata address, Alibaba's), also when written as an
  IPv4-mapped, NAT64 or 6to4 IPv6 address or in a legacy IPv4 form (``0xa9fea9fe``);
* match ``CIRCUITBREAKER["PROBE_HOSTS"]`` (host names or :mod:`fnmatch` patterns) when
  that is set.

:func:`check_url` runs when a circuit is validated (admin form, ``full_clean``, system
checks). :func:`resolve` runs again at probe time: it resolves the host once, refuses if
*any* address is blocked, and returns the address the probe then connects to
(``probes.PinnedAdapter``), so a DNS answer that changes between check and connect
(rebinding) never reaches a blocked address.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import socket
from typing import Any
from urllib.parse import SplitResult, urlsplit

from django.utils.translation import gettext as _

from circuitbreaker_app import conf

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Networks no probe may reach: link-local (where every major cloud serves instance
#: metadata, 169.254.169.254 and fe80::/10), AWS's IPv6 metadata endpoint, and Alibaba
#: Cloud's metadata address.
BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")
)
#: Host names of metadata services (lower case, :mod:`fnmatch` patterns).
BLOCKED_HOSTS = (
    "metadata.google.internal",
    "*.metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.*.internal",
    "metadata.azure.internal",
    "metadata.tencentyun.com",
)
#: IPv6 prefix of NAT64 (RFC 6052): 64:ff9b::a.b.c.d reaches the IPv4 address a.b.c.d.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: What ``inet_aton`` would read as an IPv4 address: 0xa9fea9fe, 2852039166, 0251.0376.…
LEGACY_IPV4 = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.I)


#: The resolver (a module attribute, so tests can stand in for DNS).
getaddrinfo = socket.getaddrinfo


class UnsafeProbeURL(ValueError):
    """A ``probe_url`` the probe must not request; the message says why."""


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64 or 6to4), if any."""
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def is_blocked_address(address: IPAddress) -> bool:
    """True for a link-local or metadata address, in any of its IPv6 disguises."""
    candidates = [address, embedded_ipv4(address)]
    return any(
        candidate is not None and candidate.version == net.version and candidate in net
        for candidate in candidates
        for net in BLOCKED_NETWORKS
    )


def describe(address: IPAddress) -> str:
    """``address`` for a message: an IPv6 disguise also shows the IPv4 address it carries.

    An IPv4-mapped address reads ``::ffff:169.254.169.254`` on every Python (3.13 prints it
    so; earlier versions print ``::ffff:a9fe:a9fe``), which already shows what it carries.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    carried = embedded_ipv4(address)
    return f"{address} = {carried}" if carried is not None else str(address)


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one (legacy IPv4 forms included)."""
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        pass
    if LEGACY_IPV4.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def normal_host(host: str) -> str:
    """The host as resolvers see it: lower case, IDNA (punycode), no trailing dot."""
    host = host.rstrip(".").lower()
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _split(url: Any) -> tuple[SplitResult, str]:
    if not isinstance(url, str):
        raise UnsafeProbeURL(_("The probe URL must be text."))
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError as exc:
        raise UnsafeProbeURL(_("The probe URL is malformed (%(error)s).") % {"error": exc}) from exc
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise UnsafeProbeURL(
            _("The probe URL must start with http:// or https:// and name a host.")
        )
    return parts, normal_host(host)


def probe_hosts() -> list[str] | None:
    """The ``PROBE_HOSTS`` allow-list (lower case), or None when every host is allowed."""
    allowed = conf.get("PROBE_HOSTS")
    if allowed is None:
        return None
    return [normal_host(pattern) for pattern in allowed]


def _check_host(host: str) -> None:
    if any(fnmatch.fnmatchcase(host, pattern) for pattern in BLOCKED_HOSTS):
        raise UnsafeProbeURL(
            _("The probe URL may not point at a cloud metadata service (%(host)s).")
            % {"host": host}
        )
    address = literal_address(host)
    if address is not None and is_blocked_address(address):
        raise UnsafeProbeURL(
            _(
                "The probe URL may not point at a link-local or cloud metadata address "
                "(%(address)s)."
            )
            % {"address": describe(address)}
        )
    allowed = probe_hosts()
    if allowed is not None and not any(fnmatch.fnmatchcase(host, p) for p in allowed):
        raise UnsafeProbeURL(
            _("The probe URL's host %(host)s is not in CIRCUITBREAKER['PROBE_HOSTS'].")
            % {"host": host}
        )


def check_url(url: Any) -> None:
    """Raise :class:`UnsafeProbeURL` unless ``url`` may be probed (no DNS lookup)."""
    _parts, host = _split(url)
    _check_host(host)


def resolve(url: str) -> str:
    """Check ``url``, resolve its host once and check every address it resolves to.

    Returns the address to connect to (the first one). Raises :class:`UnsafeProbeURL`
    when the URL or any of the addresses is refused, ``OSError`` when the host does
    not resolve.
    """
    parts, host = _split(url)
    _check_host(host)
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    literal = literal_address(host)
    lookup = str(literal) if literal is not None else host
    infos = getaddrinfo(lookup, port, type=socket.SOCK_STREAM)
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    blocked = [address for address in addresses if is_blocked_address(address)]
    if blocked or not addresses:
        raise UnsafeProbeURL(
            _("The probe URL's host %(host)s resolves to a refused address (%(address)s).")
            % {"host": host, "address": describe(blocked[0]) if blocked else "none"}
        )
    return str(addresses[0])


def host_header(url: str) -> str:
    """The ``Host`` header for ``url`` (its netloc without credentials)."""
    return urlsplit(url).netloc.rsplit("@", 1)[-1]
