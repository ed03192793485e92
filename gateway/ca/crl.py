"""Certificate revocation lists (RFC 5280 section 5), signed by a local CA."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from gateway.ca.local import LocalCA

# RFC 5280 5.3.1 reason names as the CLI and the store spell them.
REASONS: dict[str, x509.ReasonFlags] = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
    "removeFromCRL": x509.ReasonFlags.remove_from_crl,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aACompromise": x509.ReasonFlags.aa_compromise,
}


@dataclass(frozen=True)
class Revoked:
    serial: int
    revoked_at: datetime
    reason: str


def build_crl(
    ca: LocalCA,
    revoked: Sequence[Revoked],
    *,
    number: int,
    this_update: datetime,
    next_update: datetime,
) -> bytes:
    issuer = ca.certificate
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    for entry in revoked:
        item = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
        )
        # RFC 5280 5.3.1: reasonCode unspecified SHOULD be absent.
        if entry.reason != "unspecified":
            item = item.add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
        builder = builder.add_revoked_certificate(item.build())
    digest = {"sha384": hashes.SHA384(), "sha512": hashes.SHA512()}.get(ca.digest, hashes.SHA256())
    crl = builder.sign(ca.key_pair.private_key, digest)  # type: ignore[arg-type]
    return crl.public_bytes(serialization.Encoding.DER)


def issued_by(certificate_der: bytes, ca: LocalCA) -> bool:
    """Was this certificate signed by this CA generation's key (rollover keeps the name)?"""
    try:
        x509.load_der_x509_certificate(certificate_der).verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
