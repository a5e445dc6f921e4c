"""Probes: the registry, URL probes and the time bound on every probe."""

from __future__ import annotations

import http.server
import socket
import sys
import threading
import time

import pytest
import requests
import responses
from django.test import override_settings

from circuitbreaker_app import probes
from tests.helpers import empty_probe_registry, fake_dns

URL = "http://upstream.test/health"


@pytest.fixture(autouse=True)
def _upstream_resolves(monkeypatch):
    """upstream.test resolves to a documentation address (the probe checks it first)."""
    fake_dns(monkeypatch, {"upstream.test": ["192.0.2.10"]})


@pytest.fixture(autouse=True)
def clean_registry():
    with empty_probe_registry():
        yield


# -- registry -----------------------------------------------------------------------------


def test_register_returns_the_function_and_it_is_found_by_name():
    @probes.register("payments")
    def alive():
        return True

    assert alive() is True
    assert probes.registered("payments") is alive
    assert probes.has_probe("payments")
    assert not probes.has_probe("inventory")
    assert probes.has_probe("inventory", "http://x.test/")


def test_registering_again_replaces_and_unregister_forgets():
    probes.register("payments")(lambda: True)

    def second():
        return True

    probes.register("payments")(second)
    assert probes.registered("payments") is second
    probes.unregister("payments")
    assert probes.registered("payments") is None
    probes.unregister("payments")  # unknown names are fine


@pytest.mark.parametrize(
    "name, error", [("bad name", ValueError), ("", ValueError), (3, TypeError)]
)
def test_register_rejects_bad_names(name, error):
    with pytest.raises(error, match="circuit name"):
        probes.register(name)


def test_register_rejects_non_callables():
    with pytest.raises(TypeError, match=r"probes.register\('payments'\) needs a callable"):
        probes.register("payments")("not callable")


def test_autodiscover_imports_probes_modules_of_installed_apps(tmp_path, monkeypatch):
    package = tmp_path / "cbprobeapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "probes.py").write_text(
        "from circuitbreaker_app import probes\n\n"
        "@probes.register('discovered')\n"
        "def discovered():\n"
        "    return True\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from django.conf import settings

    try:
        with override_settings(INSTALLED_APPS=[*settings.INSTALLED_APPS, "cbprobeapp"]):
            assert "discovered" not in probes._registry
            probes.autodiscover(force=True)
            assert probes.registered("discovered") is not None
    finally:
        sys.modules.pop("cbprobeapp.probes", None)
        sys.modules.pop("cbprobeapp", None)


# -- functions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, ok", [(True, True), (1, True), ("yes", True), (False, False), (None, False), (0, False)]
)
def test_a_function_probe_is_healthy_when_it_returns_a_true_value(value, ok):
    probes.register("payments")(lambda: value)
    result = probes.run_probe("payments", "", 1.0)
    assert result.ok is ok


def test_a_function_that_raises_is_a_failed_probe():
    def broken():
        raise ConnectionError("gateway refused")

    probes.register("payments")(broken)
    result = probes.run_probe("payments", "", 1.0)
    assert result == probes.ProbeResult(False, "ConnectionError: gateway refused")


def test_a_function_that_hangs_fails_after_probe_timeout_and_blocks_no_worker():
    release = threading.Event()
    probes.register("payments")(lambda: release.wait(30))
    try:
        started = time.monotonic()
        result = probes.run_probe("payments", "", 0.2)
        elapsed = time.monotonic() - started
        assert result == probes.ProbeResult(False, "timed out after 0.2 s")
        assert 0.2 <= elapsed < 1.0
        # While it still hangs, the next probe of the same circuit fails at once.
        again = probes.run_probe("payments", "", 5.0)
        assert again.ok is False and "still running" in again.detail
        # Other circuits are not affected.
        probes.register("other")(lambda: True)
        assert probes.run_probe("other", "", 1.0).ok
    finally:
        release.set()
        probes._running["payments"].join(5)
    assert probes.run_probe("payments", "", 1.0).ok  # the hung probe ended: next one runs


def test_a_registered_function_wins_over_the_probe_url():
    probes.register("payments")(lambda: True)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.GET, URL, status=500)
        assert probes.run_probe("payments", URL, 1.0).ok
        assert len(rsps.calls) == 0


def test_no_probe_at_all_is_a_failed_probe():
    result = probes.run_probe("payments", "", 1.0)
    assert result.ok is False and "no probe" in result.detail


# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, ok", [(200, True), (204, True), (301, True), (302, True), (404, False), (500, False)]
)
def test_a_url_probe_is_healthy_on_2xx_and_3xx(status, ok):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL, status=status, headers={"Location": "http://elsewhere.test/"})
        result = probes.run_probe("payments", URL, 1.0)
        assert (result.ok, result.detail) == (ok, f"HTTP {status}")
        assert len(rsps.calls) == 1  # redirects are never followed
        assert rsps.calls[0].request.headers["User-Agent"] == probes.USER_AGENT


@pytest.mark.parametrize(
    "error", [requests.ConnectionError("refused"), requests.exceptions.ReadTimeout("slow")]
)
def test_an_unreachable_url_is_a_failed_probe(error):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL, body=error)
        result = probes.run_probe("payments", URL, 1.0)
    assert result.ok is False
    assert type(error).__name__ in result.detail


@pytest.mark.parametrize(
    "url",
    ["ftp://upstream.test/health", "file:///etc/passwd", "javascript:alert(1)", "http:///nohost"],
)
def test_only_absolute_http_urls_are_probed(url):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        result = probes.run_probe("payments", url, 1.0)
        assert len(rsps.calls) == 0
    assert result == probes.ProbeResult(
        False, "ProbeError: probe_url must be an absolute http:// or https:// URL"
    )


def test_a_malformed_url_is_a_failed_probe():
    result = probes.run_probe("payments", "http://[::1/health", 1.0)
    assert result.ok is False and "malformed probe_url" in result.detail


@pytest.mark.parametrize(
    "url",
    [
        "http://probe:s3cret@upstream.test/health?token=t0ken",
        "http://upstream.test/health?SuperSecretApiKey123",
        "http://upstream.test/health?a=1&SuperSecretApiKey123#s3cret",
    ],
)
def test_credentials_never_reach_the_detail(url):
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, url, body=requests.ConnectionError(f"cannot reach {url}"))
        result = probes.run_probe("payments", url, 1.0)
    assert result.ok is False
    for secret in ("s3cret", "probe:", "t0ken", "SuperSecretApiKey123"):
        assert secret not in result.detail
    assert "upstream.test/health" in result.detail


# -- real sockets ------------------------------------------------------------------------


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        time.sleep(2)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_slow_loopback_upstream_is_bounded_by_probe_timeout():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/health"
        started = time.monotonic()
        result = probes.run_probe("slow", url, 0.3)
        assert result.ok is False
        assert time.monotonic() - started < 1.5
    finally:
        server.shutdown()
        server.server_close()


def test_a_refused_loopback_connection_is_a_failed_probe():
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = probes.run_probe("refused", f"http://127.0.0.1:{port}/health", 2.0)
    assert result.ok is False and "ConnectionError" in result.detail


def test_a_long_failure_detail_is_cut_between_words():
    words = " ".join(f"word{i}" for i in range(100))  # 690 characters
    with responses.RequestsMock() as rsps:
        rsps.add(responses.GET, URL, body=requests.ConnectionError(words))
        result = probes.run_probe("payments", URL, 1.0)
    assert result.ok is False
    assert len(result.detail) <= probes.DETAIL_MAX
    assert result.detail.endswith("…")
    last = result.detail[:-1].split()[-1]
    assert last.startswith("word") and f"{last} " in words  # a whole word, not "wor"
