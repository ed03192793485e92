"""Requests real clients may send that the gateway must answer with a CertRep, never a 500:
DN strings in types cryptography would not choose, a signingTime without a zone, malformed
OAEP parameters."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from gateway.errors import FailInfo, ScepFailure
from gateway.scep import client, der, oids
from gateway.scep import cms as scep_cms
from gateway.scep.messages import PkiStatus
from tests.conftest import Gateway, running_gateway
from tests.support import Device, fresh_key

pytestmark = pytest.mark.asyncio

SECRET = "Odd-Secret-1"
RA = "mode: ra\nca: ManagementCA\nra: {secret: {env: SCEP_TEST_ODD_SECRET}}\n"
ALIASES = {
    "aliases/odd.yaml": RA,
    "aliases/odd-skew.yaml": RA + "max_signing_time_skew_seconds: 300\n",
}


@pytest.fixture
async def gw(
    tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("SCEP_TEST_ODD_SECRET", SECRET)
    async with running_gateway(tmp_path, shared_data_dir, ALIASES) as running:
        yield running


async def test_dn_strings_keep_the_type_the_device_chose(gw: Gateway) -> None:
    # A UTF8String serialNumber with "_" is no PrintableString, cryptography's default type.
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.SERIAL_NUMBER, "SN_0001", _type=_ASN1Type.UTF8String),
            x509.NameAttribute(NameOID.COMMON_NAME, "odd-types"),
        ]
    )
    device = Device("odd-types", key=fresh_key())
    body = device.message(device.csr(SECRET, subject), gw.recipients("odd"))
    reply = device.read(await gw.pki(body, "odd"))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    issued = reply.certificates[0].public_bytes(serialization.Encoding.DER)
    assert asn1_x509.Certificate.load(issued).subject.dump() == subject.public_bytes()


def _signed_with_time(device: Device, gw: Gateway, signing_time: core.Asn1Value) -> bytes:
    enveloped = client.envelope_for(
        device.csr(SECRET), gw.recipients("odd-skew"), random=os.urandom(64)
    )
    attrs = [
        scep_cms.attribute(oids.MESSAGE_TYPE, core.PrintableString("19")),
        scep_cms.attribute(oids.TRANSACTION_ID, core.PrintableString("tx-odd-time")),
        scep_cms.attribute(oids.SENDER_NONCE, core.OctetString(os.urandom(16))),
        scep_cms.attribute("signing_time", signing_time),
    ]
    certs = [device.identity.certificate.public_bytes(serialization.Encoding.DER)]
    return scep_cms.sign(enveloped, device.identity, "sha256", attrs, certs)


async def test_signing_time_without_a_zone_is_badtime(gw: Gateway) -> None:
    device = Device("odd-time", key=fresh_key())
    naive = core.GeneralizedTime.load(b"\x18\x0e20261127120000")  # no "Z"
    reply = device.read(await gw.pki(_signed_with_time(device, gw, naive), "odd-skew"))
    assert reply.fail_info == FailInfo.BAD_TIME
    assert reply.fail_info_text == "signingTime has no time zone"


async def test_malformed_oaep_parameters_are_badalg(gw: Gateway) -> None:
    recipient = gw.recipients("odd")[0]
    enveloped = client.envelope_for(
        b"payload", [recipient], key_transport="oaep", random=os.urandom(64)
    )
    params = (
        cms.ContentInfo.load(enveloped)["content"]["recipient_infos"][0]
        .chosen["key_encryption_algorithm"]["parameters"]
        .dump()
    )
    # An INTEGER of the same length where RSAES-OAEP-params belong (no length changes).
    assert 2 < len(params) < 130
    integer = bytes([der.INTEGER, len(params) - 2]) + b"\x01" * (len(params) - 2)
    mangled = enveloped.replace(params, integer, 1)
    assert mangled != enveloped
    keys = gw.services.snapshot().alias("odd").keys
    with pytest.raises(ScepFailure) as refused:
        scep_cms.open_envelope(mangled, [k.decrypter for k in keys], fallback_key=os.urandom)
    assert refused.value.fail_info == FailInfo.BAD_ALG
