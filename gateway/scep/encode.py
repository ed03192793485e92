"""Encode CertRep answers (RFC 8894 3.3.2) and the other signed answers SCEP has."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from asn1crypto import cms, core
from cryptography.hazmat.primitives import serialization

from gateway.errors import FailInfo
from gateway.scep import cms as scep_cms
from gateway.scep import oids
from gateway.scep.crypto import CONTENT_CIPHERS, KeySigner
from gateway.scep.messages import MessageType, PkiStatus, ReplyTo, Signer

NONCE_BYTES = 16  # RFC 8894 3.2.1.5


def _attributes(
    reply: ReplyTo,
    status: PkiStatus,
    sender_nonce: bytes,
    now: datetime,
    *,
    fail_info: FailInfo | None = None,
    fail_text: str | None = None,
) -> list[cms.CMSAttribute]:
    attrs = [
        scep_cms.attribute(oids.MESSAGE_TYPE, core.PrintableString(str(int(MessageType.CERT_REP)))),
        scep_cms.attribute(oids.PKI_STATUS, core.PrintableString(str(int(status)))),
        scep_cms.attribute(oids.TRANSACTION_ID, core.PrintableString(reply.transaction_id)),
        # RFC 8894 3.2.1.5: a fresh senderNonce; the request's senderNonce echoed byte for byte,
        # whatever its length (Apple sends 8 bytes).
        scep_cms.attribute(oids.SENDER_NONCE, core.OctetString(sender_nonce)),
        scep_cms.attribute(oids.RECIPIENT_NONCE, core.OctetString(reply.recipient_nonce)),
        scep_cms.attribute("signing_time", cms.Time(name="utc_time", value=now)),
    ]
    if fail_info is not None:
        attrs.append(scep_cms.attribute(oids.FAIL_INFO, core.PrintableString(str(int(fail_info)))))
        if fail_text:
            attrs.append(scep_cms.attribute(oids.FAIL_INFO_TEXT, core.UTF8String(fail_text)))
    return attrs


def _outer_certificates(signer: KeySigner) -> list[bytes]:
    # REP-01: include the signer certificate so clients need not match it from GetCACert.
    return [signer.certificate.public_bytes(serialization.Encoding.DER)]


def success(
    reply: ReplyTo,
    signer: KeySigner,
    *,
    recipient: Signer,
    cipher: str,
    certificates: Sequence[bytes] = (),
    crls: Sequence[bytes] = (),
    random: bytes,
    now: datetime,
) -> bytes:
    """CertRep SUCCESS: certificates (issued one first) or a CRL, encrypted to the requester.

    ``random`` supplies the sender nonce followed by content key and IV bytes.
    """
    inner = scep_cms.certs_only(certificates, crls)
    key_bytes = sum(CONTENT_CIPHERS[cipher])
    envelope = scep_cms.envelope(
        inner,
        recipient_issuer_der=recipient.issuer_der,
        recipient_serial=recipient.serial,
        recipient_key=recipient.public_key,
        cipher_name=cipher,
        random=random[NONCE_BYTES : NONCE_BYTES + key_bytes],
    )
    attrs = _attributes(reply, PkiStatus.SUCCESS, random[:NONCE_BYTES], now)
    return scep_cms.sign(envelope, signer, reply.digest, attrs, _outer_certificates(signer))


def failure(
    reply: ReplyTo,
    signer: KeySigner,
    fail_info: FailInfo,
    text: str,
    *,
    random: bytes,
    now: datetime,
) -> bytes:
    """CertRep FAILURE with failInfo and failInfoText; no envelope (RFC 8894 3.3.2.2)."""
    attrs = _attributes(
        reply, PkiStatus.FAILURE, random[:NONCE_BYTES], now, fail_info=fail_info, fail_text=text
    )
    # REP-09: a zero-length eContent, as EJBCA and Go's pkcs7 emit, keeps the signature attached.
    return scep_cms.sign(b"", signer, reply.digest, attrs, _outer_certificates(signer))


def pending(reply: ReplyTo, signer: KeySigner, *, random: bytes, now: datetime) -> bytes:
    """CertRep PENDING: no failInfo, no envelope (RFC 8894 3.3.2.3)."""
    attrs = _attributes(reply, PkiStatus.PENDING, random[:NONCE_BYTES], now)
    return scep_cms.sign(b"", signer, reply.digest, attrs, _outer_certificates(signer))


def random_bytes_needed(cipher: str) -> int:
    """How many random bytes ``success`` consumes for ``cipher``."""
    return NONCE_BYTES + sum(CONTENT_CIPHERS[cipher])
