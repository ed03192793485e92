"""PKCS#10 certification requests as real clients send them (RFC 2986, RFC 8894 3.3.1).

Parsed with asn1crypto rather than ``cryptography.x509.load_der_x509_csr``: Apple devices
send version 2 in the CSR (shared/vectors/smallstep-scep/PKCSReq.der), which cryptography
refuses. We check the self-signature ourselves.
"""

from __future__ import annotations

import hashlib
import ipaddress
import warnings
from dataclasses import dataclass
from typing import Any

from asn1crypto import core
from asn1crypto import csr as asn1_csr
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPublicKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.name import _ASN1Type

from gateway.scep.crypto import DIGESTS, digest, rsa_key_out_of_bounds


@dataclass(frozen=True)
class CertificationRequest:
    der: bytes
    subject: x509.Name
    public_key: CertificateIssuerPublicKeyTypes
    challenge_password: str | None
    subject_alt_names: tuple[x509.GeneralName, ...]
    signature_valid: bool


def load_name(value: asn1_x509.Name) -> x509.Name:
    """An asn1crypto Name as a cryptography Name (cryptography has no DER loader for Names)."""
    rdns = []
    # Devices send names cryptography would not build (C=USA); we take them as they are, and
    # cryptography's warning about each one says nothing an operator could act on.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for rdn in value.chosen:
            attrs: list[x509.NameAttribute[Any]] = []
            for ava in rdn:
                value = ava["value"]
                oid = x509.ObjectIdentifier(ava["type"].dotted)
                native = value.native
                kind = _string_type(value)
                if kind is _ASN1Type.BitString and isinstance(native, bytes):
                    # x500UniqueIdentifier (RFC 4519 2.40): cryptography takes the octets.
                    attrs.append(x509.NameAttribute(oid, native, _type=kind))
                elif isinstance(native, str):
                    attrs.append(x509.NameAttribute(oid, native, _type=kind, _validate=False))
                else:
                    # Not a string (an INTEGER, a bit tuple): kept readable, typed by default.
                    attrs.append(x509.NameAttribute(oid, str(native), _validate=False))
            rdns.append(x509.RelativeDistinguishedName(attrs))
    return x509.Name(rdns)


def _string_type(value: core.Asn1Value) -> _ASN1Type | None:
    """The ASN.1 string type the device used. Re-encoding with cryptography's default per
    attribute fails on some (a UTF8String serialNumber "SN_1" is no PrintableString), and
    a device may compare its DN byte for byte."""
    chosen = value.chosen if isinstance(value, core.Choice) else value
    try:
        return _ASN1Type(chosen.tag)
    except ValueError:
        return None


def _general_name(name: asn1_x509.GeneralName) -> x509.GeneralName | None:
    kind, value = name.name, name.native
    if kind == "dns_name":
        return x509.DNSName(value)
    if kind == "rfc822_name":
        return x509.RFC822Name(value)
    if kind == "uniform_resource_identifier":
        return x509.UniformResourceIdentifier(value)
    if kind == "ip_address":
        return x509.IPAddress(ipaddress.ip_address(value))
    if kind == "directory_name":
        return x509.DirectoryName(load_name(name.chosen))
    return None  # otherName and friends: a certificate profile decides about them later


def _subject_alt_names(info: asn1_csr.CertificationRequestInfo) -> tuple[x509.GeneralName, ...]:
    names: list[x509.GeneralName] = []
    for attr in info["attributes"]:
        if attr["type"].native != "extension_request":
            continue
        for extensions in attr["values"]:
            for ext in extensions:
                if ext["extn_id"].native == "subject_alt_name":
                    names.extend(
                        gn for gn in (_general_name(n) for n in ext["extn_value"].parsed) if gn
                    )
    return tuple(names)


def _signature_valid(request: asn1_csr.CertificationRequest, key: object) -> bool:
    algo = request["signature_algorithm"]
    signature = request["signature"].native
    signed = request["certification_request_info"].dump()
    try:
        if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, signed)
            return True
        hash_name = algo.hash_algo
        if hash_name not in DIGESTS:
            return False
        if isinstance(key, rsa.RSAPublicKey) and algo.signature_algo == "rsassa_pkcs1v15":
            key.verify(signature, signed, padding.PKCS1v15(), digest(hash_name))
        elif isinstance(key, ec.EllipticCurvePublicKey) and algo.signature_algo == "ecdsa":
            key.verify(signature, signed, ec.ECDSA(digest(hash_name)))
        else:
            return False
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return False
    return True


def parse(der: bytes) -> CertificationRequest:
    """Parse a DER (or BER) PKCS#10 request; raises ValueError-family errors on garbage."""
    request = asn1_csr.CertificationRequest.load(der)
    info = request["certification_request_info"]
    key = serialization.load_der_public_key(info["subject_pk_info"].dump())
    if not isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        raise ValueError("unsupported public key type in the request")
    too_costly = rsa_key_out_of_bounds(key) if isinstance(key, rsa.RSAPublicKey) else None
    if too_costly is not None:
        # Before the signature is verified: that verification is what such a key makes
        # expensive. The profile's own key limits apply later, to a request known valid.
        raise ValueError(f"request key out of bounds: {too_costly}")
    challenge: str | None = None
    for attr in info["attributes"]:
        if attr["type"].native == "challenge_password":
            # RFC 2985 5.4.1: any DirectoryString type (Printable, UTF8, BMP, ...).
            value = attr["values"][0].native
            challenge = value if isinstance(value, str) else None
    return CertificationRequest(
        der=der,
        subject=load_name(info["subject"]),
        public_key=key,
        challenge_password=challenge,
        subject_alt_names=_subject_alt_names(info),
        signature_valid=_signature_valid(request, key),
    )


def key_id(key: PublicKeyTypes) -> str:
    """SHA-256 (hex) of the key's SubjectPublicKeyInfo, re-encoded by cryptography so that
    one key has one id however a client encoded it. What a pending request is bound to."""
    spki = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def without_challenge(der: bytes) -> bytes:
    """The request with its challengePassword attribute(s) removed, and no signature.

    What a pending request keeps: the key, the subject and the requested extensions, but not
    the RA secret or enrollment code (RFC 8894 7.3). The signature goes too: it covers the
    password, so keeping it would let anyone who reads the row test guesses of a short
    password offline against the public key. The result parses with :func:`parse` (with
    ``signature_valid`` False); nothing that reads it back checks the signature.
    """
    request = asn1_csr.CertificationRequest.load(der)
    info = request["certification_request_info"]
    attributes = asn1_csr.CRIAttributes(
        [a for a in info["attributes"] if a["type"].native != "challenge_password"]
    )
    stripped = asn1_csr.CertificationRequestInfo(
        {
            "version": info["version"],
            "subject": info["subject"],
            "subject_pk_info": info["subject_pk_info"],
            "attributes": attributes,
        }
    )
    stored = asn1_csr.CertificationRequest(
        {
            "certification_request_info": stripped,
            "signature_algorithm": request["signature_algorithm"],
            "signature": core.OctetBitString(b""),
        }
    )
    return bytes(stored.dump())
