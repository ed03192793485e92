"""Create CA and RA key material that a configuration asks for and that does not exist yet."""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.ca.local import LocalCA, create_root, generate_key, issue_ra_pair
from gateway.config.model import CaConfig, CaCreate, KeyPairConfig
from gateway.keys.files import KeyPair, data_path, write_certificates, write_private_key

log = logging.getLogger(__name__)


LOCK_FILE = ".scep-gateway-create.lock"


@contextmanager
def creation_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's creation lock: one process at a time decides what is missing
    and creates it. Every `serve --workers` worker reloads by itself; without the lock each
    would create its own key for a CA added while running, and the last write would win."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_pair(
    data_dir: Path, cfg: KeyPairConfig, pair: KeyPair, *, exclusive: bool = False
) -> None:
    """Key first, then the certificate (whose presence means "created"). ``exclusive``: never
    replace an existing key file (FileExistsError)."""
    if cfg.key.file is None:
        raise ValueError("a created key needs a `key: {file: ...}` reference")
    write_private_key(data_path(data_dir, cfg.key.file), pair.private_key, exclusive=exclusive)
    write_certificates(data_path(data_dir, cfg.certificate), [pair.certificate])


def new_ca(spec: CaCreate, *, digest: str, now: datetime) -> KeyPair:
    """A self-signed CA as ``create`` describes it (in memory; the caller decides on files)."""
    key = generate_key(spec.key_type, spec.key_size)
    cert = create_root(
        x509.Name.from_rfc4514_string(spec.subject),
        key,
        serial=x509.random_serial_number(),
        now=now,
        validity=timedelta(days=spec.validity_days),
        digest=digest,
    )
    return KeyPair(cert, key)


def new_ra(cfg: CaConfig, ca: LocalCA, *, now: datetime) -> tuple[KeyPair, KeyPair]:
    """The RA signing and encryption pair of ``cfg.ra``, issued by ``ca`` (in memory)."""
    if cfg.ra is None:
        raise ValueError(f"CA {cfg.name} has no `ra` section")
    return issue_ra_pair(
        ca,
        now=now,
        serials=(x509.random_serial_number(), x509.random_serial_number()),
        validity=timedelta(days=cfg.ra.validity_days),
    )


def issue_ra(
    data_dir: Path, cfg: CaConfig, ca: LocalCA, *, now: datetime, exclusive: bool = False
) -> None:
    """Issue (or re-issue) the RA pair of ``cfg.ra`` and write it where the config says."""
    signer, encrypter = new_ra(cfg, ca, now=now)
    assert cfg.ra is not None  # new_ra checked
    write_pair(data_dir, cfg.ra.signer, signer, exclusive=exclusive)
    write_pair(data_dir, cfg.ra.encrypter, encrypter, exclusive=exclusive)
    log.info("issued RA pair for CA %s", cfg.name)


def new_rollover(current: LocalCA, *, activate_at: datetime) -> KeyPair:
    """The next self-signed CA: same subject, key type and lifetime, valid from activation."""
    cert = current.certificate
    if cert.issuer != cert.subject:
        raise ValueError(
            "only self-signed CAs roll over here; have the parent issue the next certificate "
            "and point `rollover.certificate` at it"
        )
    old_key = current.key_pair.private_key
    key = generate_key("rsa" if isinstance(old_key, rsa.RSAPrivateKey) else "ec", old_key.key_size)
    return KeyPair(
        create_root(
            cert.subject,
            key,
            serial=x509.random_serial_number(),
            now=activate_at,
            validity=cert.not_valid_after_utc - cert.not_valid_before_utc,
            digest=current.digest,
            backdate=timedelta(0),
        ),
        key,
    )
