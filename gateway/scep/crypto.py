"""Key access protocols and the algorithm tables SCEP negotiates.

The protocol code never holds a private key: it asks a ``KeySigner`` to sign and a
``KeyDecrypter`` to decrypt, so a PKCS#11 token can replace a PEM file (DESIGN.md section 5).
"""

from __future__ import annotations

from typing import Protocol

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class KeySigner(Protocol):
    """Signs SCEP answers: the CA key or an RA signing key."""

    @property
    def certificate(self) -> x509.Certificate: ...

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        """PKCS#1 v1.5 for RSA keys, ECDSA (DER) for EC keys."""
        ...


class KeyDecrypter(Protocol):
    """Opens request envelopes: the CA key or an RA encryption key (always RSA, RFC 8894 3.1)."""

    @property
    def certificate(self) -> x509.Certificate: ...

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes: ...


# Digest names as asn1crypto spells them. MD5 is absent on purpose: RFC 8894 2.9 MUST NOT.
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


def digest(name: str) -> hashes.HashAlgorithm:
    return DIGESTS[name]()


def hash_bytes(name: str, data: bytes) -> bytes:
    h = hashes.Hash(digest(name))
    h.update(data)
    return h.finalize()


# Content ciphers by asn1crypto algorithm name: (key bytes, block bytes).
CONTENT_CIPHERS: dict[str, tuple[int, int]] = {
    "des": (8, 8),  # decrypt only: micromdm scepclient 2.1.0 always sends single DES
    "tripledes_3key": (24, 8),
    "aes128_cbc": (16, 16),
    "aes192_cbc": (24, 16),
    "aes256_cbc": (32, 16),
}
# RFC 8894 2.9: single DES is deprecated; an alias may refuse it (micromdm's scepclient sends
# nothing else, so it is accepted by default).
WITHOUT_SINGLE_DES = frozenset(CONTENT_CIPHERS) - {"des"}
# What we answer with for a given request cipher: never single DES (RFC 8894 2.9).
RESPONSE_CIPHER = {
    "des": "aes128_cbc",
    "tripledes_3key": "tripledes_3key",
    "aes128_cbc": "aes128_cbc",
    "aes192_cbc": "aes192_cbc",
    "aes256_cbc": "aes256_cbc",
}


# RSA keys beyond 8192 bits or with a public exponent beyond 32 bits exist only to make each
# verification expensive (a 3070-bit exponent costs 180 times 65537's); no client sends them.
MAX_RSA_BITS = 8192
MAX_RSA_EXPONENT_BITS = 32


def rsa_key_out_of_bounds(key: rsa.RSAPublicKey) -> str | None:
    """Why verifying with this key would cost more than any real client's, or None."""
    exponent = key.public_numbers().e
    if key.key_size > MAX_RSA_BITS or exponent.bit_length() > MAX_RSA_EXPONENT_BITS:
        return f"RSA {key.key_size} bits, exponent of {exponent.bit_length()} bits"
    return None


def content_cipher(name: str, key: bytes, iv: bytes) -> Cipher[modes.CBC]:
    if name == "des":
        # Single DES is 3DES with K1 = K2 = K3.
        return Cipher(TripleDES(key * 3), modes.CBC(iv))
    if name == "tripledes_3key":
        return Cipher(TripleDES(key), modes.CBC(iv))
    return Cipher(algorithms.AES(key), modes.CBC(iv))
