"""A certificate profile as issuance parameters."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.ca.local import IssueRequest, KeyUsageSpec
from gateway.config.model import CertificateProfile

_BACKDATE = timedelta(minutes=5)  # tolerate client clock skew on notBefore

EKU = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "time_stamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "ipsec_ike": ExtendedKeyUsageOID.IPSEC_IKE,
    "smartcard_logon": ExtendedKeyUsageOID.SMARTCARD_LOGON,
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}


def key_usage(names: tuple[str, ...]) -> KeyUsageSpec:
    return KeyUsageSpec(
        digital_signature="digital_signature" in names,
        key_encipherment="key_encipherment" in names,
        data_encipherment="data_encipherment" in names,
        content_commitment="content_commitment" in names,
        key_agreement="key_agreement" in names,
    )


def issue_request(
    profile: CertificateProfile,
    *,
    subject: x509.Name,
    public_key: CertificateIssuerPublicKeyTypes,
    serial: int,
    now: datetime,
    subject_alt_names: tuple[x509.GeneralName, ...] = (),
    key_id: str = "",
) -> IssueRequest:
    """``key_id`` replaces `{key_id}` in CDP URLs (the issuing generation's CRL)."""
    return IssueRequest(
        subject=subject,
        public_key=public_key,
        serial=serial,
        not_before=now - _BACKDATE,
        not_after=now + timedelta(days=profile.validity_days),
        key_usage=key_usage(profile.key_usage),
        extended_key_usage=tuple(
            EKU.get(name) or x509.ObjectIdentifier(name) for name in profile.extended_key_usage
        ),
        subject_alt_names=subject_alt_names,
        crl_distribution_points=tuple(
            url.replace("{key_id}", key_id) for url in profile.crl_distribution_points
        ),
        ca_issuers=profile.ca_issuers,
        ocsp=profile.ocsp,
        digest=profile.signature_digest,
    )
