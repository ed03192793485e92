"""Decode a PKIOperation request (RFC 8894 3.2, 3.3) in two steps.

``read_signed_message`` only parses: what it cannot parse has no transactionID to answer to,
so it raises ``MalformedRequest`` (HTTP 400). ``open_request`` verifies and decrypts: its
refusals are ``ScepFailure`` and get a signed CertRep FAILURE, because by then we know whom to
answer (iOS shows "unknown SCEP problem" on an HTTP error, micromdm/scep#37).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from asn1crypto import cms, core, parser
from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.errors import FailInfo, MalformedRequest, ScepFailure
from gateway.scep import cms as scep_cms
from gateway.scep import csr as scep_csr
from gateway.scep import der, oids
from gateway.scep.crypto import (
    DIGESTS,
    MAX_RSA_BITS,
    KeyDecrypter,
    hash_bytes,
    rsa_key_out_of_bounds,
)
from gateway.scep.messages import (
    IssuerAndSerial,
    IssuerAndSubject,
    MessageType,
    PkiRequest,
    ReplyTo,
    SignedMessage,
    Signer,
)

# Bounds on what an unauthenticated client makes us parse and verify. Real clients send one
# signer certificate (a renewal perhaps its chain).
MAX_CERTIFICATES = 8
# RFC 5280 4.1.2.2: CAs use at most 20 octets; a client's throwaway certificate gets some slack.
MAX_SERIAL_BITS = 64 * 8
# RFC 8894 3.2.1.1: transactionID is a PrintableString. Observed formats (hex and base64 key
# hashes, certmonger's long decimal, UUIDs, "SSCEP transactionId") fit in 128 characters.
MAX_TRANSACTION_ID = 128
# RFC 8894 3.2.1.5 gives 16-byte nonces; an Apple capture sends 8 (PKI-07 in
# docs/conformance.md). Anything outside 8..32 bytes is no nonce a client generated.
NONCE_BYTES = range(8, 33)

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
            match = ias["serial_number"].native == cert.serial_number and scep_cms.names_match(
                ias["issuer"], cert.issuer
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
        included = signed["certificates"] or []
        if len(included) > MAX_CERTIFICATES:
            raise ValueError(f"{len(included)} certificates in the SignedData")
        certificates = [c.chosen for c in included if c.name == "certificate"]
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


def _check_attributes(message: SignedMessage) -> None:
    """RFC 8894 3.2.1: the SCEP attributes are of the form the RFC gives, before anything is
    done with them (they are echoed, logged and stored)."""
    tid = message.transaction_id
    if not 0 < len(tid) <= MAX_TRANSACTION_ID or not (tid.isascii() and tid.isprintable()):
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            f"transactionID must be 1 to {MAX_TRANSACTION_ID} printable ASCII characters",
            detail=f"transactionID of {len(tid)} characters",
        )
    if len(message.sender_nonce) not in NONCE_BYTES:
        # RFC 8894 3.2.1.5: every message carries a senderNonce, which the answer echoes.
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            "senderNonce must be 8 to 32 bytes long (RFC 8894: 16)",
            detail=f"senderNonce of {len(message.sender_nonce)} bytes",
        )


def reply_to(message: SignedMessage, digest: str) -> ReplyTo:
    """What an answer echoes (RFC 8894 3.2.1.1, 3.2.1.5), cut to the bounds above: an answer
    to a 200 KB transactionID is a FAILURE whose echo no client can match anyway, and it must
    not cost 200 KB to sign, send and keep."""
    return ReplyTo(
        message.transaction_id[:MAX_TRANSACTION_ID],
        message.sender_nonce[: NONCE_BYTES.stop - 1],
        digest,
    )


def _check_signer(signer: Signer) -> None:
    if signer.serial.bit_length() > MAX_SERIAL_BITS:
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            "the signer certificate's serial number is longer than 64 octets",
            detail=f"signer serial of {signer.serial.bit_length()} bits",
        )
    key = signer.public_key
    if not isinstance(key, rsa.RSAPublicKey):
        # RFC 8894 3.1: answers are encrypted to the signer's key by RSA key transport.
        raise ScepFailure(FailInfo.BAD_ALG, "the signer certificate must carry an RSA key")
    too_costly = rsa_key_out_of_bounds(key)
    if too_costly is not None:
        raise ScepFailure(
            FailInfo.BAD_ALG,
            f"the signer key must be RSA of at most {MAX_RSA_BITS} bits with a small exponent",
            detail=too_costly,
        )


def check(message: SignedMessage) -> MessageType:
    """Everything that is decided from the outer SignedData, cheapest first, before any use of
    a private key: the attributes, the signer key, the signature, the messageType.

    These refusals say nothing about the encrypted content, so they may differ; what fails
    after key transport gets one answer (``open_request``).
    """
    _check_attributes(message)
    _check_signer(message.signer)
    verify(message)
    return message_type(message)


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


class _Unreadable(ValueError):
    """The decrypted content is not what the messageType says."""


def _with_payload(request: PkiRequest, plaintext: bytes) -> PkiRequest:
    kind = request.message_type
    if kind in (MessageType.PKCS_REQ, MessageType.RENEWAL_REQ):
        csr = scep_csr.parse(plaintext)
        if not csr.signature_valid:
            # RFC 8894 3.3.1: the CSR signature is the proof of possession of the new key.
            raise _Unreadable("the certificate request signature does not verify")
        return replace(request, csr=csr)
    if kind is MessageType.CERT_POLL:
        ias = _IssuerAndSubject.load(plaintext, strict=True)
        return replace(
            request,
            issuer_and_subject=IssuerAndSubject(
                issuer=scep_csr.load_name(ias["issuer"]),
                subject=scep_csr.load_name(ias["subject"]),
            ),
        )
    isn = cms.IssuerAndSerialNumber.load(plaintext, strict=True)
    return replace(
        request,
        issuer_and_serial=IssuerAndSerial(
            issuer=scep_csr.load_name(isn["issuer"]), serial=isn["serial_number"].native
        ),
    )


def open_request(
    message: SignedMessage,
    kind: MessageType,
    decrypters: Sequence[KeyDecrypter],
    *,
    fallback_key: Callable[[int], bytes],
    ciphers: Collection[str] | None = None,
) -> PkiRequest:
    """Decrypt and decode the payload of a message that passed ``check``.

    Every failure after key transport (the RSA decryption, the content key's length, the CBC
    padding, the inner DER, content that does not fit the messageType, the CSR and its
    signature) takes this one path to one answer: badMessageCheck with the same text. The
    difference goes to the log only. Telling them apart is a padding oracle (RFC 3218 2.3.2).
    """
    opened = scep_cms.open_envelope(
        message.content, decrypters, fallback_key=fallback_key, ciphers=ciphers
    )
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
    problem = opened.problem
    try:
        # The payload is read from the padded bytes, as far as its own DER header says, and
        # only then held against the padding: a good and a bad padding cost the same parse
        # and the same CSR signature check (no timing oracle either).
        data = opened.padded
        header, contents, trailer = parser.parse(data, strict=False)[3:]
        end = len(header) + len(contents) + len(trailer)
        request = _with_payload(request, data[:end])
        if end != opened.length:
            problem = problem or "the content does not end where its padding begins"
    except _PARSE_ERRORS as exc:
        problem = problem or f"{type(exc).__name__}: {exc}"
    if problem is not None:
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, scep_cms.UNREADABLE, detail=problem)
    return request
