"""The CMS (RFC 5652) structures SCEP uses: SignedData and EnvelopedData, both ways.

Reading accepts BER (Apple sends indefinite lengths); writing emits DER with certificate sets
in the order the caller gives.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from gateway.errors import FailInfo, ScepFailure
from gateway.scep import der
from gateway.scep.crypto import (
    CONTENT_CIPHERS,
    DIGESTS,
    KeyDecrypter,
    KeySigner,
    content_cipher,
    digest,
    hash_bytes,
)

_DECRYPT_FAILED = "the request could not be decrypted"


def certs_only(certificates: Sequence[bytes], crls: Sequence[bytes] = ()) -> bytes:
    """A degenerate certificates-only SignedData (RFC 8894 3.4), certificates in the given order.

    version 1, empty digestAlgorithms, id-data with the content omitted, empty signerInfos
    (the shape of jscep's scep_resp0.der).
    """
    body = [
        der.small_integer(1),
        der.tlv(der.SET, b""),
        der.tlv(der.SEQUENCE, der.ID_DATA),
    ]
    if certificates:
        body.append(der.concat(der.CONTEXT_0, certificates))
    if crls:
        body.append(der.concat(der.CONTEXT_1, crls))
    body.append(der.tlv(der.SET, b""))
    return der.tlv(
        der.SEQUENCE,
        der.ID_SIGNED_DATA + der.tlv(der.CONTEXT_0, der.concat(der.SEQUENCE, body)),
    )


def attribute(oid_or_name: str, value: core.Asn1Value) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": oid_or_name, "values": [value]})


def sign(
    content: bytes,
    signer: KeySigner,
    digest_name: str,
    attributes: Sequence[cms.CMSAttribute],
    certificates: Sequence[bytes],
) -> bytes:
    """SignedData over ``content`` (encapsulated as id-data) with signed attributes.

    contentType and messageDigest are added here (RFC 5652 5.3); the attribute SET is DER
    sorted by asn1crypto, which is what the signature must cover.
    """
    attrs = cms.CMSAttributes(
        [
            attribute("content_type", cms.ContentType("data")),
            attribute("message_digest", core.OctetString(hash_bytes(digest_name, content))),
            *attributes,
        ]
    )
    attrs_der = attrs.dump()
    signature = signer.sign(attrs_der, digest(digest_name))
    sid, digest_alg, signature_alg = _signer_parts(
        signer.certificate.public_bytes(serialization.Encoding.DER), digest_name
    )
    signer_info = der.concat(
        der.SEQUENCE,
        [
            der.small_integer(1),
            sid,
            digest_alg,
            bytes([der.CONTEXT_0]) + attrs_der[1:],  # signedAttrs [0] IMPLICIT SET OF
            signature_alg,
            der.tlv(der.OCTET_STRING, signature),
        ],
    )
    body = [
        der.small_integer(1),
        der.tlv(der.SET, digest_alg),
        der.tlv(
            der.SEQUENCE,
            der.ID_DATA + der.tlv(der.CONTEXT_0, der.tlv(der.OCTET_STRING, content)),
        ),
        der.concat(der.CONTEXT_0, certificates),
        der.tlv(der.SET, signer_info),
    ]
    return der.tlv(
        der.SEQUENCE,
        der.ID_SIGNED_DATA + der.tlv(der.CONTEXT_0, der.concat(der.SEQUENCE, body)),
    )


@functools.lru_cache(maxsize=64)
def _signer_parts(cert_der: bytes, digest_name: str) -> tuple[bytes, bytes, bytes]:
    """SignerIdentifier, digestAlgorithm and signatureAlgorithm of our signing certificate:
    the same for every answer that key signs, so built once, not parsed per CertRep."""
    cert = asn1_x509.Certificate.load(cert_der)
    sid = cms.IssuerAndSerialNumber(
        {"issuer": cert.issuer, "serial_number": cert.serial_number}
    ).dump()
    is_ec = cert.public_key.algorithm == "ec"
    sig_algo = f"{digest_name}_ecdsa" if is_ec else "rsassa_pkcs1v15"
    return (
        sid,
        cms.DigestAlgorithm({"algorithm": digest_name}).dump(),
        cms.SignedDigestAlgorithm({"algorithm": sig_algo}).dump(),
    )


def verify_signature(
    public_key: PublicKeyTypes,
    signature: bytes,
    signed_attrs_der: bytes,
    digest_name: str,
    signature_algo: str,
) -> None:
    """Raise ScepFailure(badMessageCheck) unless the signature over the attributes holds."""
    hash_alg = digest(digest_name)
    try:
        if isinstance(public_key, rsa.RSAPublicKey) and signature_algo == "rsassa_pkcs1v15":
            public_key.verify(signature, signed_attrs_der, padding.PKCS1v15(), hash_alg)
        elif isinstance(public_key, ec.EllipticCurvePublicKey) and signature_algo == "ecdsa":
            public_key.verify(signature, signed_attrs_der, ec.ECDSA(hash_alg))
        else:
            raise ScepFailure(
                FailInfo.BAD_ALG,
                "unsupported signature algorithm",
                detail=f"signature algorithm {signature_algo} with {type(public_key).__name__}",
            )
    except InvalidSignature:
        raise ScepFailure(
            FailInfo.BAD_MESSAGE_CHECK, "the request signature does not verify"
        ) from None


class _OctetChunks(core.SequenceOf):  # type: ignore[misc]
    _child_spec = core.OctetString


class _ChunkedEncryptedContentInfo(cms.EncryptedContentInfo):  # type: ignore[misc]
    _fields = [  # noqa: RUF012
        ("content_type", cms.ContentType),
        ("content_encryption_algorithm", cms.EncryptionAlgorithm),
        ("encrypted_content", _OctetChunks, {"implicit": 0, "optional": True}),
    ]


def _encrypted_content(eci: cms.EncryptedContentInfo) -> bytes:
    """The [0] IMPLICIT encryptedContent, primitive or constructed.

    Go's pkcs7 (micromdm scepclient) sends it constructed, in chunks, which BER allows and
    asn1crypto's implicit OCTET STRING refuses.
    """
    try:
        value = eci["encrypted_content"].native
    except ValueError:
        chunks = _ChunkedEncryptedContentInfo.load(eci.dump())["encrypted_content"]
        value = b"".join(chunk.native for chunk in chunks)
    if not isinstance(value, bytes):
        raise ValueError("no encrypted content")
    return value


@dataclass(frozen=True)
class Opened:
    """A decrypted envelope."""

    plaintext: bytes
    cipher: str
    recipient_index: int


def _rid_matches(rid: cms.RecipientIdentifier, cert: asn1_x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        ias = rid.chosen
        # asn1crypto compares Names after RFC 5280 7.1 normalisation.
        return bool(
            ias["serial_number"].native == cert.serial_number and ias["issuer"] == cert.issuer
        )
    ski = cert.key_identifier
    return ski is not None and hmac.compare_digest(bytes(rid.chosen.native), ski)


@functools.lru_cache(maxsize=64)
def _parsed(cert_der: bytes) -> asn1_x509.Certificate:
    """Our own recipient certificates, parsed once rather than on every request."""
    return asn1_x509.Certificate.load(cert_der)


def _key_transport_padding(alg: cms.KeyEncryptionAlgorithm) -> padding.AsymmetricPadding:
    name = alg["algorithm"].native
    if name == "rsaes_pkcs1v15":
        return padding.PKCS1v15()
    if name == "rsaes_oaep":
        # Windows sends OAEP, with parameters absent (SHA-1 default) or explicit (bc-java #953).
        params = alg["parameters"]
        hash_name = params["hash_algorithm"]["algorithm"].native
        mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
        label = params["p_source_algorithm"]["parameters"].native or b""
        if hash_name not in DIGESTS or mgf_hash not in DIGESTS:
            raise ScepFailure(FailInfo.BAD_ALG, "unsupported key transport", detail=hash_name)
        return padding.OAEP(
            mgf=padding.MGF1(digest(mgf_hash)), algorithm=digest(hash_name), label=label or None
        )
    raise ScepFailure(FailInfo.BAD_ALG, "unsupported key transport", detail=str(name))


def open_envelope(data: bytes, decrypters: Sequence[KeyDecrypter]) -> Opened:
    """Decrypt a pkcsPKIEnvelope (RFC 8894 3.2.2) with whichever of our keys it names.

    Every failure from the key transport on is the same badMessageCheck with the same text,
    so a client learns nothing about where it failed (RFC 3218: no padding oracle on the key).
    """
    try:
        info = cms.ContentInfo.load(data)
        if info["content_type"].native != "enveloped_data":
            raise ScepFailure(FailInfo.BAD_REQUEST, "the message data is not an EnvelopedData")
        env = info["content"]
        eci = env["encrypted_content_info"]
        cipher_alg = eci["content_encryption_algorithm"]
        cipher_name = cipher_alg["algorithm"].native
        ours = [_parsed(d.certificate.public_bytes(serialization.Encoding.DER)) for d in decrypters]
        recipients = [
            (ri.chosen, i)
            for ri in env["recipient_infos"]
            if ri.name == "ktri"
            for i, cert in enumerate(ours)
            if _rid_matches(ri.chosen["rid"], cert)
        ]
        ciphertext = _encrypted_content(eci)
    except ScepFailure:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ScepFailure(
            FailInfo.BAD_REQUEST, "the message data is not a valid EnvelopedData", detail=repr(exc)
        ) from None
    if cipher_name not in CONTENT_CIPHERS:
        raise ScepFailure(FailInfo.BAD_ALG, "unsupported content encryption", detail=cipher_name)
    if not recipients:
        # RFC 8894 3.2.2: not for one of our keys; answered like any other decrypt failure.
        raise ScepFailure(
            FailInfo.BAD_MESSAGE_CHECK, _DECRYPT_FAILED, detail="no recipient is ours"
        )
    ktri, index = recipients[0]
    try:
        pad = _key_transport_padding(ktri["key_encryption_algorithm"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # malformed OAEP params
        raise ScepFailure(FailInfo.BAD_ALG, "unsupported key transport", detail=repr(exc)) from None
    key_len, block = CONTENT_CIPHERS[cipher_name]
    try:
        key = decrypters[index].decrypt(ktri["encrypted_key"].native, pad)
        iv = cipher_alg["parameters"].native
        if len(key) != key_len or not isinstance(iv, bytes) or len(iv) != block or not ciphertext:
            raise ValueError("key or iv length")
        decryptor = content_cipher(cipher_name, key, iv).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = sym_padding.PKCS7(block * 8).unpadder()
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except (ValueError, TypeError) as exc:
        raise ScepFailure(
            FailInfo.BAD_MESSAGE_CHECK, _DECRYPT_FAILED, detail=type(exc).__name__
        ) from None
    return Opened(plaintext=plaintext, cipher=cipher_name, recipient_index=index)


def envelope(
    plaintext: bytes,
    *,
    recipient_issuer_der: bytes,
    recipient_serial: int,
    recipient_key: PublicKeyTypes,
    cipher_name: str,
    random: bytes,
) -> bytes:
    """EnvelopedData of ``plaintext`` to one certificate (RFC 8894 3.2.2, 3.3.2.1), named by
    its issuer and serial number.

    ``random`` supplies key and IV bytes (at least key length + block length). Assembled from
    DER pieces: asn1crypto objects cost more here than the encryption itself.
    encryptedContent is a primitive [0] (PyScep reads no other form).
    """
    if not isinstance(recipient_key, rsa.RSAPublicKey):
        raise ScepFailure(
            FailInfo.BAD_ALG,
            "the signer certificate cannot receive an encrypted answer",
            detail="requester key is not RSA",
        )
    key_len, block = CONTENT_CIPHERS[cipher_name]
    key, iv = random[:key_len], random[key_len : key_len + block]
    padder = sym_padding.PKCS7(block * 8).padder()
    encryptor = content_cipher(cipher_name, key, iv).encryptor()
    ciphertext = encryptor.update(padder.update(plaintext) + padder.finalize())
    ciphertext += encryptor.finalize()
    recipient = der.concat(
        der.SEQUENCE,
        [
            der.small_integer(0),
            der.concat(der.SEQUENCE, [recipient_issuer_der, der.integer(recipient_serial)]),
            _RSAES_PKCS1V15,
            der.tlv(der.OCTET_STRING, recipient_key.encrypt(key, padding.PKCS1v15())),
        ],
    )
    algorithm = der.concat(
        der.SEQUENCE, [_content_cipher_oid(cipher_name), der.tlv(der.OCTET_STRING, iv)]
    )
    content = der.concat(
        der.SEQUENCE,
        [der.ID_DATA, algorithm, der.tlv(der.CONTEXT_0_PRIMITIVE, ciphertext)],
    )
    enveloped = der.concat(
        der.SEQUENCE, [der.small_integer(0), der.tlv(der.SET, recipient), content]
    )
    return der.tlv(der.SEQUENCE, der.ID_ENVELOPED_DATA + der.tlv(der.CONTEXT_0, enveloped))


_RSAES_PKCS1V15: bytes = cms.KeyEncryptionAlgorithm({"algorithm": "rsaes_pkcs1v15"}).dump()


@functools.lru_cache(maxsize=16)
def _content_cipher_oid(cipher_name: str) -> bytes:
    oid: bytes = cms.EncryptionAlgorithmId(cipher_name).dump()
    return oid
