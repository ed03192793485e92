"""Decode a PKIOperation request (RFC 8894 3.2, 3.3) in two steps.

``read_signed_message`` only parses: what it cannot parse has no transactionID to answer to,
so it raises ``MalformedRequest`` (HTTP 400). ``open_request`` verifies and decrypts: its
refusals are ``ScepFailure`` and get a signed CertRep FAILURE, because by then we know whom to
answer (iOS shows "unknown SCEP problem" on an HTTP error, micromdm/scep#37).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import replace

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from gateway.errors import FailInfo, MalformedRequest, ScepFailure
from gateway.scep import cms as scep_cms
from gateway.scep import csr as scep_csr
from gateway.scep import der, oids
from gateway.scep.crypto import DIGESTS, KeyDecrypter, hash_bytes
from gateway.scep.messages import (
    IssuerAndSerial,
    IssuerAndSubject,
    MessageType,
    PkiRequest,
    SignedMessage,
    Signer,
)

# UnsupportedAlgorithm: a key of a type cryptography does not know (found by the fuzzer).
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    UnsupportedAlgorithm,
)


def printable(value: core.Asn1Value) -> str:
    parsed = value.native if not isinstance(value, core.Any) else value.parse(core.PrintableString)
    text = parsed.native if isinstance(parsed, core.Asn1Value) else parsed
    if not isinstance(text, str):
        raise ValueError("not a string")
    return text


def octets(value: core.Asn1Value) -> bytes:
    parsed = value.parse(core.OctetString) if isinstance(value, core.Any) else value
    octets = parsed.native
    if not isinstance(octets, bytes):
        raise ValueError("not an octet string")
    return octets


def _signed_attrs_der(signer_info: cms.SignerInfo) -> bytes:
    # RFC 5652 5.4: the signature covers the attributes with an explicit SET OF tag. Reusing the
    # received contents keeps whatever order the client signed, BER outer length or not.
    return der.tlv(der.SET, signer_info["signed_attrs"].contents)


def _signer(certificates: list[asn1_x509.Certificate], sid: cms.SignerIdentifier) -> Signer:
    # RFC 8894 App. A: the signer certificate MUST be in `certificates`; pick it by sid, not by
    # position (a renewal client may send a chain).
    for cert in certificates:
        if sid.name == "issuer_and_serial_number":
            ias = sid.chosen
            match = (
                ias["serial_number"].native == cert.serial_number and ias["issuer"] == cert.issuer
            )
        else:
            ski = cert.key_identifier
            match = ski is not None and hmac.compare_digest(sid.chosen.native, ski)
        if match:
            public_key = serialization.load_der_public_key(cert.public_key.dump())
            return Signer(
                certificate_der=cert.dump(),
                issuer_der=cert.issuer.dump(),
                serial=cert.serial_number,
                public_key=public_key,
                # Byte equality, not RFC 5280 name matching: it only decides whether to
                # look for a renewal credential, and a miss merely costs that lookup.
                self_issued=cert.issuer.dump() == cert.subject.dump(),
            )
    raise ValueError("signer certificate not included")


def read_signed_message(data: bytes, known_signers: Sequence[bytes] = ()) -> SignedMessage:
    """Parse the outer SignedData and its SCEP attributes, without verifying anything.

    ``known_signers`` (DER) are tried when the message does not carry its signer certificate:
    NDES leaves `certificates` empty (shared vector testca2), clients then use GetCACert's.
    """
    try:
        info = cms.ContentInfo.load(data, strict=False)
        if info["content_type"].native != "signed_data":
            raise ValueError("not SignedData")
        signed = info["content"]
        signer_infos = signed["signer_infos"]
        if len(signer_infos) != 1:
            raise ValueError("expected one SignerInfo")
        signer_info = signer_infos[0]
        if signed["encap_content_info"]["content_type"].native != "data":
            raise ValueError("encapsulated content is not id-data")
        content = signed["encap_content_info"]["content"].native
        if not isinstance(content, bytes):
            raise ValueError("no encapsulated content")
        certificates = [c.chosen for c in (signed["certificates"] or []) if c.name == "certificate"]
        attrs: dict[str, core.Asn1Value] = {}
        for attr in signer_info["signed_attrs"]:
            values = attr["values"]
            if len(values):
                attrs[attr["type"].dotted] = values[0]
        transaction_id = printable(attrs[oids.TRANSACTION_ID])
        nonce = attrs.get(oids.SENDER_NONCE)
        sender_nonce = octets(nonce) if nonce is not None else b""
        message_type = printable(attrs.get(oids.MESSAGE_TYPE, core.PrintableString("")))
        signing_time_attr = attrs.get("1.2.840.113549.1.9.5")
        signing_time = signing_time_attr.native if signing_time_attr is not None else None
        content_type = attrs.get("1.2.840.113549.1.9.3")
        message_digest = attrs.get("1.2.840.113549.1.9.4")
        signature_algo = signer_info["signature_algorithm"].signature_algo
        digest_name = signer_info["digest_algorithm"]["algorithm"].native
        signer = _signer(
            [*certificates, *(asn1_x509.Certificate.load(c) for c in known_signers)],
            signer_info["sid"],
        )
        return SignedMessage(
            message_type=message_type,
            transaction_id=transaction_id,
            sender_nonce=sender_nonce,
            signing_time=signing_time,
            digest=digest_name,
            signer=signer,
            certificates=tuple(c.dump() for c in certificates),
            content=content,
            signed_attrs_der=_signed_attrs_der(signer_info),
            message_digest=octets(message_digest) if message_digest is not None else b"",
            content_type_ok=content_type is not None and content_type.native == "data",
            signature=signer_info["signature"].native,
            signature_algo=signature_algo,
        )
    except _PARSE_ERRORS as exc:
        raise MalformedRequest(
            "message is not a SCEP pkiMessage", detail=f"{type(exc).__name__}: {exc}"
        ) from None


def verify(message: SignedMessage) -> None:
    """RFC 8894 3.2: the digest algorithm is allowed, the content digest and signature hold."""
    if message.digest not in DIGESTS:
        # RFC 8894 2.9: MD5 MUST NOT be used.
        raise ScepFailure(
            FailInfo.BAD_ALG, "unsupported digest algorithm", detail=f"digest {message.digest}"
        )
    if not message.content_type_ok or not hmac.compare_digest(
        message.message_digest, hash_bytes(message.digest, message.content)
    ):
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, "the request signature does not verify")
    scep_cms.verify_signature(
        message.signer.public_key,
        message.signature,
        message.signed_attrs_der,
        message.digest,
        message.signature_algo,
    )


def message_type(message: SignedMessage) -> MessageType:
    try:
        kind = MessageType(int(message.message_type))
    except ValueError:
        kind = MessageType.CERT_REP
    if kind is MessageType.CERT_REP:
        # RFC 8894 3.2.1.2: undefined message types MUST be treated as errors.
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            "unsupported messageType",
            detail=f"messageType {message.message_type!r}",
        )
    return kind


class _IssuerAndSubject(core.Sequence):  # type: ignore[misc]
    """draft-nourse-scep 3.2.3.1 / RFC 8894 3.3.3."""

    _fields = [("issuer", asn1_x509.Name), ("subject", asn1_x509.Name)]  # noqa: RUF012


def _with_payload(request: PkiRequest, plaintext: bytes) -> PkiRequest:
    kind = request.message_type
    if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
        csr = scep_csr.parse(plaintext)
        if not csr.signature_valid:
            # RFC 8894 3.3.1: the CSR signature is the proof of possession of the new key.
            raise ScepFailure(
                FailInfo.BAD_MESSAGE_CHECK, "the certificate request signature does not verify"
            )
        return replace(request, csr=csr)
    if kind is MessageType.CERT_POLL:
        ias = _IssuerAndSubject.load(plaintext)
        return replace(
            request,
            issuer_and_subject=IssuerAndSubject(
                issuer=scep_csr.load_name(ias["issuer"]),
                subject=scep_csr.load_name(ias["subject"]),
            ),
        )
    isn = cms.IssuerAndSerialNumber.load(plaintext)
    return replace(
        request,
        issuer_and_serial=IssuerAndSerial(
            issuer=scep_csr.load_name(isn["issuer"]), serial=isn["serial_number"].native
        ),
    )


def open_request(message: SignedMessage, decrypters: Sequence[KeyDecrypter]) -> PkiRequest:
    """Verify, decrypt and decode the payload of a parsed request."""
    verify(message)
    kind = message_type(message)
    if not message.sender_nonce:
        # RFC 8894 3.2.1.5: every message carries a senderNonce, which the answer echoes.
        raise ScepFailure(FailInfo.BAD_REQUEST, "senderNonce missing")
    opened = scep_cms.open_envelope(message.content, decrypters)
    request = PkiRequest(
        message_type=kind,
        transaction_id=message.transaction_id,
        sender_nonce=message.sender_nonce,
        digest=message.digest,
        signing_time=message.signing_time,
        signer=message.signer,
        content_cipher=opened.cipher,
        recipient_index=opened.recipient_index,
    )
    try:
        return _with_payload(request, opened.plaintext)
    except ScepFailure:
        raise
    except _PARSE_ERRORS as exc:
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            "the message data does not fit the messageType",
            detail=f"{type(exc).__name__}: {exc}",
        ) from None
