"""Test helpers: a configured gateway in a temporary directory, and a SCEP device."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gateway.ca.local import generate_key
from gateway.policy.codes import hash_code
from gateway.scep import client
from gateway.scep.messages import MessageType
from gateway.store import EndEntity, EntityStatus, Store

REPO = Path(__file__).resolve().parents[1]
CONFIG_EXAMPLE = REPO / "config.example"
_KEYS: list[rsa.RSAPrivateKey] = []


@dataclass
class Clock:
    """The gateway's "now" in a test: moved by the test, never by sleeping."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __call__(self) -> datetime:
        return self.now


def copy_config(tmp: Path) -> Path:
    target = tmp / "config"
    shutil.copytree(CONFIG_EXAMPLE, target)
    return target


def rsa_key() -> rsa.RSAPrivateKey:
    """Fresh 2048-bit keys are slow; tests that do not care about uniqueness share a few."""
    if len(_KEYS) < 4:
        _KEYS.append(fresh_key())
        return _KEYS[-1]
    return _KEYS[os.urandom(1)[0] % len(_KEYS)]


def fresh_key() -> rsa.RSAPrivateKey:
    """A key no other device in the test shares."""
    key = generate_key("rsa", 2048)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


async def register(
    store: Store, username: str, code: str, *, dn: str | None = None, ca: str = "ManagementCA"
) -> None:
    now = datetime.now(UTC)
    await store.add_end_entity(
        EndEntity(
            username=username,
            code_hash=hash_code(code),
            subject_dn=dn or f"CN={username}",
            ca=ca,
            status=EntityStatus.NEW,
            created_at=now,
            updated_at=now,
        )
    )


@dataclass
class Device:
    """A SCEP client with its own key and throwaway signer certificate."""

    common_name: str
    key: rsa.RSAPrivateKey = field(default_factory=rsa_key)
    signer: client.Identity | None = None

    def __post_init__(self) -> None:
        if self.signer is None:
            self.signer = client.self_signed(self.key, self.common_name)

    @property
    def identity(self) -> client.Identity:
        assert self.signer is not None
        return self.signer

    def csr(self, challenge: str | None, subject: x509.Name | None = None) -> bytes:
        return client.csr(self.key, subject or cn(self.common_name), challenge=challenge)

    def message(
        self,
        payload: bytes,
        recipients: Sequence[x509.Certificate],
        *,
        message_type: MessageType = MessageType.PKCS_REQ,
        transaction_id: str = "tid-1",
        nonce: bytes | None = None,
        **options: Any,
    ) -> bytes:
        return client.pki_message(
            message_type,
            payload,
            signer=self.identity,
            recipients=recipients,
            transaction_id=transaction_id,
            sender_nonce=nonce or os.urandom(16),
            random=os.urandom(64),
            **options,
        )

    def pkcsreq(
        self,
        challenge: str | None,
        recipients: Sequence[x509.Certificate],
        **options: Any,
    ) -> bytes:
        return self.message(self.csr(challenge), recipients, **options)

    def read(self, body: bytes) -> client.CertRep:
        return client.read_cert_rep(body, recipient=self.identity)
