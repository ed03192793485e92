"""Client certificate renewal (draft-nourse-scep-23 App. D, RFC 8894 RenewalReq) over HTTP:
who may renew, when, with which key, and the failInfo of each refusal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gateway.errors import FailInfo
from gateway.policy.authenticate import AUTH_FAILED
from gateway.scep import client
from gateway.scep.messages import MessageType, PkiStatus
from tests.conftest import Gateway, body_of, running_gateway
from tests.support import Clock, Device, cn, fresh_key

pytestmark = pytest.mark.asyncio

SECRET = "Renew-Secret-1"
RA = "mode: ra\nca: ManagementCA\nra: {secret: {env: SCEP_TEST_RENEW_SECRET}}\n"
ALIASES = {
    "aliases/renew.yaml": RA + "renewal: {enabled: true}\n",  # EJBCA: after half the validity
    "aliases/renew-same-key.yaml": RA + "renewal: {enabled: true, allow_same_key: true}\n",
    "aliases/no-renew.yaml": RA,
}
HALF_A_YEAR = timedelta(days=183)  # certificates live 365 days (validity_days default)


@pytest.fixture
async def gw(
    tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Gateway, Clock]]:
    monkeypatch.setenv("SCEP_TEST_RENEW_SECRET", SECRET)
    clock = Clock()
    async with running_gateway(tmp_path, shared_data_dir, ALIASES, clock=clock) as running:
        yield running, clock


async def _enroll(gw: Gateway, alias: str, name: str) -> tuple[Device, client.Identity]:
    device = Device(name, key=fresh_key())
    reply = device.read(await gw.pki(device.pkcsreq(SECRET, gw.recipients(alias)), alias))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    return device, client.Identity(reply.certificates[0], device.key)


async def _renew(
    gw: Gateway,
    alias: str,
    name: str,
    signer: client.Identity,
    *,
    same_key: bool = False,
    message_type: MessageType = MessageType.RENEWAL_REQ,
    subject: x509.Name | None = None,
    key: rsa.RSAPrivateKey | None = None,
) -> client.CertRep:
    """A renewal as devices send it: no challenge, signed with the current certificate;
    the CSR asks for CN=``name`` unless ``subject`` says otherwise, for ``key`` (default: a
    fresh one, or the old one with ``same_key``)."""
    new_key = key or (signer.private_key if same_key else fresh_key())
    renewer = Device(name, key=new_key, signer=signer)
    csr = renewer.csr(None, subject)
    body = renewer.message(csr, gw.recipients(alias), message_type=message_type)
    return renewer.read(await gw.pki(body, alias))


async def test_renewal_is_advertised_exactly_when_enabled(gw: tuple[Gateway, Clock]) -> None:
    gateway, _ = gw
    for alias, advertised in (("renew", True), ("no-renew", False)):
        response = await gateway.client.get(f"/scep/{alias}/pkiclient.exe?operation=GetCACaps")
        assert (b"Renewal\n" in await body_of(response)) is advertised


@pytest.mark.parametrize("message_type", [MessageType.RENEWAL_REQ, MessageType.PKCS_REQ])
async def test_renewal_after_half_the_validity_with_a_new_key(
    gw: tuple[Gateway, Clock], message_type: MessageType
) -> None:
    gateway, clock = gw
    _, old = await _enroll(gateway, "renew", "renew-ok")
    clock.now += HALF_A_YEAR
    new_key = fresh_key()
    reply = await _renew(gateway, "renew", "renew-ok", old, message_type=message_type, key=new_key)
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    new = reply.certificates[0]
    assert new.subject == old.certificate.subject
    assert new.public_key() == new_key.public_key()
    assert new.serial_number != old.certificate.serial_number
    listed = await gateway.services.store.list_certificates(username="renew-ok")
    assert len(listed) == 2


async def test_too_early_is_badrequest(gw: tuple[Gateway, Clock]) -> None:
    gateway, clock = gw
    _, old = await _enroll(gateway, "renew", "renew-early")
    clock.now += timedelta(days=30)
    reply = await _renew(gateway, "renew", "renew-early", old)
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text is not None
    assert reply.fail_info_text.startswith("renewal is allowed from ")


async def test_old_key_only_where_allowed(gw: tuple[Gateway, Clock]) -> None:
    gateway, clock = gw
    _, old = await _enroll(gateway, "renew", "renew-key")
    _, other = await _enroll(gateway, "renew-same-key", "renew-key-ok")
    clock.now += HALF_A_YEAR
    refused = await _renew(gateway, "renew", "renew-key", old, same_key=True)
    assert refused.fail_info == FailInfo.BAD_REQUEST
    assert refused.fail_info_text == "a renewal must use a new key"
    allowed = await _renew(gateway, "renew-same-key", "renew-key-ok", other, same_key=True)
    assert allowed.status is PkiStatus.SUCCESS, allowed.fail_info_text
    assert allowed.certificates[0].public_key() == other.certificate.public_key()


async def test_expired_signer_is_badtime(gw: tuple[Gateway, Clock]) -> None:
    gateway, clock = gw
    _, old = await _enroll(gateway, "renew", "renew-expired")
    clock.now += timedelta(days=400)
    reply = await _renew(gateway, "renew", "renew-expired", old)
    assert reply.fail_info == FailInfo.BAD_TIME
    assert reply.fail_info_text == "the signing certificate is not valid now"


async def test_revoked_signer_is_badcertid(gw: tuple[Gateway, Clock]) -> None:
    gateway, clock = gw
    _, old = await _enroll(gateway, "renew", "renew-revoked")
    ca = gateway.services.snapshot().cas["ManagementCA"]
    await gateway.services.crls.revoke(ca, old.certificate.serial_number, "keyCompromise")
    clock.now += HALF_A_YEAR
    reply = await _renew(gateway, "renew", "renew-revoked", old)
    assert reply.fail_info == FailInfo.BAD_CERT_ID
    assert reply.fail_info_text == "the signing certificate is revoked"


@pytest.mark.parametrize("forged", [False, True], ids=["foreign-issuer", "forged-copy"])
async def test_foreign_certificate_is_no_renewal_credential(
    gw: tuple[Gateway, Clock], forged: bool
) -> None:
    gateway, clock = gw
    _, ours = await _enroll(gateway, "renew", "renew-foreign")
    clock.now += HALF_A_YEAR
    # Our subject from a CA we do not know; or a copy of our certificate's issuer and serial
    # signed by a stranger: neither is a credential, so the secret is missing.
    signer = _foreign(ours.certificate, copy_issuer_and_serial=forged)
    reply = await _renew(gateway, "renew", "renew-foreign", signer)
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text == AUTH_FAILED
    assert len(await gateway.services.store.list_certificates(username="renew-foreign")) == 1


def _foreign(ours: x509.Certificate, *, copy_issuer_and_serial: bool) -> client.Identity:
    stranger = fresh_key()
    key = fresh_key()
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(ours.subject)
        .issuer_name(ours.issuer if copy_issuer_and_serial else cn("Foreign CA"))
        .public_key(key.public_key())
        .serial_number(
            ours.serial_number if copy_issuer_and_serial else x509.random_serial_number()
        )
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(stranger, hashes.SHA256())
    )
    return client.Identity(certificate, key)


async def test_renewal_must_keep_the_subject(gw: tuple[Gateway, Clock]) -> None:
    gateway, clock = gw
    _, old = await _enroll(gateway, "renew", "renew-subject")
    clock.now += HALF_A_YEAR
    reply = await _renew(gateway, "renew", "renew-subject", old, subject=cn("someone-else"))
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text == "a renewal must keep the subject of the certificate it renews"


async def test_renewal_where_not_enabled_is_badrequest(gw: tuple[Gateway, Clock]) -> None:
    gateway, clock = gw
    _, old = await _enroll(gateway, "no-renew", "renew-disabled")
    clock.now += HALF_A_YEAR
    reply = await _renew(gateway, "no-renew", "renew-disabled", old)
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text == "renewal is not enabled here"


async def test_a_certificate_renews_only_on_its_own_alias(gw: tuple[Gateway, Clock]) -> None:
    gateway, clock = gw
    _, old = await _enroll(gateway, "renew-same-key", "renew-elsewhere")
    clock.now += HALF_A_YEAR
    reply = await _renew(gateway, "renew", "renew-elsewhere", old)
    assert reply.fail_info == FailInfo.BAD_CERT_ID
    assert reply.fail_info_text == "the signing certificate was issued on another alias"


async def test_ra_renewal_keeps_the_subject_it_renews(gw: tuple[Gateway, Clock]) -> None:
    gateway, clock = gw
    _, old = await _enroll(gateway, "renew", "renew-dn")
    clock.now += HALF_A_YEAR
    # Same CN, one more field: the renewal does not grant it.
    wider = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "admins"),
            x509.NameAttribute(NameOID.COMMON_NAME, "renew-dn"),
        ]
    )
    reply = await _renew(gateway, "renew", "renew-dn", old, subject=wider)
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    assert reply.certificates[0].subject == old.certificate.subject
