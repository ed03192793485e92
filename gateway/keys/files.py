"""Keys held in PEM files (the default key store; PKCS#11 can replace it behind the protocols)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from gateway.errors import GatewayError


class KeyLoadError(GatewayError):
    """A key or certificate file is missing, unreadable or does not match."""


SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class KeyPair:
    """A certificate with its private key; implements KeySigner and, for RSA, KeyDecrypter."""

    certificate: x509.Certificate
    private_key: SigningKey

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            return self.private_key.sign(data, padding.PKCS1v15(), algorithm)
        return self.private_key.sign(data, ec.ECDSA(algorithm))

    def decrypt(self, ciphertext: bytes, pad: AsymmetricPadding) -> bytes:
        if not isinstance(self.private_key, rsa.RSAPrivateKey):
            raise ValueError("only RSA keys decrypt")
        return self.private_key.decrypt(ciphertext, pad)


def parse_private_key(pem: bytes, origin: str) -> SigningKey:
    try:
        key: PrivateKeyTypes = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        # The library's message never contains key material.
        raise KeyLoadError(f"cannot load private key {origin}", detail=f"{origin}: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KeyLoadError(f"{origin}: only RSA and EC keys are supported")
    return key


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyLoadError(
            f"cannot read {path}", detail=f"cannot read {path}: {exc.strerror}"
        ) from None


def load_certificates(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(read_file(path))
    except ValueError as exc:
        raise KeyLoadError(f"cannot load certificate {path}", detail=f"{path}: {exc}") from None
    return certs


def load_key_pair(cert_path: Path, key_pem: bytes, key_origin: str) -> KeyPair:
    certificate = load_certificates(cert_path)[0]
    key = parse_private_key(key_pem, key_origin)
    if certificate.public_key() != key.public_key():
        raise KeyLoadError(
            f"{key_origin} is not the key of {cert_path}",
            detail=f"{key_origin} is not the key of {cert_path}",
        )
    return KeyPair(certificate=certificate, private_key=key)


def data_path(data_dir: Path, path: str) -> Path:
    """Relative paths in the configuration are relative to the data directory."""
    p = Path(path)
    return p if p.is_absolute() else data_dir / p


def open_mode(path: Path) -> int | None:
    """The permission bits of ``path`` (after symlinks) if group or others have any access;
    None if only the owner has, or the file cannot be looked at (loading reports that)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        return None
    return mode if mode & 0o077 else None


def write_private_key(path: Path, key: SigningKey, *, exclusive: bool = False) -> None:
    """Write a key readable by its owner only (0600 whatever the umask).

    ``exclusive``: fail with FileExistsError rather than replace an existing file, so that a
    key, once written, is the only one ever written there.
    """
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_file(path, data, exclusive=exclusive)


def write_private_file(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to a file of mode 0600 (whatever the umask), created if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def write_certificates(path: Path, certificates: list[x509.Certificate]) -> None:
    """Write certificates (public: 0644) by rename, so no reader sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates))
    os.replace(partial, path)
