"""Frozen configuration values, built from validated YAML (DESIGN.md section 3)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SecretRef:
    """``{file: PATH}`` or ``{env: NAME}``; resolved at assembly, never stored inline."""

    file: str | None = None
    env: str | None = None


@dataclass(frozen=True)
class KeyPairConfig:
    certificate: str
    key: SecretRef


@dataclass(frozen=True)
class CaCreate:
    subject: str
    key_type: str = "rsa"
    key_size: int = 2048
    validity_days: int = 3650


@dataclass(frozen=True)
class RaConfig:
    signer: KeyPairConfig
    encrypter: KeyPairConfig
    validity_days: int = 730


@dataclass(frozen=True)
class CaConfig:
    name: str
    source: str
    certificate: str
    key: SecretRef
    digest: str = "sha256"
    create: CaCreate | None = None
    ra: RaConfig | None = None


@dataclass(frozen=True)
class AliasConfig:
    name: str
    source: str
    mode: str
    ca: str | None = None
    cas: tuple[str, ...] = ()
    scep_keys: str = "ca"
    include_ca_certificate: bool = True
    return_ca_chain: bool = False
    validity_days: int = 365
    mirror_sha1: bool = False
    max_signing_time_skew_seconds: int | None = None


@dataclass(frozen=True)
class Config:
    aliases: dict[str, AliasConfig] = field(default_factory=dict)
    cas: dict[str, CaConfig] = field(default_factory=dict)
