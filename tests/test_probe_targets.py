"""Probe URLs never reach link-local or cloud-metadata targets (DESIGN §4b).

Checked when a circuit is saved (model validation, the admin form) and again at probe
time on every address the host resolves to; the request then goes to the checked
address, so DNS rebinding between check and connect reaches nothing else.
"""

from __future__ import annotations

import pytest
import responses
from django.core.exceptions import ValidationError

from circuitbreaker_app import probe_targets, probes
from circuitbreaker_app.models import Circuit
from tests import loopback
from tests.helpers import change_url, fake_dns, form_data, staff_user

#: The targets of the security review, and their disguises.
METADATA_URLS = [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.Google.Internal./computeMetadata/v1/",
    "https://metadata.goog/",
    "http://100.100.100.200/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://2852039166/",
    "http://0251.0376.0251.0376/",
    "http://169.254.43518/",
]
ALLOWED_URLS = [
    "https://status.example.com/health",
    "http://10.0.0.5:8080/health",
    "http://127.0.0.1:8000/health",
    "http://[2001:db8::1]/health",
    "https://münchen.example/health",
]


@pytest.mark.parametrize("url", METADATA_URLS)
def test_metadata_and_link_local_targets_are_refused(url):
    with pytest.raises(probe_targets.UnsafeProbeURL, match="metadata"):
        probe_targets.check_url(url)


@pytest.mark.parametrize("url", METADATA_URLS)
def test_the_model_refuses_them_with_a_message_on_probe_url(url):
    with pytest.raises(ValidationError) as caught:
        Circuit(name="payments", probe_url=url).full_clean(validate_unique=False)
    assert "probe_url" in caught.value.message_dict


@pytest.mark.parametrize("url", ALLOWED_URLS)
def test_ordinary_targets_are_allowed(url):
    probe_targets.check_url(url)


@pytest.mark.parametrize("url", ["ftp://example.com/", "file:///etc/passwd", "gopher://x/", "//x/"])
def test_only_http_and_https(url):
    with pytest.raises(probe_targets.UnsafeProbeURL, match="http:// or https://"):
        probe_targets.check_url(url)


@pytest.mark.django_db
def test_the_admin_form_shows_the_reason(client):
    client.force_login(staff_user("op", "view_circuit", "change_circuit", "force_circuit"))
    circuit = Circuit.objects.create(name="payments")
    url = "http://[::ffff:169.254.169.254]/latest/meta-data/"
    response = client.post(change_url(circuit), form_data(circuit, probe_url=url))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "metadata address (::ffff:169.254.169.254)." in errors["probe_url"][0]
    assert Circuit.objects.get(name="payments").probe_url == ""


# -- PROBE_HOSTS -------------------------------------------------------------------------------


def test_probe_hosts_is_the_only_allowed_set(settings):
    settings.CIRCUITBREAKER = {"PROBE_HOSTS": ["status.example.com", "*.svc.example"]}
    probe_targets.check_url("https://status.example.com/health")
    probe_targets.check_url("https://STATUS.example.com./health")
    probe_targets.check_url("http://payments.svc.example:8080/health")
    for url in ("https://evil.example/", "http://10.0.0.5/", "https://svc.example.evil/"):
        with pytest.raises(probe_targets.UnsafeProbeURL, match="PROBE_HOSTS"):
            probe_targets.check_url(url)


def test_probe_hosts_never_allows_a_metadata_target(settings):
    settings.CIRCUITBREAKER = {"PROBE_HOSTS": ["*"]}
    with pytest.raises(probe_targets.UnsafeProbeURL, match="metadata"):
        probe_targets.check_url("http://169.254.169.254/")


def test_probe_hosts_is_enforced_at_probe_time(settings, monkeypatch):
    """A row saved before PROBE_HOSTS was set (or written around validation)."""
    settings.CIRCUITBREAKER = {"PROBE_HOSTS": ["status.example.com"]}
    fake_dns(monkeypatch, {"evil.example": ["192.0.2.66"]})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add(responses.GET, "http://evil.example/", status=200)
        result = probes.run_probe("payments", "http://evil.example/", 1.0)
        assert len(rsps.calls) == 0
    assert result.ok is False and "PROBE_HOSTS" in result.detail


# -- at probe time -------------------------------------------------------------------------------


class _HostHandler(loopback._Handler):
    def do_GET(self) -> None:  # noqa: N802
        self.server.hosts.append(self.headers.get("Host"))
        super().do_GET()


class HostServer(loopback.LoopbackServer):
    """The counting loopback server, also keeping each request's Host header."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.RequestHandlerClass = _HostHandler
        self.hosts: list[str] = []


@pytest.mark.parametrize(
    "answer",
    [["169.254.169.254"], ["fd00:ec2::254"], ["::ffff:169.254.169.254"], ["127.0.0.1", "fe80::1"]],
)
def test_a_host_that_resolves_to_a_refused_address_is_never_requested(monkeypatch, answer):
    with loopback.serving(HostServer) as server:
        port = server.server_address[1]
        fake_dns(monkeypatch, {"status.example.com": answer})
        result = probes.run_probe("payments", f"http://status.example.com:{port}/health", 2.0)
        assert server.hits == 0
    assert result.ok is False
    assert "resolves to a refused address" in result.detail


def test_dns_rebinding_cannot_slip_in_between_check_and_connect(monkeypatch):
    """The first answer is checked and used; a second lookup would get the metadata
    address. The request reaches the checked address with the URL's Host header, and the
    host is looked up exactly once."""
    answers = iter([["127.0.0.1"]])

    def rebinding():
        return next(answers, ["169.254.169.254"])

    with loopback.serving(HostServer) as server:
        port = server.server_address[1]
        asked = fake_dns(monkeypatch, {"rebind.example": rebinding})
        result = probes.run_probe("payments", f"http://rebind.example:{port}/health", 2.0)
        assert result == probes.ProbeResult(True, "HTTP 200")
        assert server.hits == 1
        assert server.hosts == [f"rebind.example:{port}"]
    assert asked == ["rebind.example"]


def test_a_host_that_does_not_resolve_is_a_failed_probe(monkeypatch):
    fake_dns(monkeypatch, {})
    result = probes.run_probe("payments", "http://nowhere.example/health", 1.0)
    assert result.ok is False and "gaierror" in result.detail


def test_a_stored_metadata_url_is_refused_at_probe_time():
    """Rows written around validation (queryset.update, raw SQL) are checked again."""
    result = probes.run_probe("payments", "http://169.254.169.254/latest/meta-data/", 1.0)
    assert result.ok is False and "metadata" in result.detail


@pytest.mark.django_db
def test_the_probe_task_refuses_a_metadata_url_written_around_validation(monkeypatch):
    from circuitbreaker_app.tasks import probe_circuit

    Circuit.objects.create(name="payments", trial_mode="probe")
    Circuit.objects.filter(name="payments").update(probe_url="http://[fd00:ec2::254]/")
    calls = []
    monkeypatch.setattr(probe_targets, "getaddrinfo", lambda *a, **k: calls.append(a) or [])
    probe_circuit.run("payments")
    assert calls == []  # refused before any lookup


def test_the_url_check_reads_probe_hosts_from_settings_each_time(settings):
    settings.CIRCUITBREAKER = {}
    probe_targets.check_url("https://anything.example/")
    settings.CIRCUITBREAKER = {"PROBE_HOSTS": []}
    with pytest.raises(probe_targets.UnsafeProbeURL):
        probe_targets.check_url("https://anything.example/")
