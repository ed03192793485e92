"""SCEP message values: what a decoded request says and what an answer must echo."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from gateway.scep.csr import CertificationRequest


class MessageType(enum.IntEnum):
    """RFC 8894 3.2.1.2 Table 3."""

    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20  # GetCertInitial in draft-nourse-scep
    GET_CERT = 21
    GET_CRL = 22


class PkiStatus(enum.IntEnum):
    """RFC 8894 3.2.1.3 Table 4."""

    SUCCESS = 0
    FAILURE = 2
    PENDING = 3


@dataclass(frozen=True)
class IssuerAndSerial:
    """IssuerAndSerialNumber (GetCert, GetCRL; RFC 8894 3.3.4, 3.3.5)."""

    issuer: x509.Name
    serial: int


@dataclass(frozen=True)
class IssuerAndSubject:
    """IssuerAndSubject (CertPoll; RFC 8894 3.3.3)."""

    issuer: x509.Name
    subject: x509.Name


@dataclass(frozen=True)
class Signer:
    """The certificate that signed a request; a SUCCESS answer is encrypted to it (RFC 8894 2.3).

    Kept as DER plus the parts we need rather than as a parsed ``x509.Certificate``: the
    throwaway self-signed certificates of real clients are not always strict X.509 (Windows
    marks its AuthorityKeyIdentifier critical), and we only need the key and the identifier.
    """

    certificate_der: bytes
    issuer_der: bytes
    serial: int
    public_key: PublicKeyTypes
    self_issued: bool = False  # issuer == subject: a client's throwaway certificate


@dataclass(frozen=True)
class ReplyTo:
    """What any CertRep must echo (RFC 8894 3.2.1.1, 3.2.1.5) and the digest to answer with."""

    transaction_id: str
    recipient_nonce: bytes
    digest: str


@dataclass(frozen=True)
class SignedMessage:
    """The outer SignedData of a PKIOperation, parsed but not yet verified or decrypted."""

    message_type: str
    transaction_id: str
    sender_nonce: bytes
    signing_time: datetime | None
    digest: str
    signer: Signer
    certificates: tuple[bytes, ...]
    content: bytes
    # What verification needs; opaque to callers.
    signed_attrs_der: bytes
    message_digest: bytes
    content_type_ok: bool
    signature: bytes
    signature_algo: str


@dataclass(frozen=True)
class PkiRequest:
    """A verified, decrypted PKIOperation request."""

    message_type: MessageType
    transaction_id: str
    sender_nonce: bytes
    digest: str
    signing_time: datetime | None
    signer: Signer
    content_cipher: str
    recipient_index: int
    csr: CertificationRequest | None = None
    issuer_and_serial: IssuerAndSerial | None = None
    issuer_and_subject: IssuerAndSubject | None = None
