"""Probes: how the beat task asks a dependency whether it has recovered.

A circuit is probed by a function registered for its name, or else by a GET of its
``probe_url``::

    from circuitbreaker_app import probes

    @probes.register("payments")
    def payments_alive() -> bool:
        return gateway.ping()          # True (truthy) = healthy; False or raising = not

Put registrations in ``<app>/probes.py``: the probe task imports those modules of every
installed app (like ``admin.py``), so the Celery worker knows them. Every probe runs in a
daemon thread bounded by the circuit's ``probe_timeout``, so a probe that hangs is a failed
probe, never a stuck worker. Probe responses are never rendered or stored; only the status
code (and the URL masked by ``models.mask_url``) reaches the logs.

A ``probe_url`` is checked again when it is probed (:mod:`circuitbreaker_app.probe_targets`):
its host is resolved once, every address is checked (no link-local or metadata target),
and the request goes to that checked address (:class:`PinnedAdapter`), directly (proxy
environment variables are ignored).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from requests.adapters import HTTPAdapter

from circuitbreaker_app import probe_targets
from circuitbreaker_app.core.config import check_name
from circuitbreaker_app.text import shorten

logger = logging.getLogger("circuitbreaker_app")

ProbeFunction = Callable[[], Any]
F = TypeVar("F", bound=ProbeFunction)

USER_AGENT = "circuitbreaker-probe"
#: Characters of a failed probe's detail kept (cut on a word boundary, with "…").
DETAIL_MAX = 200

_registry: dict[str, ProbeFunction] = {}
_running: dict[str, threading.Thread] = {}
_running_lock = threading.Lock()
_discovered = False


@dataclass(frozen=True)
class ProbeResult:
    """The verdict of one probe; ``detail`` is short, log-safe text (never a body)."""

    ok: bool
    detail: str


class ProbeError(Exception):
    """A probe could not even be attempted (e.g. a ``probe_url`` that is not http(s))."""


# -- registry --------------------------------------------------------------------------------


def register(name: str) -> Callable[[F], F]:
    """Decorator: probe the circuit ``name`` by calling the decorated function.

    The function takes no arguments and returns a truthy value when the dependency is
    healthy; a false value or an exception is a failed probe. Registering a name again
    replaces the earlier function (module reloads). A registered function takes
    precedence over the circuit's ``probe_url``.
    """
    check_name(name)

    def decorator(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"probes.register({name!r}) needs a callable, but got {fn!r}")
        _registry[name] = fn
        return fn

    return decorator


def unregister(name: str) -> None:
    """Forget the function registered for ``name`` (if any)."""
    _registry.pop(name, None)


def autodiscover(force: bool = False) -> None:
    """Import ``probes`` modules of every installed app, once per process."""
    global _discovered
    if _discovered and not force:
        return
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("probes")
    _discovered = True


def registered(name: str) -> ProbeFunction | None:
    """The function registered for ``name``, after discovering ``<app>/probes.py`` modules."""
    autodiscover()
    return _registry.get(name)


def has_probe(name: str, probe_url: str = "") -> bool:
    """True when the circuit ``name`` has a registered function or a ``probe_url``."""
    return bool(probe_url) or registered(name) is not None


# -- running a probe -----------------------------------------------------------------------


class PinnedAdapter(HTTPAdapter):
    """A requests adapter that connects to one checked address, whatever DNS says later.

    TLS still verifies the certificate against the URL's host name (SNI and hostname
    check use it), and the ``Host`` header is the URL's, so virtual hosts work.
    """

    def __init__(self, address: str, **kwargs: Any) -> None:
        self.address = address
        super().__init__(max_retries=0, **kwargs)

    def build_connection_pool_key_attributes(
        self, request: Any, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        hostname = host_params["host"]
        host_params["host"] = self.address
        if host_params["scheme"] == "https":
            pool_kwargs["server_hostname"] = hostname
            pool_kwargs["assert_hostname"] = hostname
        return host_params, pool_kwargs


def http_probe(url: str, timeout: float) -> ProbeResult:
    """GET ``url``: 2xx and 3xx are healthy. Redirects are not followed; no body is read."""
    import requests

    try:
        parts = urlsplit(url)
        scheme_ok = parts.scheme.lower() in ("http", "https")
        host = parts.hostname
    except ValueError as exc:
        raise ProbeError(f"malformed probe_url ({exc})") from exc
    if not scheme_ok or not host:
        raise ProbeError("probe_url must be an absolute http:// or https:// URL")
    try:
        address = probe_targets.resolve(url)
    except probe_targets.UnsafeProbeURL as exc:
        raise ProbeError(str(exc)) from exc
    with requests.Session() as session:
        session.trust_env = False  # no proxy: the connection goes to the checked address
        adapter = PinnedAdapter(address)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        session.headers["Host"] = probe_targets.host_header(url)
        response = session.get(url, timeout=timeout, allow_redirects=False, stream=True)
        try:
            status = response.status_code
        finally:
            response.close()
    return ProbeResult(200 <= status < 400, f"HTTP {status}")


def _call_function(fn: ProbeFunction) -> ProbeResult:
    value = fn()
    if value:
        return ProbeResult(True, "returned a true value")
    return ProbeResult(False, f"returned {type(value).__name__} {value!r:.40}")


def run_probe(name: str, probe_url: str, timeout: float) -> ProbeResult:
    """Probe the circuit ``name`` once, within ``timeout`` seconds; never raises.

    Uses the registered function, else ``probe_url``. Exceptions, time-outs, malformed
    URLs and a missing probe are all failed probes with a short ``detail``.
    """
    fn = registered(name)
    if fn is not None:
        return _bounded(name, lambda: _call_function(fn), timeout)
    if probe_url:
        result = _bounded(name, lambda: http_probe(probe_url, timeout), timeout)
        return _masked(result, probe_url)
    return ProbeResult(False, "no probe: set probe_url or register a probe function")


def _masked(result: ProbeResult, url: str) -> ProbeResult:
    """Keep credentials of ``url`` out of ``result.detail`` (error texts may quote it)."""
    from circuitbreaker_app.models import mask_url

    masked = mask_url(url)
    if masked == url:
        return result
    detail = result.detail.replace(url, masked)
    try:
        parts = urlsplit(url)
        secrets = [parts.username, parts.password, parts.fragment]
    except ValueError:
        secrets = []
    else:
        # every query value, and a bare token (``?SuperSecretApiKey``) whole
        for item in parts.query.split("&"):
            value = item.split("=", 1)[1] if "=" in item else item
            secrets += [value, unquote(value)]
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        detail = detail.replace(secret, "***")
    return ProbeResult(result.ok, detail)


def _bounded(name: str, target: Callable[[], ProbeResult], timeout: float) -> ProbeResult:
    """Run ``target`` in a daemon thread and wait at most ``timeout`` seconds for it.

    A thread that outlives its timeout is abandoned (Python cannot kill it); while it
    is still alive, further probes of the same circuit fail at once, so a probe that
    hangs for ever costs one thread, not one per attempt.
    """
    with _running_lock:
        previous = _running.get(name)
        if previous is not None and previous.is_alive():
            return ProbeResult(False, "the previous probe is still running past probe_timeout")
        box: dict[str, Any] = {}
        thread = threading.Thread(
            target=_run_into, args=(target, box), name=f"circuitbreaker-probe:{name}", daemon=True
        )
        _running[name] = thread
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return ProbeResult(False, f"timed out after {timeout:g} s")
    with _running_lock:
        if _running.get(name) is thread:
            del _running[name]
    error = box.get("error")
    if error is not None:
        return ProbeResult(False, shorten(f"{type(error).__name__}: {error}", DETAIL_MAX))
    result: ProbeResult = box["result"]
    return result


def _run_into(target: Callable[[], ProbeResult], box: dict[str, Any]) -> None:
    try:
        box["result"] = target()
    except BaseException as exc:  # a probe's own error is a failed probe, not ours
        box["error"] = exc
    finally:
        # A probe function may have used the ORM: close this thread's connections.
        from django.db import connections

        connections.close_all()
