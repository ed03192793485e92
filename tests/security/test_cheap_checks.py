"""docs/security.md section 4: cheap checks before expensive work.

An RSA key with a 3070-bit public exponent, or 560 certificates in the SignedData, made a
request cost several times a normal one, and the CSR signature was verified whatever its key.
Each is now refused by a bound checked before the signature it would make expensive.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.ca.local import generate_key
from gateway.errors import FailInfo
from gateway.scep import client
from gateway.scep import cms as scep_cms
from gateway.scep.messages import PkiStatus
from tests.conftest import Gateway, body_of, running_gateway
from tests.shapes import raw_pki_message
from tests.support import Device, fresh_key

pytestmark = pytest.mark.asyncio

SECRET = "Cheap-Checks-1"
ALIASES = {"aliases/odd.yaml": "mode: ra\nca: ManagementCA\nra: {secret: {env: SCEP_TEST_CHEAP}}\n"}


@pytest.fixture
async def gw(
    tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("SCEP_TEST_CHEAP", SECRET)
    async with running_gateway(tmp_path, shared_data_dir, ALIASES) as running:
        yield running


def _huge_exponent_key() -> rsa.RSAPrivateKey:
    """An RSA-3072 key whose public exponent has 3070 bits: valid, and slow to verify with
    (OpenSSL limits exponents to 64 bits only for moduli beyond 3072 bits)."""
    key = generate_key("rsa", 3072)
    assert isinstance(key, rsa.RSAPrivateKey)
    base = key.private_numbers()
    p, q = base.p, base.q
    phi = (p - 1) * (q - 1)
    e = (int.from_bytes(os.urandom(384), "big") % (1 << 3069)) | (1 << 3069) | 1
    while math.gcd(e, phi) != 1:
        e += 2
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p,
        q,
        d,
        rsa.rsa_crt_dmp1(d, p),
        rsa.rsa_crt_dmq1(d, q),
        rsa.rsa_crt_iqmp(p, q),
        rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


async def _post(gw: Gateway, body: bytes) -> tuple[int, bytes]:
    response = await gw.client.post("/scep/odd/pkiclient.exe?operation=PKIOperation", data=body)
    return response.status_code, await body_of(response)


async def test_a_signer_key_with_a_huge_exponent_is_refused_before_its_signature(
    gw: Gateway,
) -> None:
    key = _huge_exponent_key()
    device = Device("costly", key=key, signer=client.self_signed(key, "costly"))
    status, body = await _post(gw, device.pkcsreq(SECRET, gw.recipients("odd")))
    assert status == 200
    reply = client.read_cert_rep(body)
    assert reply.status is PkiStatus.FAILURE
    assert reply.fail_info == FailInfo.BAD_ALG
    assert reply.fail_info_text == (
        "the signer key must be RSA of at most 8192 bits with a small exponent"
    )


async def test_a_csr_key_with_a_huge_exponent_is_one_more_unreadable_request(
    gw: Gateway,
) -> None:
    device = Device("costly-csr", key=fresh_key())
    csr = client.csr(
        _huge_exponent_key(), x509.Name.from_rfc4514_string("CN=costly-csr"), challenge=SECRET
    )
    status, body = await _post(gw, device.message(csr, gw.recipients("odd")))
    assert status == 200
    reply = device.read(body)
    assert reply.status is PkiStatus.FAILURE
    assert reply.fail_info_text == scep_cms.UNREADABLE


async def test_hundreds_of_certificates_in_the_signed_data_are_refused(gw: Gateway) -> None:
    device = Device("many-certs", key=fresh_key())
    signer = device.identity.certificate.public_bytes(serialization.Encoding.DER)
    enveloped = client.envelope_for(device.csr(SECRET), gw.recipients("odd"), random=os.urandom(64))
    fine = raw_pki_message(device.key, signer, enveloped, extra_certificates=7)
    status, body = await _post(gw, fine)
    assert status == 200
    assert device.read(body).status is PkiStatus.SUCCESS
    # As many as fit under the body limit (256 KB): several hundred.
    count = 250_000 // len(signer)
    assert count > 300
    many = raw_pki_message(device.key, signer, enveloped, extra_certificates=count)
    status, body = await _post(gw, many)
    assert status == 400
    assert body == b"message is not a SCEP pkiMessage\n"
