"""docs/security.md section 8: no HTTP 500 from unauthenticated input.

Shapes that reached a traceback: a signer certificate or a GetCert with a 60 KB serial number
(decimal formatting hits Python's digit limit), and a signer named by subjectKeyIdentifier
whose issuer holds an x500UniqueIdentifier. Each now gets a specific answer.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509

from gateway.errors import FailInfo
from gateway.scep import client
from gateway.scep.messages import MessageType, PkiStatus
from tests.conftest import Gateway, body_of, running_gateway
from tests.shapes import raw_pki_message, resigned_certificate
from tests.support import Device, fresh_key

pytestmark = pytest.mark.asyncio

SECRET = "Five-Hundred-1"
ALIASES = {"aliases/odd.yaml": "mode: ra\nca: ManagementCA\nra: {secret: {env: SCEP_TEST_500}}\n"}
HUGE = int.from_bytes(b"\x7f" + os.urandom(60_000), "big")


@pytest.fixture
async def gw(
    tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("SCEP_TEST_500", SECRET)
    async with running_gateway(tmp_path, shared_data_dir, ALIASES) as running:
        yield running


async def _answer(gw: Gateway, body: bytes) -> tuple[int, bytes]:
    response = await gw.client.post("/scep/odd/pkiclient.exe?operation=PKIOperation", data=body)
    return response.status_code, await body_of(response)


async def test_a_signer_certificate_with_a_60_kb_serial_is_refused(gw: Gateway) -> None:
    key = fresh_key()
    device = Device("huge-serial", key=key)
    enveloped = client.envelope_for(device.csr(SECRET), gw.recipients("odd"), random=os.urandom(64))
    status, body = await _answer(
        gw, raw_pki_message(key, resigned_certificate(key, serial=HUGE), enveloped)
    )
    assert status == 200
    reply = client.read_cert_rep(body)
    assert reply.status is PkiStatus.FAILURE
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text == "the signer certificate's serial number is longer than 64 octets"


async def test_getcert_with_a_60_kb_serial_is_no_such_certificate(gw: Gateway) -> None:
    device = Device("getcert-huge", key=fresh_key())
    ca = gw.recipients("odd")[0]
    wanted = cms.IssuerAndSerialNumber(
        {
            "issuer": asn1_x509.Name.load(ca.issuer.public_bytes()),
            "serial_number": HUGE,
        }
    ).dump()
    body = device.message(wanted, gw.recipients("odd"), message_type=MessageType.GET_CERT)
    status, answer = await _answer(gw, body)
    assert status == 200
    reply = device.read(answer)
    assert reply.status is PkiStatus.FAILURE
    assert reply.fail_info == FailInfo.BAD_CERT_ID


async def test_a_signer_found_by_ski_with_a_unique_identifier_in_its_issuer(gw: Gateway) -> None:
    key = fresh_key()
    issuer = asn1_x509.Name.build({"common_name": "odd issuer"})
    unique = asn1_x509.NameTypeAndValue(
        {"type": "2.5.4.45", "value": core.OctetBitString(b"\x01\xb2")}
    )
    issuer = asn1_x509.Name(
        name="",
        value=asn1_x509.RDNSequence(
            [*issuer.chosen, asn1_x509.RelativeDistinguishedName([unique])]
        ),
    )
    ski = os.urandom(20)
    cert = resigned_certificate(key, issuer=issuer, ski=ski)
    device = Device("odd-ski", key=key)
    enveloped = client.envelope_for(device.csr(SECRET), gw.recipients("odd"), random=os.urandom(64))
    status, answer = await _answer(gw, raw_pki_message(key, cert, enveloped, by_ski=ski))
    assert status == 200, answer
    holder = client.Identity(certificate=x509.load_der_x509_certificate(cert), private_key=key)
    reply = client.read_cert_rep(answer, recipient=holder)
    # Not self-issued, not ours: a first enrollment with the RA secret, issued.
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    assert reply.certificates[0].subject == x509.Name.from_rfc4514_string("CN=odd-ski")
