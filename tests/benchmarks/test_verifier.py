"""The benchmark's own response verifier: it accepts a good CertRep and rejects bad ones.

The answers come from the gateway app in-process (CA mode, alias ``scep`` of config.example),
to requests built by the benchmark's message builder. No timing is asserted here.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from benchmarks.messages import build_message
from benchmarks.verify import SUCCESS, CaTrust, VerificationError, classify, verify_response
from tests.conftest import Gateway, body_of, running_gateway
from tests.support import fresh_key, register

ALIAS = "scep"


def _der(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


async def _trust(gateway: Gateway) -> CaTrust:
    response = await gateway.client.get(f"/scep/{ALIAS}/pkiclient.exe?operation=GetCACert")
    assert response.status_code == 200
    return CaTrust.from_get_ca_cert(response.headers["Content-Type"], await body_of(response))


def _flip_signature_byte(body: bytes) -> bytes:
    signature = cms.ContentInfo.load(body)["content"]["signer_infos"][0]["signature"].native
    at = body.find(signature) + len(signature) // 2
    assert at > len(signature) // 2
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1 :]


async def test_verifier_accepts_a_good_certrep_and_rejects_tampered_ones(
    tmp_path: Path, shared_data_dir: Path
) -> None:
    key, other_key = _der(fresh_key()), _der(fresh_key())
    async with running_gateway(tmp_path, shared_data_dir) as gateway:
        trust = await _trust(gateway)
        store = gateway.services.store
        await register(store, "bench-000000", "code-0")
        await register(store, "bench-000001", "code-1")

        good = build_message(0, key, trust.recipients_der, "code-0", "bench")
        body = await gateway.pki(good.body, ALIAS)
        assert classify(body) == SUCCESS
        verified = verify_response(body, good, trust)
        assert verified.subject == "CN=bench-000000"

        # A flipped byte in the CMS signature of the CertRep.
        with pytest.raises(VerificationError, match="does not verify"):
            verify_response(_flip_signature_byte(body), good, trust)

        # A good answer, but to another request of the same device (another senderNonce).
        with pytest.raises(VerificationError, match="recipientNonce"):
            verify_response(body, replace(good, sender_nonce=os.urandom(16)), trust)

        # The issued certificate carries a different key than the request's: the CSR holds
        # ``other_key`` while the request is signed (and the answer encrypted) with ``key``.
        swapped = build_message(
            1, key, trust.recipients_der, "code-1", "bench", csr_key_der=other_key
        )
        swapped_body = await gateway.pki(swapped.body, ALIAS)
        assert classify(swapped_body) == SUCCESS
        with pytest.raises(VerificationError, match="different public key"):
            verify_response(swapped_body, swapped, trust)

        # A refusal is classified by failInfo and never passes the verifier.
        refused = build_message(2, other_key, trust.recipients_der, "wrong", "bench")
        refused_body = await gateway.pki(refused.body, ALIAS)
        assert classify(refused_body) == "FAILURE badRequest"
        with pytest.raises(VerificationError, match="FAILURE"):
            verify_response(refused_body, refused, trust)
