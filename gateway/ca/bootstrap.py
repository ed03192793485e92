"""Create CA and RA key material that a configuration asks for and that does not exist yet."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509

from gateway.ca.local import LocalCA, create_root, generate_key, issue_ra_pair
from gateway.config.model import CaConfig, KeyPairConfig
from gateway.keys.files import KeyPair, data_path, write_certificates, write_private_key

log = logging.getLogger(__name__)


def _write_pair(data_dir: Path, cfg: KeyPairConfig, pair: KeyPair) -> None:
    if cfg.key.file is None:
        raise ValueError("a created key needs a `key: {file: ...}` reference")
    write_private_key(data_path(data_dir, cfg.key.file), pair.private_key)
    write_certificates(data_path(data_dir, cfg.certificate), [pair.certificate])


def ensure_ca(data_dir: Path, cfg: CaConfig, *, now: datetime) -> bool:
    """Create the self-signed CA of ``cfg.create`` if its files are missing. True if created."""
    if cfg.create is None or data_path(data_dir, cfg.certificate).exists():
        return False
    spec = cfg.create
    key = generate_key(spec.key_type, spec.key_size)
    cert = create_root(
        x509.Name.from_rfc4514_string(spec.subject),
        key,
        serial=x509.random_serial_number(),
        now=now,
        validity=timedelta(days=spec.validity_days),
        digest=cfg.digest,
    )
    _write_pair(data_dir, KeyPairConfig(cfg.certificate, cfg.key), KeyPair(cert, key))
    log.info("created CA %s (%s)", cfg.name, spec.subject)
    return True


def issue_ra(data_dir: Path, cfg: CaConfig, ca: LocalCA, *, now: datetime) -> None:
    """Issue (or re-issue) the RA signing and encryption pair of ``cfg.ra``."""
    if cfg.ra is None:
        raise ValueError(f"CA {cfg.name} has no `ra` section")
    signer, encrypter = issue_ra_pair(
        ca,
        now=now,
        serials=(x509.random_serial_number(), x509.random_serial_number()),
        validity=timedelta(days=cfg.ra.validity_days),
    )
    _write_pair(data_dir, cfg.ra.signer, signer)
    _write_pair(data_dir, cfg.ra.encrypter, encrypter)
    log.info("issued RA pair for CA %s", cfg.name)
