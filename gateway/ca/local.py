"""The local issuer: a CA whose key this process holds (through a KeySigner)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from gateway.keys.files import KeyPair, SigningKey

_BACKDATE = timedelta(minutes=5)  # tolerate client clock skew on notBefore


@dataclass(frozen=True)
class KeyUsageSpec:
    digital_signature: bool = False
    content_commitment: bool = False
    key_agreement: bool = False
    key_encipherment: bool = False
    data_encipherment: bool = False
    key_cert_sign: bool = False
    crl_sign: bool = False

    def extension(self) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=self.digital_signature,
            content_commitment=self.content_commitment,
            key_encipherment=self.key_encipherment,
            data_encipherment=self.data_encipherment,
            key_agreement=self.key_agreement,
            key_cert_sign=self.key_cert_sign,
            crl_sign=self.crl_sign,
            encipher_only=False,
            decipher_only=False,
        )


# RFC 8894 2.1.2: the certificate clients use for SCEP needs digitalSignature and
# keyEncipherment besides the CA bits.
CA_KEY_USAGE = KeyUsageSpec(
    digital_signature=True, key_encipherment=True, key_cert_sign=True, crl_sign=True
)
END_ENTITY_KEY_USAGE = KeyUsageSpec(digital_signature=True, key_encipherment=True)
# NDES-03: a signing RA certificate and an encryption RA certificate.
RA_SIGNER_KEY_USAGE = KeyUsageSpec(digital_signature=True)
RA_ENCRYPTER_KEY_USAGE = KeyUsageSpec(key_encipherment=True, data_encipherment=True)


def generate_key(key_type: str = "rsa", key_size: int = 2048) -> SigningKey:
    if key_type == "ec":
        curve: ec.EllipticCurve = {384: ec.SECP384R1(), 521: ec.SECP521R1()}.get(
            key_size, ec.SECP256R1()
        )
        return ec.generate_private_key(curve)
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def _hash(name: str) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    if name == "sha384":
        return hashes.SHA384()
    if name == "sha512":
        return hashes.SHA512()
    return hashes.SHA256()


def create_root(
    subject: x509.Name,
    key: SigningKey,
    *,
    serial: int,
    now: datetime,
    validity: timedelta,
    digest: str = "sha256",
    backdate: timedelta = _BACKDATE,
) -> x509.Certificate:
    """A self-signed CA certificate usable for SCEP directly (EJBCA's default arrangement).

    Valid from ``now - backdate``; a rollover certificate passes its activation time and no
    backdating, since its notBefore is when it takes over.
    """
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - backdate)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_KEY_USAGE.extension(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, _hash(digest))
    )


@dataclass(frozen=True)
class IssueRequest:
    subject: x509.Name
    public_key: CertificateIssuerPublicKeyTypes
    serial: int
    not_before: datetime
    not_after: datetime
    key_usage: KeyUsageSpec = END_ENTITY_KEY_USAGE
    extended_key_usage: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,)
    subject_alt_names: tuple[x509.GeneralName, ...] = ()
    crl_distribution_points: tuple[str, ...] = ()
    ca_issuers: tuple[str, ...] = ()
    ocsp: tuple[str, ...] = ()
    digest: str | None = None  # default: the CA's


@dataclass(frozen=True)
class LocalCA:
    """Signs end-entity certificates with a CA key pair."""

    name: str
    key_pair: KeyPair
    digest: str = "sha256"

    @property
    def certificate(self) -> x509.Certificate:
        return self.key_pair.certificate

    def issue(self, request: IssueRequest) -> x509.Certificate:
        issuer = self.key_pair.certificate
        builder = (
            x509.CertificateBuilder()
            .subject_name(request.subject)
            .issuer_name(issuer.subject)
            .public_key(request.public_key)
            .serial_number(request.serial)
            .not_valid_before(request.not_before)
            .not_valid_after(min(request.not_after, issuer.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(request.key_usage.extension(), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(request.public_key), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        if request.extended_key_usage:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage(list(request.extended_key_usage)), critical=False
            )
        if request.subject_alt_names:
            # RFC 5280 4.2.1.6: critical when the subject is empty.
            builder = builder.add_extension(
                x509.SubjectAlternativeName(list(request.subject_alt_names)),
                critical=len(request.subject) == 0,
            )
        if request.crl_distribution_points:
            builder = builder.add_extension(
                x509.CRLDistributionPoints(
                    [
                        x509.DistributionPoint(
                            [x509.UniformResourceIdentifier(u)], None, None, None
                        )
                        for u in request.crl_distribution_points
                    ]
                ),
                critical=False,
            )
        access = [
            x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(u)
            )
            for u in request.ca_issuers
        ] + [
            x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u)
            )
            for u in request.ocsp
        ]
        if access:
            builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
        return builder.sign(self.key_pair.private_key, _hash(request.digest or self.digest))


def issue_ra_pair(
    ca: LocalCA, *, now: datetime, serials: tuple[int, int], validity: timedelta
) -> tuple[KeyPair, KeyPair]:
    """An NDES-style RA signing certificate and RA encryption certificate, issued by ``ca``."""
    pairs = []
    base = ca.certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    ca_cn = str(base[0].value) if base else ca.name
    for serial, role, usage in (
        (serials[0], "Signer", RA_SIGNER_KEY_USAGE),
        (serials[1], "Encrypter", RA_ENCRYPTER_KEY_USAGE),
    ):
        key = generate_key("rsa", 2048)
        cert = ca.issue(
            IssueRequest(
                subject=x509.Name(
                    [x509.NameAttribute(x509.NameOID.COMMON_NAME, f"{ca_cn} SCEP RA {role}")]
                ),
                public_key=key.public_key(),
                serial=serial,
                not_before=now - _BACKDATE,
                not_after=now + validity,
                key_usage=usage,
                extended_key_usage=(),
            )
        )
        pairs.append(KeyPair(certificate=cert, private_key=key))
    return pairs[0], pairs[1]
