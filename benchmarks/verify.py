"""Reading answers: a cheap classification of every CertRep, a full verification of a sample.

Classification reads pkiStatus and failInfo straight from the DER of the signed attributes
(microseconds, no crypto), so it can run on every answer without loading the client. The full
verifier (``verify_response``) does what a careful device does: checks the CMS signature and
that the signer is a certificate GetCACert announced, that transactionID and recipientNonce
echo the request, decrypts the envelope with the requester's key, and checks that the issued
certificate carries the request's public key and CN and verifies against the CA certificate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from asn1crypto import cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from benchmarks.messages import BenchMessage
from gateway.errors import FailInfo, GatewayError
from gateway.scep import client, oids
from gateway.scep.messages import PkiStatus

_STATUS_OID = core.ObjectIdentifier(oids.PKI_STATUS).dump()
_FAIL_INFO_OID = core.ObjectIdentifier(oids.FAIL_INFO).dump()
_SET = 0x31
_STRINGS = (0x13, 0x0C)  # PrintableString, UTF8String
SUCCESS = "SUCCESS"
CLOCK_SLACK = timedelta(minutes=10)


class VerificationError(Exception):
    """The answer does not check out; the message says which check failed."""


def _length(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if not 1 <= count <= 4:
        raise ValueError("unsupported DER length")
    return int.from_bytes(data[pos + 1 : pos + 1 + count], "big"), pos + 1 + count


def _attribute_text(body: bytes, oid_der: bytes) -> str | None:
    """The string value of the first signed attribute ``oid_der`` (OID TLV, then SET, then a
    PrintableString); None if absent. Attribute OIDs never occur by chance in the rest of a
    CertRep, whose only free-form bytes are inside the encrypted envelope."""
    pos = body.find(oid_der)
    if pos < 0:
        return None
    pos += len(oid_der)
    if body[pos] != _SET:
        return None
    _set_len, pos = _length(body, pos + 1)
    if body[pos] not in _STRINGS:
        return None
    length, pos = _length(body, pos + 1)
    return body[pos : pos + length].decode("latin-1")


def classify(body: bytes) -> str:
    """``SUCCESS``, ``PENDING``, ``FAILURE <failInfo name>`` or ``unparseable``."""
    try:
        status = _attribute_text(body, _STATUS_OID)
        if status == str(int(PkiStatus.SUCCESS)):
            return SUCCESS
        if status == str(int(PkiStatus.PENDING)):
            return "PENDING"
        if status == str(int(PkiStatus.FAILURE)):
            info = _attribute_text(body, _FAIL_INFO_OID)
            try:
                name = FailInfo(int(info or "")).name
            except ValueError:
                name = f"failInfo={info!r}"
            return f"FAILURE {_camel(name)}"
    except (IndexError, ValueError):
        pass
    return "unparseable"


def _camel(name: str) -> str:
    """BAD_MESSAGE_CHECK -> badMessageCheck (RFC 8894's spelling)."""
    head, *rest = name.lower().split("_")
    return head + "".join(p.capitalize() for p in rest)


@dataclass(frozen=True)
class CaTrust:
    """What GetCACert told us: whom to encrypt to, who may sign answers, who issues."""

    ca: x509.Certificate
    signers: tuple[x509.Certificate, ...]
    recipients: tuple[x509.Certificate, ...]

    @property
    def recipients_der(self) -> tuple[bytes, ...]:
        return tuple(c.public_bytes(serialization.Encoding.DER) for c in self.recipients)

    @classmethod
    def from_get_ca_cert(cls, content_type: str, body: bytes) -> CaTrust:
        """RFC 8894 4.2.1: one CA certificate, or (``x-x509-ca-ra-cert``) a certs-only
        PKCS#7 with the RA certificates; requests then go to the RA encryption certificate."""
        if "ca-ra-cert" in content_type:
            signed = cms.ContentInfo.load(body)["content"]
            certs = [
                x509.load_der_x509_certificate(c.chosen.dump())
                for c in signed["certificates"] or []
            ]
        else:
            certs = [x509.load_der_x509_certificate(body)]
        if not certs:
            raise VerificationError("GetCACert returned no certificate")
        cas = [c for c in certs if _is_ca(c)]
        ca = cas[0] if cas else certs[0]
        others = [c for c in certs if not _is_ca(c)]
        recipients = [c for c in others if _can_encipher(c)] or [ca]
        return cls(ca=ca, signers=tuple(certs), recipients=tuple(recipients))


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return cert.issuer == cert.subject


def _can_encipher(cert: x509.Certificate) -> bool:
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_encipherment or usage.data_encipherment


@dataclass(frozen=True)
class Verified:
    serial: int
    subject: str
    content_cipher: str | None


def _spki(cert_or_key: x509.Certificate) -> bytes:
    return cert_or_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verify_response(
    body: bytes, message: BenchMessage, trust: CaTrust, *, now: datetime | None = None
) -> Verified:
    """Fully verify the CertRep ``body`` answering ``message``; raise VerificationError."""
    identity = message.identity()
    try:
        rep = client.read_cert_rep(body, recipient=identity, trusted_signers=trust.signers)
    except (GatewayError, ValueError, TypeError, KeyError) as exc:
        raise VerificationError(f"CertRep does not verify: {type(exc).__name__}: {exc}") from None
    if rep.status is not PkiStatus.SUCCESS:
        raise VerificationError(f"pkiStatus {rep.status.name}, failInfo {rep.fail_info}")
    if rep.transaction_id != message.transaction_id:
        raise VerificationError("transactionID does not echo the request's")
    if rep.recipient_nonce != message.sender_nonce:
        raise VerificationError("recipientNonce does not echo the request's senderNonce")
    if not rep.sender_nonce:
        raise VerificationError("no senderNonce")
    issued = _issued(rep.certificates, trust.ca)
    if _spki(issued) != message.public_key_der():
        raise VerificationError("the issued certificate carries a different public key")
    try:
        issued.verify_directly_issued_by(trust.ca)
    except (InvalidSignature, ValueError, TypeError) as exc:
        raise VerificationError(
            f"the issued certificate does not verify against the CA: {type(exc).__name__}"
        ) from None
    cns = [a.value for a in issued.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cns != [message.common_name]:
        raise VerificationError(f"issued CN {cns} != requested {message.common_name!r}")
    moment = now or datetime.now(UTC)
    if not issued.not_valid_before_utc - CLOCK_SLACK <= moment < issued.not_valid_after_utc:
        raise VerificationError("the issued certificate is not valid now")
    return Verified(issued.serial_number, issued.subject.rfc4514_string(), rep.content_cipher)


def _issued(certificates: Sequence[x509.Certificate], ca: x509.Certificate) -> x509.Certificate:
    """The end-entity certificate of a SUCCESS: the first one that is not the CA's."""
    for cert in certificates:
        if cert != ca and not _is_ca(cert):
            return cert
    raise VerificationError("no issued certificate in the SUCCESS")
