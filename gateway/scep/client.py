"""The client side of SCEP: build requests, read answers.

The gateway does not use this module to serve; the test suite and the benchmark do, to speak
to it the way a device would (and to verify answers fully).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from gateway.errors import FailInfo, ScepFailure
from gateway.scep import cms as scep_cms
from gateway.scep import decode, oids
from gateway.scep.crypto import CONTENT_CIPHERS, content_cipher
from gateway.scep.messages import MessageType, PkiStatus


@dataclass(frozen=True)
class Identity:
    """A client's certificate and RSA key: signs requests, decrypts answers."""

    certificate: x509.Certificate
    private_key: rsa.RSAPrivateKey

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        return self.private_key.sign(data, padding.PKCS1v15(), algorithm)

    def decrypt(self, ciphertext: bytes, pad: padding.AsymmetricPadding) -> bytes:
        return self.private_key.decrypt(ciphertext, pad)


def self_signed(key: rsa.RSAPrivateKey, common_name: str, *, days: int = 1) -> Identity:
    """The throwaway signer certificate of a first enrollment (RFC 8894 2.3)."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return Identity(certificate=cert, private_key=key)


def csr(
    key: rsa.RSAPrivateKey,
    subject: x509.Name,
    *,
    challenge: str | None = None,
    sans: Sequence[x509.GeneralName] = (),
) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if challenge is not None:
        builder = builder.add_attribute(
            x509.oid.AttributeOID.CHALLENGE_PASSWORD, challenge.encode()
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def cert_poll_content(issuer: x509.Name, subject: x509.Name) -> bytes:
    """IssuerAndSubject, what a CertPoll (GetCertInitial) carries (RFC 8894 3.3.3)."""
    content: bytes = core.Sequence(contents=issuer.public_bytes() + subject.public_bytes()).dump()
    return content


def _ktri_padding(name: str) -> tuple[padding.AsymmetricPadding, dict[str, object]]:
    if name == "oaep":
        return (
            padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
            {
                "algorithm": "rsaes_oaep",
                "parameters": {
                    "hash_algorithm": {"algorithm": "sha256"},
                    "mask_gen_algorithm": {
                        "algorithm": "mgf1",
                        "parameters": {"algorithm": "sha256"},
                    },
                },
            },
        )
    return padding.PKCS1v15(), {"algorithm": "rsaes_pkcs1v15"}


def envelope_for(
    plaintext: bytes,
    recipients: Sequence[x509.Certificate],
    *,
    cipher: str = "aes128_cbc",
    key_transport: str = "pkcs1v15",
    random: bytes,
) -> bytes:
    """EnvelopedData to the CA/RA certificate(s), as a client builds it."""
    key_len, block = CONTENT_CIPHERS[cipher]
    key, iv = random[:key_len], random[key_len : key_len + block]
    padder = sym_padding.PKCS7(block * 8).padder()
    encryptor = content_cipher(cipher, key, iv).encryptor()
    ciphertext = encryptor.update(padder.update(plaintext) + padder.finalize())
    ciphertext += encryptor.finalize()
    pad, alg = _ktri_padding(key_transport)
    infos = []
    for cert in recipients:
        public_key = cert.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        asn1_cert = asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER))
        infos.append(
            cms.RecipientInfo(
                name="ktri",
                value=cms.KeyTransRecipientInfo(
                    {
                        "version": "v0",
                        "rid": cms.RecipientIdentifier(
                            name="issuer_and_serial_number",
                            value=cms.IssuerAndSerialNumber(
                                {
                                    "issuer": asn1_cert.issuer,
                                    "serial_number": asn1_cert.serial_number,
                                }
                            ),
                        ),
                        "key_encryption_algorithm": alg,
                        "encrypted_key": public_key.encrypt(key, pad),
                    }
                ),
            )
        )
    enveloped = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": infos,
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {
                    "algorithm": cipher,
                    "parameters": iv,
                },
                "encrypted_content": ciphertext,
            },
        }
    )
    return bytes(cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump())


def pki_message(
    message_type: MessageType,
    payload: bytes,
    *,
    signer: Identity,
    recipients: Sequence[x509.Certificate],
    transaction_id: str,
    sender_nonce: bytes,
    digest: str = "sha256",
    cipher: str = "aes128_cbc",
    key_transport: str = "pkcs1v15",
    random: bytes,
    message_type_text: str | None = None,
) -> bytes:
    """A complete pkiMessage: payload enveloped to ``recipients``, signed by ``signer``."""
    enveloped = envelope_for(
        payload, recipients, cipher=cipher, key_transport=key_transport, random=random
    )
    return sign_pki_message(
        enveloped,
        message_type_text or str(int(message_type)),
        signer=signer,
        transaction_id=transaction_id,
        sender_nonce=sender_nonce,
        digest=digest,
    )


def sign_pki_message(
    enveloped: bytes,
    message_type: str,
    *,
    signer: Identity,
    transaction_id: str,
    sender_nonce: bytes,
    digest: str = "sha256",
) -> bytes:
    """The outer SignedData of a request around an already built pkcsPKIEnvelope."""
    attrs = [
        scep_cms.attribute(oids.MESSAGE_TYPE, core.PrintableString(message_type)),
        scep_cms.attribute(oids.TRANSACTION_ID, core.PrintableString(transaction_id)),
        scep_cms.attribute(oids.SENDER_NONCE, core.OctetString(sender_nonce)),
    ]
    certs = [signer.certificate.public_bytes(serialization.Encoding.DER)]
    return scep_cms.sign(enveloped, signer, digest, attrs, certs)


@dataclass(frozen=True)
class CertRep:
    """A CertRep as a client reads it: verified, and decrypted when SUCCESS."""

    status: PkiStatus
    transaction_id: str
    sender_nonce: bytes
    recipient_nonce: bytes
    digest: str
    signer_der: bytes
    fail_info: int | None
    fail_info_text: str | None
    certificates: tuple[x509.Certificate, ...]
    crls: tuple[bytes, ...]
    content_cipher: str | None


def _attr(message: bytes, oid: str) -> core.Asn1Value | None:
    info = cms.ContentInfo.load(message)
    for attr in info["content"]["signer_infos"][0]["signed_attrs"]:
        if attr["type"].dotted == oid:
            return attr["values"][0]
    return None


def read_cert_rep(
    body: bytes,
    *,
    recipient: Identity | None = None,
    trusted_signers: Sequence[x509.Certificate] = (),
) -> CertRep:
    """Parse and verify a CertRep; decrypt a SUCCESS with ``recipient``.

    Raises a GatewayError subclass when anything does not check out (the benchmark's verifier
    counts on that).
    """
    message = decode.read_signed_message(body)
    decode.verify(message)
    if trusted_signers and message.signer.certificate_der not in {
        c.public_bytes(serialization.Encoding.DER) for c in trusted_signers
    }:
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "CertRep signed by an unexpected certificate")
    if message.message_type != str(int(MessageType.CERT_REP)):
        raise ScepFailure(FailInfo.BAD_REQUEST, "not a CertRep")
    status_value = _attr(body, oids.PKI_STATUS)
    status = PkiStatus(int(decode.printable(status_value))) if status_value else None
    if status is None:
        raise ScepFailure(FailInfo.BAD_REQUEST, "no pkiStatus")
    fail_info_value = _attr(body, oids.FAIL_INFO)
    text_value = _attr(body, oids.FAIL_INFO_TEXT)
    recipient_nonce = _attr(body, oids.RECIPIENT_NONCE)
    certificates: tuple[x509.Certificate, ...] = ()
    crls: tuple[bytes, ...] = ()
    cipher = None
    if status is PkiStatus.SUCCESS:
        if recipient is None:
            raise ValueError("a SUCCESS needs the recipient key to decrypt")
        # The client side may tell failures apart: it reads answers, it answers no one.
        opened = scep_cms.open_envelope(message.content, [recipient], fallback_key=bytes)
        if opened.problem is not None:
            raise ValueError(f"the answer does not decrypt: {opened.problem}")
        cipher = opened.cipher
        inner = cms.ContentInfo.load(opened.plaintext)["content"]
        certificates = tuple(
            x509.load_der_x509_certificate(c.chosen.dump()) for c in inner["certificates"] or []
        )
        crls = tuple(c.chosen.dump() for c in inner["crls"] or [])
    return CertRep(
        status=status,
        transaction_id=message.transaction_id,
        sender_nonce=message.sender_nonce,
        recipient_nonce=decode.octets(recipient_nonce) if recipient_nonce else b"",
        digest=message.digest,
        signer_der=message.signer.certificate_der,
        fail_info=int(decode.printable(fail_info_value)) if fail_info_value else None,
        fail_info_text=text_value.parse(core.UTF8String).native if text_value else None,
        certificates=certificates,
        crls=crls,
        content_cipher=cipher,
    )
