"""Messages built field by field, in shapes cryptography's builders refuse to make: huge
serial numbers, signers named by subjectKeyIdentifier, every DN attribute type.

Used by the security tests and by the property tests of the HTTP layer.
"""

from __future__ import annotations

import os

from asn1crypto import cms, core
from asn1crypto import csr as asn1_csr
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import strategies as st

from gateway.scep import client, oids
from gateway.scep.messages import MessageType

# Every attribute type asn1crypto knows, plus one it does not (its value stays an Any).
NAME_TYPES = [*asn1_x509.NameType._map.values(), "1.2.3.4.5.6.7"]


def _sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def resigned_certificate(
    key: rsa.RSAPrivateKey,
    *,
    serial: int | None = None,
    issuer: asn1_x509.Name | None = None,
    subject: asn1_x509.Name | None = None,
    ski: bytes | None = None,
) -> bytes:
    """A throwaway certificate of ``key`` with the given fields, signed again by ``key``."""
    base = client.self_signed(key, "odd-signer").certificate
    cert = asn1_x509.Certificate.load(base.public_bytes(serialization.Encoding.DER))
    tbs = cert["tbs_certificate"]
    if serial is not None:
        tbs["serial_number"] = serial
    if issuer is not None:
        tbs["issuer"] = issuer
    if subject is not None:
        tbs["subject"] = subject
    if ski is not None:
        tbs["extensions"] = [
            {"extn_id": "key_identifier", "critical": False, "extn_value": core.OctetString(ski)}
        ]
    return bytes(
        asn1_x509.Certificate(
            {
                "tbs_certificate": tbs,
                "signature_algorithm": cert["signature_algorithm"],
                "signature_value": _sign(key, tbs.dump(force=True)),
            }
        ).dump()
    )


def raw_csr(key: rsa.RSAPrivateKey, subject: asn1_x509.Name, challenge: str | None) -> bytes:
    """A PKCS#10 request with any subject, self-signed by ``key``."""
    attributes = []
    if challenge is not None:
        password = asn1_x509.DirectoryString(name="utf8_string", value=challenge)
        attributes.append({"type": "challenge_password", "values": [password]})
    spki = asn1_keys.PublicKeyInfo.load(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    info = asn1_csr.CertificationRequestInfo(
        {"version": "v1", "subject": subject, "subject_pk_info": spki, "attributes": attributes}
    )
    return bytes(
        asn1_csr.CertificationRequest(
            {
                "certification_request_info": info,
                "signature_algorithm": {"algorithm": "sha256_rsa"},
                "signature": _sign(key, info.dump()),
            }
        ).dump()
    )


def raw_pki_message(
    key: rsa.RSAPrivateKey,
    cert_der: bytes,
    enveloped: bytes,
    *,
    kind: MessageType = MessageType.PKCS_REQ,
    by_ski: bytes | None = None,
    transaction_id: str = "odd-shape",
    extra_certificates: int = 0,
) -> bytes:
    """A pkiMessage signed by ``key``, carrying ``cert_der``, its signer named by issuer and
    serial or (``by_ski``) by subjectKeyIdentifier."""
    cert = asn1_x509.Certificate.load(cert_der)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(enveloped)
    attrs = cms.CMSAttributes(
        [
            {"type": "content_type", "values": ["data"]},
            {"type": "message_digest", "values": [digest.finalize()]},
            {"type": oids.MESSAGE_TYPE, "values": [core.PrintableString(str(int(kind)))]},
            {"type": oids.TRANSACTION_ID, "values": [core.PrintableString(transaction_id)]},
            {"type": oids.SENDER_NONCE, "values": [core.OctetString(os.urandom(16))]},
        ]
    )
    sid = (
        cms.SignerIdentifier(name="subject_key_identifier", value=by_ski)
        if by_ski is not None
        else cms.SignerIdentifier(
            name="issuer_and_serial_number",
            value={"issuer": cert.issuer, "serial_number": cert.serial_number},
        )
    )
    version = "v3" if by_ski is not None else "v1"
    signer_info = cms.SignerInfo(
        {
            "version": version,
            "sid": sid,
            "digest_algorithm": {"algorithm": "sha256"},
            "signed_attrs": attrs,
            "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
            "signature": _sign(key, attrs.dump()),
        }
    )
    signed = cms.SignedData(
        {
            "version": version,
            "digest_algorithms": [{"algorithm": "sha256"}],
            "encap_content_info": {"content_type": "data", "content": enveloped},
            "certificates": [cert] + [cert] * extra_certificates,
            "signer_infos": [signer_info],
        }
    )
    return bytes(cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def name_value(kind: str, text: str, octets: bytes, choice: int = 0) -> asn1_x509.NameTypeAndValue:
    """An attribute of type ``kind`` with a value of the type asn1crypto gives it (for a
    DirectoryString, the ``choice``-th of its string types)."""
    if kind == "unique_identifier":
        return asn1_x509.NameTypeAndValue({"type": kind, "value": core.OctetBitString(octets)})
    if kind not in asn1_x509.NameTypeAndValue._oid_specs:
        value = core.Any.load(core.OctetString(octets).dump())
        return asn1_x509.NameTypeAndValue({"type": kind, "value": value})
    spec = asn1_x509.NameTypeAndValue._oid_specs[kind]
    if issubclass(spec, core.Choice):
        alternatives = [alt[0] for alt in spec._alternatives]
        for alternative, value in (
            (alternatives[choice % len(alternatives)], text),
            ("utf8_string", text),
        ):
            try:
                chosen = spec(name=alternative, value=value)
                chosen.dump()
            except (ValueError, TypeError, UnicodeError):
                continue  # a string type that cannot hold this text (PrintableString, BMP)
            return asn1_x509.NameTypeAndValue({"type": kind, "value": chosen})
    try:
        return asn1_x509.NameTypeAndValue({"type": kind, "value": text})
    except (ValueError, TypeError, UnicodeError):
        # A type whose string form limits the characters (PrintableString, IA5String).
        return asn1_x509.NameTypeAndValue({"type": kind, "value": "x"})


@st.composite
def names(draw: st.DrawFn) -> asn1_x509.Name:
    """Names of one to four RDNs, each attribute of any type, with any text."""
    rdns = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(NAME_TYPES))
        text = draw(st.text(min_size=1, max_size=40))
        octets = draw(st.binary(min_size=1, max_size=16))
        choice = draw(st.integers(0, 5))
        rdns.append(asn1_x509.RelativeDistinguishedName([name_value(kind, text, octets, choice)]))
    return asn1_x509.Name(name="", value=asn1_x509.RDNSequence(rdns))


# Serial numbers: small, negative, at the 20-octet limit, and far past Python's 4300 digits.
serials = st.one_of(
    st.integers(-(2**64), 2**64),
    st.integers(150, 170).map(lambda bits: (1 << bits) - 1),
    st.integers(8_000, 480_000).map(lambda bits: (1 << bits) - 1),
)
