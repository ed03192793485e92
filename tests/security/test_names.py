"""Issue 9 item 6: subject and SAN rules, through real enrollments (docs/security.md "names").

Each refusal here was an issued certificate with the fnmatch allow-list and no subject
checks: the SAN cases match the old globs, and the old pipeline had no reserved names.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway import assembly
from gateway.ca import bootstrap
from gateway.ca.local import LocalCA, issue_ra_pair
from gateway.config import loader
from gateway.config.model import CaCreate
from gateway.errors import ConfigError, FailInfo
from gateway.policy import names
from gateway.registry import CaRuntime
from gateway.scep import client
from gateway.scep.messages import PkiStatus
from tests.conftest import Gateway, running_gateway
from tests.support import Device, cn, copy_config, register

SECRET = "Names-Ra-Secret-1"
PROFILE = """
subject_alt_names:
  mode: allow_list
  allow:
    dns: ["*.devices.example.com"]
    email: ["*@devices.example.com"]
    uri: ["https://*.example.com/*"]
    ip: ["10.1.0.0/16"]
"""
FILES = {
    "profiles/certificate/names.yaml": PROFILE,
    "profiles/certificate/wild.yaml": PROFILE + "  allow_wildcards: true\n",
    "profiles/certificate/copy.yaml": "subject_alt_names: {mode: copy}\n",
    "aliases/names.yaml": "ca: ManagementCA\ncertificate_profile: names\n",
    "aliases/wild.yaml": "ca: ManagementCA\ncertificate_profile: wild\n",
    "aliases/copy.yaml": "ca: ManagementCA\ncertificate_profile: copy\n",
    "aliases/ra-names.yaml": "mode: ra\nca: ManagementCA\ncertificate_profile: names\n"
    "ra:\n  secret: {env: SCEP_TEST_NAMES_SECRET}\n",
    "aliases/ra-approve.yaml": "mode: ra\nca: ManagementCA\napproval: {required: true}\n"
    "ra:\n  secret: {env: SCEP_TEST_NAMES_SECRET}\n",
}


@pytest.fixture
async def gw(
    tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("SCEP_TEST_NAMES_SECRET", SECRET)
    async with running_gateway(tmp_path, shared_data_dir, FILES) as running:
        yield running


async def _enroll(
    gw: Gateway,
    alias: str,
    sans: tuple[x509.GeneralName, ...] = (),
    *,
    subject: x509.Name | None = None,
    registered_dn: str | None = None,
) -> client.CertRep:
    """CA mode: a registered end entity with code `code`; RA mode: the RA secret."""
    device = Device("dev-1")
    ra_mode = alias.startswith("ra-")
    if not ra_mode:
        await register(gw.services.store, "dev-1", "code", dn=registered_dn)
    csr = client.csr(
        device.key,
        subject or cn("dev-1"),
        challenge=SECRET if ra_mode else "code",
        sans=sans,
    )
    return device.read(await gw.pki(device.message(csr, gw.recipients(alias)), alias))


async def _refused(gw: Gateway, reply: client.CertRep, text: str) -> None:
    assert reply.status is PkiStatus.FAILURE, reply.status
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text == text
    assert await gw.services.store.count_certificates() == 0


DNS = x509.DNSName
URI = x509.UniformResourceIdentifier
REFUSED_SANS = [
    # The issue's examples; each one matched the old fnmatch globs.
    ("names", DNS("*.devices.example.com")),
    ("names", DNS("a.b.c.devices.example.com")),
    ("names", DNS("victim.bank.com\x00.devices.example.com")),
    ("names", URI("https://attacker.net/x.example.com/")),
    ("names", URI("https://x.example.com@attacker.net/x.example.com/")),
    ("names", DNS("bad_label.devices.example.com")),
    ("names", x509.RFC822Name("a\x00b@devices.example.com")),
    ("names", x509.RFC822Name('"a@bank.com"@devices.example.com')),
    ("wild", DNS("*.*.devices.example.com")),
    ("wild", DNS("*.b.devices.example.com")),
    # copy mode issued anything the CSR carried.
    ("copy", DNS("victim.bank.com\x00.devices.example.com")),
    ("copy", DNS("*.devices.example.com")),
    ("copy", URI("https://a.example.com/\x1b[2J")),
    ("copy", x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a\x00b")]))),
]


@pytest.mark.parametrize(("alias", "san"), REFUSED_SANS, ids=repr)
async def test_san_refused(gw: Gateway, alias: str, san: x509.GeneralName) -> None:
    reply = await _enroll(gw, alias, (san,))
    await _refused(gw, reply, "a requested subject alternative name is not allowed")


@pytest.mark.parametrize(
    ("alias", "sans"),
    [
        (
            "names",
            (
                DNS("a.devices.example.com"),
                DNS("B.Devices.Example.COM"),
                x509.RFC822Name("a@devices.example.com"),
                URI("https://a.example.com/x"),
                x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
            ),
        ),
        ("wild", (DNS("*.devices.example.com"),)),
        (
            "copy",
            (DNS("anything.example.org"), URI("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66")),
        ),
    ],
    ids=["allow-list", "wildcard-allowed", "copy"],
)
async def test_sans_issued(gw: Gateway, alias: str, sans: tuple[x509.GeneralName, ...]) -> None:
    """The same gateway issues well-formed names the rules allow, exactly as requested."""
    reply = await _enroll(gw, alias, sans)
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    issued = reply.certificates[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert list(issued.value) == list(sans)


async def test_ipv4_mapped_address_is_not_in_a_v4_network(gw: Gateway) -> None:
    # Regression guard (the old matcher refused this too): ::ffff:10.1.2.3 is 16 octets.
    mapped = x509.IPAddress(ipaddress.ip_address("::ffff:10.1.2.3"))
    reply = await _enroll(gw, "names", (mapped,))
    await _refused(gw, reply, "a requested subject alternative name is not allowed")


@pytest.mark.parametrize("char", ["\x00", "\n", "\x7f", "\x85"], ids=repr)
async def test_control_character_in_the_requested_dn(gw: Gateway, char: str) -> None:
    """RA mode takes the device's DN; a NUL or newline in any attribute is refused."""
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Example{char}Corp"),
            x509.NameAttribute(NameOID.COMMON_NAME, "dev-1"),
        ]
    )
    reply = await _enroll(gw, "ra-names", subject=subject)
    await _refused(gw, reply, "the subject is malformed")


def _served(gw: Gateway) -> list[x509.Name]:
    ca = gw.services.snapshot().cas["ManagementCA"]
    assert ca.ra_signer is not None
    assert ca.ra_encrypter is not None
    return [ca.subject, ca.ra_signer.certificate.subject, ca.ra_encrypter.certificate.subject]


def _case_variant(name: x509.Name) -> x509.Name:
    """The same RFC 5280 name spelled otherwise: other case, extra spaces."""
    return x509.Name(
        [
            x509.NameAttribute(a.oid, f"  {str(a.value).swapcase()}  ".replace(" ", "  "))
            for a in name
        ]
    )


@pytest.mark.parametrize("which", ["ca", "ra-signer", "ra-encrypter", "ca-case-variant"])
async def test_ra_mode_refuses_a_served_subject(gw: Gateway, which: str) -> None:
    ca, signer, encrypter = _served(gw)
    subject = {
        "ca": ca,
        "ra-signer": signer,
        "ra-encrypter": encrypter,
        "ca-case-variant": _case_variant(ca),
    }[which]
    assert which != "ca-case-variant" or subject != ca  # cryptography's == would miss it
    reply = await _enroll(gw, "ra-names", subject=subject)
    await _refused(gw, reply, "the subject is the name of a CA or RA certificate")


async def test_refused_before_waiting_for_approval(gw: Gateway) -> None:
    """Not PENDING: an operator approving it later would issue the CA's name."""
    reply = await _enroll(gw, "ra-approve", subject=_served(gw)[0])
    await _refused(gw, reply, "the subject is the name of a CA or RA certificate")
    assert await gw.services.store.list_pending() == []


async def test_ca_mode_refuses_a_served_subject(gw: Gateway) -> None:
    ca = _served(gw)[0]
    reply = await _enroll(gw, "scep", registered_dn=ca.rfc4514_string())
    await _refused(gw, reply, "the subject is the name of a CA or RA certificate")


async def test_ra_mode_issues_an_ordinary_subject(gw: Gateway) -> None:
    """The refusals above are about the name: the same request with its own name works."""
    reply = await _enroll(gw, "ra-names", subject=cn("ManagementCA device"))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text


def test_bad_patterns_are_config_errors(tmp_path: Path) -> None:
    """Each used to load, and the bad network crashed the first request that needed it."""
    directory = copy_config(tmp_path)
    (directory / "profiles/certificate/bad.yaml").write_text(
        "subject_alt_names:\n  mode: allow_list\n  allow:\n"
        '    dns: ["*foo.example.com", "a.*.example.com", "a..example.com", "ok.example.com"]\n'
        '    email: ["*@*x.example.com"]\n'
        '    uri: ["https://*.example.com/*/x"]\n'
        '    ip: ["10.1.0.0/33"]\n'
    )
    with pytest.raises(ConfigError) as raised:
        loader.load(directory)
    where = {(i.file, i.path) for i in raised.value.issues}
    assert where == {
        ("profiles/certificate/bad.yaml", "$.subject_alt_names.allow.dns[0]"),
        ("profiles/certificate/bad.yaml", "$.subject_alt_names.allow.dns[1]"),
        ("profiles/certificate/bad.yaml", "$.subject_alt_names.allow.dns[2]"),
        ("profiles/certificate/bad.yaml", "$.subject_alt_names.allow.email[0]"),
        ("profiles/certificate/bad.yaml", "$.subject_alt_names.allow.uri[0]"),
        ("profiles/certificate/bad.yaml", "$.subject_alt_names.allow.ip[0]"),
    }
    assert all(i.message.startswith("not a valid pattern: ") for i in raised.value.issues)


def test_reserved_subjects_cover_every_served_certificate() -> None:
    """Another CA of the configuration, a rollover generation, the issuers in a CA file and
    both RA certificates: each is a name no leaf may take."""
    now = datetime.now(UTC)

    def ca(subject: str) -> LocalCA:
        spec = CaCreate(subject=subject, key_type="ec", key_size=256)
        return LocalCA(name="x", key_pair=bootstrap.new_ca(spec, digest="sha256", now=now))

    root, current, rolled, other = (
        ca(s) for s in ("CN=Root", "CN=Issuing,O=T", "CN=Issuing 2,O=T", "CN=Other")
    )
    signer, encrypter = issue_ra_pair(rolled, now=now, serials=(1, 2), validity=timedelta(days=1))
    runtime = CaRuntime(
        name="Issuing",
        issuer=current,
        chain=(root.certificate,),
        next=CaRuntime(
            name="Issuing", issuer=rolled, chain=(), ra_signer=signer, ra_encrypter=encrypter
        ),
    )
    reserved = assembly.reserved_subjects(
        {"Issuing": runtime, "Other": CaRuntime(name="Other", issuer=other, chain=())}
    )
    expected = [
        root.certificate.subject,
        current.certificate.subject,
        rolled.certificate.subject,
        other.certificate.subject,
        signer.certificate.subject,
        encrypter.certificate.subject,
    ]
    assert reserved == {names.name_key(n) for n in expected}
    assert len(reserved) == 6
