"""Profiles enforced by policies: refusals are FAILURE badRequest, reasons in the log."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.errors import FailInfo
from gateway.scep import client
from gateway.scep.messages import PkiStatus
from tests.conftest import Gateway, running_gateway
from tests.support import Device, cn, register

pytestmark = pytest.mark.asyncio

PROFILES = {
    "profiles/certificate/strict.yaml": """
validity_days: 30
key_usage: [digital_signature]
extended_key_usage: [server_auth, 1.3.6.1.5.5.7.3.17]
key_algorithms:
  rsa: {min_bits: 3072, max_bits: 4096}
  ec: {curves: [secp256r1]}
subject_alt_names:
  mode: allow_list
  allow: {dns: ["*.dev.example.com"], ip: ["10.1.0.0/16"]}
crl_distribution_points: [http://pki.example.com/strict.crl]
authority_information_access: {ca_issuers: [http://pki.example.com/ca.cer], ocsp: []}
""",
    "profiles/end-entity/strict.yaml": """
subject:
  required: [CN, O]
  allowed: [CN, O, OU]
  defaults: {O: Example Corp}
""",
    "aliases/strict.yaml": """
ca: ManagementCA
certificate_profile: strict
end_entity_profile: strict
include_ca_certificate: false
policies:
  authorize:
    - {type: authorize.subject_pattern, field: CN, pattern: "dev-[0-9]+"}
""",
}


@pytest.fixture
async def strict(tmp_path: Path, shared_data_dir: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path, shared_data_dir, PROFILES) as running:
        yield running


def _rsa(bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


async def _send(
    gw: Gateway,
    name: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    dn: str | None = None,
    sans: tuple[x509.GeneralName, ...] = (),
) -> client.CertRep:
    await register(gw.services.store, name, "code", dn=dn)
    device = Device(name, key=_rsa(2048))  # the signer key; the CSR carries `key`
    csr = key_csr(key, cn(name), "code", sans)
    return device.read(await gw.pki(device.message(csr, gw.recipients("strict")), "strict"))


def key_csr(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    challenge: str,
    sans: tuple[x509.GeneralName, ...],
) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization

    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    builder = builder.add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode())
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def test_profile_shapes_the_certificate(strict: Gateway) -> None:
    sans = (x509.DNSName("a.dev.example.com"), x509.IPAddress(ipaddress.ip_address("10.1.2.3")))
    reply = await _send(strict, "dev-1", _rsa(3072), sans=sans)
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    (cert,) = reply.certificates  # include_ca_certificate: false
    assert cert.subject.rfc4514_string() == "CN=dev-1,O=Example Corp"  # default O added
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_encipherment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert [o.dotted_string for o in eku] == ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.17"]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == list(sans)
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name == [x509.UniformResourceIdentifier("http://pki.example.com/strict.crl")]
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert aia[0].access_location.value == "http://pki.example.com/ca.cer"


@pytest.mark.parametrize(
    ("case", "text", "log"),
    [
        ("small-key", "RSA key size 2048 is not allowed", "RSA 2048 outside 3072..4096"),
        ("ec-curve", "EC curve secp384r1 is not allowed", "curve secp384r1 not in"),
        ("san", "a requested subject alternative name is not allowed", "not in the allow-list"),
        ("dn-field", "the subject field C is not allowed", "C not in"),
        ("pattern", "the requested CN is not allowed here", "does not match"),
    ],
)
async def test_profile_refusals(
    strict: Gateway, caplog: pytest.LogCaptureFixture, case: str, text: str, log: str
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.enrollment")
    name = "dev-7" if case != "pattern" else "laptop-7"
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = _rsa(3072)
    dn: str | None = None
    sans: tuple[x509.GeneralName, ...] = ()
    if case == "small-key":
        key = _rsa(2048)
    elif case == "ec-curve":
        key = ec.generate_private_key(ec.SECP384R1())
    elif case == "san":
        sans = (x509.DNSName("www.evil.example.org"),)
    elif case == "dn-field":
        dn = f"CN={name},C=DE"
    reply = await _send(strict, name, key, dn=dn, sans=sans)
    assert reply.status is PkiStatus.FAILURE
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text == text
    assert any(log in record.getMessage() for record in caplog.records), caplog.text
    assert await strict.services.store.count_certificates() == 0


async def test_required_field_missing(tmp_path: Path, shared_data_dir: Path) -> None:
    files = dict(PROFILES)
    files["profiles/end-entity/strict.yaml"] = "subject:\n  required: [CN, OU]\n"
    async with running_gateway(tmp_path, shared_data_dir, files) as gw:
        reply = await _send(gw, "dev-9", _rsa(3072))
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text == "the subject lacks the required field OU"


async def test_sans_dropped_by_default(gateway: Gateway) -> None:
    await register(gateway.services.store, "drop", "code")
    device = Device("drop")
    csr = key_csr(device.key, cn("drop"), "code", (x509.DNSName("x.example.com"),))
    reply = device.read(await gateway.pki(device.message(csr, gateway.recipients())))
    assert reply.status is PkiStatus.SUCCESS
    with pytest.raises(x509.ExtensionNotFound):
        reply.certificates[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
