"""Per-host circuit names: one host, one circuit, whichever client names it; never two hosts."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from circuitbreaker_app.core.config import NAME_RE
from circuitbreaker_app.hosts import circuit_for_host, circuit_for_url, idna_host


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://Pay.Example/charge?card=4111", "http:pay.example"),
        ("https://user:secret@pay.example:443/x", "http:pay.example"),
        ("http://pay.example:80/", "http:pay.example"),
        ("http://127.0.0.1:8000/upstream/", "http:127.0.0.1:8000"),
        ("https://pay.example:8443/", "http:pay.example:8443"),
        ("http://[::1]:9000/", "http:::1_9000"),
        ("http://[0:0:0:0:0:0:0:1]/", "http:::1"),
        ("http://[::1:9000]/", "http:::1:9000"),
        ("http://xn--bcher-kva.example./", "http:xn--bcher-kva.example"),
        ("https://münchen.de/", "http:xn--mnchen-3ya.de"),
        ("https://MÜNCHEN.de:8443/", "http:xn--mnchen-3ya.de:8443"),
        ("https://XN--MNCHEN-3YA.DE/", "http:xn--mnchen-3ya.de"),
    ],
)
def test_per_host_names(url, name):
    assert circuit_for_url(url) == name


def test_unicode_and_punycode_spellings_of_one_host_are_one_circuit():
    spellings = ["münchen.de", "MÜNCHEN.DE", "xn--mnchen-3ya.de", "Xn--Mnchen-3ya.De."]
    assert {circuit_for_host(host) for host in spellings} == {"http:xn--mnchen-3ya.de"}
    assert idna_host("münchen.de") == "xn--mnchen-3ya.de"


def test_hosts_with_characters_a_name_cannot_hold_never_collide():
    """Issue 14 item 7: ``!`` and ``~`` used to become ``-`` and share a-b.example's circuit."""
    names = [circuit_for_host(h) for h in ("a!b.example", "a~b.example", "a-b.example")]
    assert len(set(names)) == 3
    assert names[2] == "http:a-b.example"  # a representable host keeps its plain name
    for name in names[:2]:
        assert NAME_RE.fullmatch(name)
        assert name.startswith("http:a-b.example-H")  # readable, then the hash
    assert circuit_for_host("a!b.example") == names[0]  # stable


def test_invalid_idna_is_named_by_a_hash_of_the_host():
    snowman = circuit_for_host("☃.example")  # not valid IDNA 2008
    assert idna_host("☃.example") is None
    assert NAME_RE.fullmatch(snowman) and snowman.startswith("http:-.example-H")
    assert snowman != circuit_for_host("★.example")
    assert snowman == circuit_for_host("☃.EXAMPLE")  # case still does not matter


def test_long_hosts_stay_valid_and_distinct():
    a = circuit_for_url("https://" + "a" * 120 + ".example/")
    b = circuit_for_url("https://" + "a" * 119 + "b.example/")
    assert len(a) == len(b) == 100 and a != b
    assert circuit_for_host("a" * 95 + ".ex") != circuit_for_host("a" * 95 + ".ex", 8080)


def test_ports_count_only_when_not_the_schemes_default():
    assert circuit_for_host("pay.example", 443, "https") == "http:pay.example"
    assert circuit_for_host("pay.example", 443, "http") == "http:pay.example:443"
    assert circuit_for_host("pay.example", None, "https") == "http:pay.example"


def test_a_url_without_a_host_has_no_circuit():
    with pytest.raises(ValueError, match="without a host"):
        circuit_for_url("file:///etc/passwd")
    with pytest.raises(ValueError, match="without a host"):
        circuit_for_host(".")


hosts = st.text(alphabet=st.sampled_from("abcAB-_.!~:%é☃ü019"), min_size=1, max_size=120).filter(
    lambda host: host.rstrip(".")
)


def canonical(host: str) -> str:
    """What identifies a host: its IDNA form, or (invalid IDNA) its case-folded NFC form."""
    return idna_host(host) or unicodedata.normalize("NFC", host.rstrip(".")).casefold()


@given(hosts, hosts, st.one_of(st.none(), st.integers(1, 65535)))
def test_names_are_valid_and_two_hosts_never_share_one(first, second, port):
    a, b = circuit_for_host(first, port), circuit_for_host(second, port)
    assert NAME_RE.fullmatch(a) and NAME_RE.fullmatch(b)
    assert (a == b) == (canonical(first) == canonical(second)), (first, second, a, b)


@given(hosts, hosts, st.integers(1, 65535))
def test_a_host_with_a_port_never_shares_a_name_with_a_host_without(host, other, port):
    assert circuit_for_host(host, port) != circuit_for_host(other)
