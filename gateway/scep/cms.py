"""The CMS (RFC 5652) structures SCEP uses: SignedData and EnvelopedData, both ways.

Reading accepts BER (Apple sends indefinite lengths); writing emits DER with certificate sets
in the order the caller gives.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Collection, Sequence
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

# The one answer to every request whose content cannot be used (see ``open_envelope``).
UNREADABLE = "the message data could not be decrypted or does not fit the messageType"


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
    """A decrypted envelope.

    ``padded`` is the decrypted content with its padding, ``length`` the content's length by
    that padding. ``problem`` is set when anything after the key transport failed (wrong key,
    wrong key length, CBC padding; ``length`` is then all of ``padded``): the caller goes on
    down the same path and refuses at its end with one answer (RFC 3218 2.3.2).
    """

    padded: bytes
    length: int
    cipher: str
    recipient_index: int
    problem: str | None = None

    @property
    def plaintext(self) -> bytes:
        return self.padded[: self.length]


def names_match(a: asn1_x509.Name, b: asn1_x509.Name) -> bool:
    """RFC 5280 7.1 name matching: the same DER, or equal after asn1crypto's normalisation
    (which raises on attribute values that are no strings, such as an x500UniqueIdentifier:
    those names match by their DER only)."""
    if a.dump() == b.dump():
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def _rid_matches(rid: cms.RecipientIdentifier, cert: asn1_x509.Certificate) -> bool:
    if rid.name == "issuer_and_serial_number":
        ias = rid.chosen
        return ias["serial_number"].native == cert.serial_number and names_match(
            ias["issuer"], cert.issuer
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
        if isinstance(params, core.Void):
            # RFC 8017 A.2.1: the defaults, SHA-1 and MGF1 with SHA-1.
            return padding.OAEP(
                mgf=padding.MGF1(digest("sha1")), algorithm=digest("sha1"), label=None
            )
        hash_name = params["hash_algorithm"]["algorithm"].native
        mgf_hash = params["mask_gen_algorithm"]["parameters"]["algorithm"].native
        label = params["p_source_algorithm"]["parameters"].native or b""
        if hash_name not in DIGESTS or mgf_hash not in DIGESTS:
            raise ScepFailure(FailInfo.BAD_ALG, "unsupported key transport", detail=hash_name)
        return padding.OAEP(
            mgf=padding.MGF1(digest(mgf_hash)), algorithm=digest(hash_name), label=label or None
        )
    raise ScepFailure(FailInfo.BAD_ALG, "unsupported key transport", detail=str(name))


def rejects_implicitly(decrypter: KeyDecrypter) -> bool:
    """Whether PKCS#1 v1.5 decryption with this key turns a malformed block into a synthetic
    message instead of an error ("implicit rejection", OpenSSL 3.2 and newer).

    ``open_envelope`` already goes on with a random key after an error (RFC 3218 2.3.2), but
    an error still takes a different time inside the library than a success (the Marvin
    attack): a key that does not reject implicitly must not decrypt requests. The probe is one
    private-key operation on a block of type 01, which is never a valid encryption block.
    """
    public = decrypter.certificate.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        return False
    numbers = public.public_numbers()
    size = (public.key_size + 7) // 8
    block = int.from_bytes(b"\x00\x01" + b"\xff" * (size - 3) + b"\x00", "big")
    try:
        decrypter.decrypt(
            pow(block, numbers.e, numbers.n).to_bytes(size, "big"), padding.PKCS1v15()
        )
    except ValueError:
        return False
    return True


def open_envelope(
    data: bytes,
    decrypters: Sequence[KeyDecrypter],
    *,
    fallback_key: Callable[[int], bytes],
    ciphers: Collection[str] | None = None,
) -> Opened:
    """Decrypt a pkcsPKIEnvelope (RFC 8894 3.2.2) with whichever of our keys it names.

    Everything decided from the envelope's structure alone (not an EnvelopedData, a cipher we
    do not take, no recipient of ours, a malformed IV or ciphertext length) is refused here,
    before the private key is used: those answers say nothing about the plaintext.

    From the key transport on nothing raises. RFC 3218 2.3.2: when the RSA decryption fails or
    gives a key of the wrong length, decrypt with ``fallback_key(length)`` (random bytes drawn
    whether or not they are needed) and carry on; a bad CBC padding leaves the unpadded
    plaintext. ``Opened.problem`` records what went wrong for the log, and the caller refuses
    only after parsing the payload, with the same answer as for any other content failure. A
    padding oracle here recovers the challengePassword from one captured request.
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
        iv = cipher_alg["parameters"].native if cipher_name in CONTENT_CIPHERS else None
        encrypted_key = recipients[0][0]["encrypted_key"].native if recipients else b""
    except ScepFailure:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ScepFailure(
            FailInfo.BAD_REQUEST, "the message data is not a valid EnvelopedData", detail=repr(exc)
        ) from None
    if cipher_name not in CONTENT_CIPHERS:
        raise ScepFailure(
            FailInfo.BAD_ALG, "unsupported content encryption", detail=str(cipher_name)
        )
    if ciphers is not None and cipher_name not in ciphers:
        refused = "single DES" if cipher_name == "des" else "this content encryption"
        raise ScepFailure(FailInfo.BAD_ALG, f"{refused} is not accepted", detail=cipher_name)
    if not recipients:
        # RFC 8894 3.2.2: not for one of our keys.
        # ENV-02: answered like any failure after key transport.
        raise ScepFailure(FailInfo.BAD_MESSAGE_CHECK, UNREADABLE, detail="no recipient is ours")
    key_len, block = CONTENT_CIPHERS[cipher_name]
    if (
        not isinstance(iv, bytes)
        or len(iv) != block
        or not ciphertext
        or len(ciphertext) % block
        or not isinstance(encrypted_key, bytes)
    ):
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            "the message data is not a valid EnvelopedData",
            detail=f"iv or ciphertext length for {cipher_name}",
        )
    ktri, index = recipients[0]
    try:
        pad = _key_transport_padding(ktri["key_encryption_algorithm"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # malformed OAEP params
        raise ScepFailure(FailInfo.BAD_ALG, "unsupported key transport", detail=repr(exc)) from None
    # From here on one path, whatever the bytes are.
    problem = None
    fallback = fallback_key(key_len)
    try:
        key = decrypters[index].decrypt(encrypted_key, pad)
    except ValueError:
        # OAEP decoding failed (or a backend without implicit rejection refused PKCS#1 v1.5).
        key, problem = fallback, "key transport failed"
    if len(key) != key_len:
        # With implicit rejection (OpenSSL 3.2+) a bad PKCS#1 v1.5 block decrypts to a
        # synthetic message of pseudo-random length: mostly caught here.
        key, problem = fallback, problem or f"content key of {len(key)} bytes"
    decryptor = content_cipher(cipher_name, key, iv).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    unpadder = sym_padding.PKCS7(block * 8).unpadder()
    try:
        length = len(unpadder.update(padded) + unpadder.finalize())
    except ValueError:
        length, problem = len(padded), problem or "bad CBC padding"
    return Opened(
        padded=padded, length=length, cipher=cipher_name, recipient_index=index, problem=problem
    )


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
