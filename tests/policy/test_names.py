"""gateway/policy/names.py: the SAN matcher and name checks, case by case."""

from __future__ import annotations

import fnmatch
import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.policy import names

# (pattern, requested, allowed, fnmatch_allowed): what the old `fnmatch` matcher said too,
# so the table shows where the behaviour changed (and a case where both refuse is no proof).
DNS = [
    ("*.devices.example.com", "a.devices.example.com", True, True),
    ("*.devices.example.com", "A.Devices.EXAMPLE.com", True, True),
    ("*.devices.example.com", "a.b.c.devices.example.com", False, True),
    ("*.devices.example.com", "devices.example.com", False, False),
    ("*.devices.example.com", "a.devices.example.com.evil.net", False, False),
    ("*.devices.example.com", "adevices.example.com", False, False),
    ("*.devices.example.com", "victim.bank.com\x00.devices.example.com", False, True),
    ("*.devices.example.com", "a-.devices.example.com", False, True),
    ("*.devices.example.com", "-a.devices.example.com", False, True),
    ("*.devices.example.com", "a_b.devices.example.com", False, True),
    ("*.devices.example.com", "a..devices.example.com", False, True),
    ("*.devices.example.com", "a.devices.example.com.", False, False),
    ("*.devices.example.com", "x" * 64 + ".devices.example.com", False, True),
    ("*.devices.example.com", "x" * 63 + ".devices.example.com", True, True),
    ("**.example.com", ("a." * 120) + "xy.example.com", False, True),  # 254 octets
    ("**.example.com", ("a." * 120) + "x.example.com", True, True),  # 253 octets
    ("*.devices.example.com", "bücher.devices.example.com", False, True),
    ("*.devices.example.com", "xn--bcher-kva.devices.example.com", True, True),
    ("*.devices.example.com", "xn--ls8h.devices.example.com", False, True),  # IDNA 2003 only
    ("*.devices.example.com", "xn--a.devices.example.com", False, True),
    ("host.example.com", "host.example.com", True, True),
    ("host.example.com", "HOST.example.com", True, True),
    ("host.example.com", "a.host.example.com", False, False),
    ("**.example.com", "a.b.c.example.com", True, True),
    ("**.example.com", "a.example.com", True, True),
    ("**.example.com", "example.com", False, False),
    ("*.example.com", "10.1.2.3", False, False),
    ("**.2.3", "10.1.2.3", False, True),  # all-numeric last label: an IPv4 address
]


@pytest.mark.parametrize(("pattern", "name", "allowed", "old"), DNS)
def test_dns_names(pattern: str, name: str, allowed: bool, old: bool) -> None:
    assert fnmatch.fnmatchcase(name.lower(), pattern.lower()) is old
    try:
        labels = names.check_dns_name(name)
    except names.NameRefused:
        result = False
    else:
        result = names.dns_matches(labels, (names.parse_dns_pattern(pattern),))
    assert result is allowed


WILDCARDS = [
    # (pattern, requested wildcard, allowed when the profile allows wildcards)
    ("*.devices.example.com", "*.devices.example.com", True),
    ("**.example.com", "*.devices.example.com", True),
    ("a.devices.example.com", "*.devices.example.com", False),
    ("*.devices.example.com", "*.a.devices.example.com", False),
    ("*.example.com", "*.example.com", True),  # the same set of names
    ("**.example.com", "*.com", False),
    ("*.devices.example.com", "a.*.devices.example.com", False),
    ("*.devices.example.com", "*a.devices.example.com", False),
    ("**.example.com", "**.example.com", False),
]


@pytest.mark.parametrize(("pattern", "name", "allowed"), WILDCARDS)
def test_requested_wildcards(pattern: str, name: str, allowed: bool) -> None:
    with pytest.raises(names.NameRefused):
        names.check_dns_name(name)  # never without the profile's allow_wildcards
    try:
        labels = names.check_dns_name(name, allow_wildcard=True)
    except names.NameRefused:
        result = False
    else:
        result = names.dns_matches(labels, (names.parse_dns_pattern(pattern),))
    assert result is allowed


EMAIL = [
    ("*@example.com", "a@example.com", True),
    ("*@example.com", "a@EXAMPLE.com", True),
    ("*@example.com", "a@sub.example.com", False),
    ("*@*.example.com", "a@sub.example.com", True),
    ("*@**.example.com", "a@x.sub.example.com", True),
    ("*@example.com", "a@example.com\x00.evil.net", False),
    ("*@example.com", "a@evil.net@example.com", False),
    ("*@example.com", '"a b"@example.com', False),
    ("*@example.com", "a..b@example.com", False),
    ("*@example.com", "@example.com", False),
    ("*@example.com", "a@*.example.com", False),
    ("admin@example.com", "admin@example.com", True),
    ("admin@example.com", "Admin@example.com", False),  # RFC 5280 7.5: local part exact
    ("admin@example.com", "root@example.com", False),
]


@pytest.mark.parametrize(("pattern", "value", "allowed"), EMAIL)
def test_email(pattern: str, value: str, allowed: bool) -> None:
    try:
        email = names.check_email(value)
    except names.NameRefused:
        result = False
    else:
        result = names.parse_email_pattern(pattern).matches(email)
    assert result is allowed


URI = [
    ("https://*.example.com/*", "https://a.example.com/x", True, True),
    ("https://*.example.com/*", "HTTPS://A.example.com/x", True, False),
    ("https://*.example.com/*", "https://a.example.com", True, False),  # empty path is "/"
    ("https://*.example.com/*", "https://attacker.net/x.example.com/", False, True),
    ("https://*.example.com/*", "https://x.example.com@attacker.net/", False, False),
    ("https://*.example.com/*", "https://x.example.com@attacker.net/x.example.com/", False, True),
    ("https://*.example.com/*", "https://a.b.example.com/x", False, True),
    ("https://*.example.com/*", "http://a.example.com/x", False, False),
    ("https://*.example.com/*", "https://a.example.com:8443/x", False, False),
    ("https://*.example.com/*", "https://a.example.com\x00.evil.net/x", False, False),
    ("https://*.example.com/*", "https://a.example.com/\x00x", False, True),
    ("https://*.example.com/*", "https://a.example.com/a b", False, True),
    ("https://*.example.com/*", "https://a.example.com\\@evil.net/", False, False),
    ("https://*.example.com/*", "https://a%2eexample.com/x", False, False),
    ("https://*.example.com/*", "https://a.example.com/%zz", False, True),
    ("https://*.example.com/*", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", False, False),
    ("https://h.example.com:*/dev/*", "https://h.example.com:8443/dev/1", True, True),
    ("https://h.example.com:8443/dev/*", "https://h.example.com:8443/dev/1?x=1", True, True),
    ("https://h.example.com/dev/*", "https://h.example.com/dev/../admin", False, True),
    ("https://h.example.com/dev/*", "https://h.example.com/dev/%2e%2e/admin", False, True),
    ("https://h.example.com/dev/*", "https://h.example.com/device", False, False),
    ("https://h.example.com/dev", "https://h.example.com/dev", True, True),
    ("https://h.example.com/dev", "https://h.example.com/dev/x", False, False),
    ("https://10.1.2.3/*", "https://10.1.2.3/x", True, True),
    ("https://[2001:db8::1]/*", "https://[2001:DB8::1]/x", True, False),
    ("https://10.1.2.3/*", "https://10.1.2.3.evil.net/x", False, False),
    ("https://10.1.2.3/*", "https://10.1.2.300/x", False, False),
]


@pytest.mark.parametrize(("pattern", "value", "allowed", "old"), URI)
def test_uris(pattern: str, value: str, allowed: bool, old: bool) -> None:
    assert fnmatch.fnmatchcase(value, pattern) is old
    try:
        uri = names.check_uri(value)
    except names.NameRefused:
        result = False
    else:
        result = names.parse_uri_pattern(pattern).matches(uri)
    assert result is allowed


def test_uris_without_authority_are_well_formed_but_never_match() -> None:
    uri = names.check_uri("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66")
    assert uri.host is None
    assert not names.parse_uri_pattern("urn://*.example.com/*").matches(uri)


IP = [
    ("10.1.0.0/16", "10.1.2.3", True),
    ("10.1.0.0/16", "10.2.0.1", False),
    ("10.1.2.3/16", "10.1.200.1", True),  # host bits set: the network 10.1.0.0/16
    ("10.1.0.0/16", "::ffff:10.1.2.3", False),  # IPv4-mapped: a 16-octet iPAddress
    ("10.1.0.0/16", "::a01:203", False),  # IPv4-compatible, same 32 bits
    ("::ffff:10.1.0.0/112", "10.1.2.3", False),
    ("::ffff:10.1.0.0/112", "::ffff:10.1.2.3", True),
    ("::/0", "10.1.2.3", False),
    ("0.0.0.0/0", "2001:db8::1", False),
]


@pytest.mark.parametrize(("network", "address", "allowed"), IP)
def test_ip_by_network_and_family(network: str, address: str, allowed: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert names.ip_allowed(ip, (names.parse_network(network),)) is allowed


BAD_PATTERNS = [
    (names.parse_dns_pattern, "*foo.example.com"),
    (names.parse_dns_pattern, "a.*.example.com"),
    (names.parse_dns_pattern, "a..example.com"),
    (names.parse_dns_pattern, ""),
    (names.parse_dns_pattern, "*"),
    (names.parse_dns_pattern, "**"),
    (names.parse_dns_pattern, "example.com."),
    (names.parse_dns_pattern, "ex ample.com"),
    (names.parse_dns_pattern, "bücher.example.com"),
    (names.parse_dns_pattern, "xn--a.example.com"),
    (names.parse_dns_pattern, "*.*.example.com"),
    (names.parse_email_pattern, "example.com"),
    (names.parse_email_pattern, "dev*@example.com"),
    (names.parse_email_pattern, "*@*foo.example.com"),
    (names.parse_uri_pattern, "*.example.com"),
    (names.parse_uri_pattern, "https://*.example.com/*/x"),
    (names.parse_uri_pattern, "https://user@*.example.com/"),
    (names.parse_uri_pattern, "https://a.*.example.com/"),
    (names.parse_uri_pattern, "https://h.example.com:99999/"),
    (names.parse_uri_pattern, "urn:uuid:*"),
    (names.parse_network, "10.1.0.0/33"),
    (names.parse_network, "10.1.0"),
    (names.parse_network, "example.com"),
]


@pytest.mark.parametrize(("parse", "pattern"), BAD_PATTERNS)
def test_bad_patterns(parse: object, pattern: str) -> None:
    assert callable(parse)
    with pytest.raises(names.NameRefused):
        parse(pattern)


@pytest.mark.parametrize("char", ["\x00", "\n", "\x1b", "\x7f", "\x85", "\x9f"])
def test_control_characters_in_dn_and_directory_names(char: str) -> None:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dev{char}1")])
    with pytest.raises(names.NameRefused):
        names.check_subject_text(subject)
    with pytest.raises(names.NameRefused):
        names.check_value_text(x509.DirectoryName(subject))
    names.check_subject_text(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dév 1 ü")]))


def _name(*rdns: tuple[tuple[x509.ObjectIdentifier, str], ...]) -> x509.Name:
    return x509.Name(
        [x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in rdn]) for rdn in rdns]
    )


CN, ORG, OU = NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME
CA = _name(((ORG, "scep-gateway demo"),), ((CN, "ManagementCA"),))


@pytest.mark.parametrize(
    ("other", "same"),
    [
        (_name(((ORG, "SCEP-Gateway Demo"),), ((CN, "managementca"),)), True),
        (_name(((ORG, "  scep-gateway \t  demo "),), ((CN, "ManagementCA"),)), True),
        (_name(((ORG, "scep-gateway"),), ((CN, "ManagementCA"),)), False),
        (_name(((CN, "ManagementCA"),), ((ORG, "scep-gateway demo"),)), False),  # RDN order
        (_name(((ORG, "scep-gateway demo"), (CN, "ManagementCA"))), False),  # one RDN of two
    ],
)
def test_names_compare_as_rfc5280_does(other: x509.Name, same: bool) -> None:
    assert (names.name_key(other) == names.name_key(CA)) is same
    assert other != CA  # cryptography's equality is exact: the folding is ours


def test_an_rdn_is_a_set() -> None:
    a = _name(((CN, "a"), (OU, "b")))
    b = _name(((OU, "B"), (CN, "A")))
    assert names.name_key(a) == names.name_key(b)
