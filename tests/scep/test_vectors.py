"""Real messages from other implementations (tests/vectors/README.md) read by our decoder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.errors import FailInfo, ScepFailure
from gateway.keys.files import load_key_pair
from gateway.scep import csr, decode
from gateway.scep.cms import UNREADABLE, open_envelope
from gateway.scep.messages import MessageType

VECTORS = Path(__file__).parents[1] / "vectors"
JSCEP = VECTORS / "jscep"
SMALLSTEP = VECTORS / "smallstep-scep"


def _der(path: Path) -> bytes:
    return path.read_bytes()


def test_jscep_pkcsreq_signature_verifies_and_attributes_read() -> None:
    message = decode.read_signed_message(_der(JSCEP / "scep_req2.der"))
    decode.verify(message)
    assert message.transaction_id == "7XXEY-ERLPU-2JDR9"
    assert decode.message_type(message) is MessageType.PKCS_REQ
    assert len(message.sender_nonce) == 16
    assert message.digest == "sha256"
    assert message.signing_time is not None
    # The encapsulated content is exactly jscep's EnvelopedData sample.
    assert message.content == _der(JSCEP / "scep_req1.der")


def test_jscep_tampered_pkcsreq_fails_verification() -> None:
    data = bytearray(_der(JSCEP / "scep_req2.der"))
    data[-10] ^= 0x01  # inside the signature value
    message = decode.read_signed_message(bytes(data))
    with pytest.raises(ScepFailure) as failure:
        decode.verify(message)
    assert failure.value.fail_info == FailInfo.BAD_MESSAGE_CHECK


def test_jscep_csr_challenge_and_sans() -> None:
    request = csr.parse(_der(JSCEP / "scep_req0.der"))
    assert request.signature_valid
    assert request.challenge_password == "NQ3C6-GS3ZN-2XPGL-SEJTQ"
    assert x509.RFC822Name("dave@wetas-r-us.com") in request.subject_alt_names
    assert x509.UniformResourceIdentifier("http://www.wetas-r-us.com") in request.subject_alt_names
    assert request.subject.rfc4514_string().startswith("CN=Test SCEP PKI user")


def test_jscep_envelope_names_daves_ca() -> None:
    info = cms.ContentInfo.load(_der(JSCEP / "scep_req1.der"))
    env = info["content"]
    ktri = env["recipient_infos"][0].chosen
    assert ktri["rid"].chosen["serial_number"].native == 0x24CC285C1674F207
    algo = env["encrypted_content_info"]["content_encryption_algorithm"]["algorithm"].native
    assert algo == "aes128_cbc"


def test_jscep_certrep_signature_and_nonce_echo() -> None:
    request = decode.read_signed_message(_der(JSCEP / "scep_req2.der"))
    reply = decode.read_signed_message(_der(JSCEP / "scep_resp2.der"))
    decode.verify(reply)
    assert reply.message_type == "3"
    assert reply.transaction_id == request.transaction_id
    assert reply.content == _der(JSCEP / "scep_resp1.der")


def test_jscep_degenerate_certs_only_holds_the_issued_certificate() -> None:
    info = cms.ContentInfo.load(_der(JSCEP / "scep_resp0.der"))
    signed = info["content"]
    assert len(signed["signer_infos"]) == 0
    assert len(signed["digest_algorithms"]) == 0
    assert len(signed["certificates"]) == 1


def test_apple_pkcsreq_decrypts_to_its_csr_with_the_test_ca_key() -> None:
    ca = load_key_pair(
        SMALLSTEP / "testca/ca.pem",
        (SMALLSTEP / "testca/ca.unencrypted.key").read_bytes(),
        "vector key",
    )
    message = decode.read_signed_message(_der(SMALLSTEP / "PKCSReq.der"))
    request = decode.open_request(message, decode.check(message), [ca], fallback_key=os.urandom)
    assert request.message_type is MessageType.PKCS_REQ
    assert request.digest == "sha1"
    assert request.content_cipher == "tripledes_3key"
    assert request.sender_nonce.hex() == "ae7fe8816cc6bedd"  # PKI-07: 8 bytes, echoed as is
    assert request.csr is not None
    assert request.csr.signature_valid
    assert request.csr.challenge_password is None
    assert request.csr.subject.rfc4514_string() == (
        "CN=com.apple.security.scep.063D7953-1338-4BF0-8F99-913382996224"
    )
    # REP-06: the signer ("MDM SCEP SIGNER") does not carry the CSR key.
    signer_cert = x509.load_der_x509_certificate(request.signer.certificate_der)
    assert signer_cert.public_key() != request.csr.public_key


def test_apple_certrep_verifies() -> None:
    reply = decode.read_signed_message(_der(SMALLSTEP / "CertRep.der"))
    decode.verify(reply)
    assert reply.transaction_id == "A13090761A30F66664F85D37433D2065E1112BA1"


def test_ndes_certrep_without_certificates_verifies_with_the_ca_certificate() -> None:
    ca2 = x509.load_pem_x509_certificate((SMALLSTEP / "testca2/ca2.pem").read_bytes())
    data = _der(SMALLSTEP / "testca2/CertRep_NoCertificatesForSigners.der")
    reply = decode.read_signed_message(data, [ca2.public_bytes(serialization.Encoding.DER)])
    decode.verify(reply)
    assert reply.digest == "sha1"
    assert reply.transaction_id == "HVvzN0228V+AW+dUuDe8OPyDXD0="
    env = cms.ContentInfo.load(reply.content)["content"]
    ktri = env["recipient_infos"][0].chosen
    assert ktri["key_encryption_algorithm"]["algorithm"].native == "rsaes_oaep"


def test_apple_request_for_another_ca_is_not_decrypted() -> None:
    client = load_key_pair(
        SMALLSTEP / "testclient/client.pem",
        (SMALLSTEP / "testclient/client.key").read_bytes(),
        "vector key",
    )
    message = decode.read_signed_message(_der(SMALLSTEP / "PKCSReq.der"))
    with pytest.raises(ScepFailure) as failure:
        open_envelope(message.content, [client], fallback_key=os.urandom)
    assert failure.value.fail_info == FailInfo.BAD_MESSAGE_CHECK
    assert failure.value.client_text == UNREADABLE
