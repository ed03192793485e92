"""Frozen configuration values, built from validated YAML (DESIGN.md section 3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PHASES = ("authenticate", "authorize", "renewal", "naming", "profile", "approval")


@dataclass(frozen=True)
class SecretRef:
    """``{file: PATH}`` or ``{env: NAME}``; resolved at assembly, never stored inline."""

    file: str | None = None
    env: str | None = None
    generate: bool = False  # first start creates a random secret file


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
class CrlSettings:
    validity_hours: int = 24
    refresh_before_hours: int = 6


@dataclass(frozen=True)
class Rollover:
    certificate: str
    key: SecretRef
    signer: KeyPairConfig | None = None
    encrypter: KeyPairConfig | None = None


@dataclass(frozen=True)
class CaConfig:
    name: str
    source: str
    certificate: str
    key: SecretRef
    digest: str = "sha256"
    create: CaCreate | None = None
    ra: RaConfig | None = None
    crl: CrlSettings = CrlSettings()
    rollover: Rollover | None = None


@dataclass(frozen=True)
class PolicyConfig:
    type: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    where: str = ""  # json path in the alias file, for error messages


@dataclass(frozen=True)
class Renewal:
    enabled: bool = False
    allow_same_key: bool = False
    after_fraction: float = 0.5


@dataclass(frozen=True)
class NameScheme:
    scheme: str = "DN"
    parameters: str = "CN"
    prefix: str = ""
    postfix: str = ""


@dataclass(frozen=True)
class RaMode:
    secret: SecretRef | None = None
    name: NameScheme = NameScheme()


@dataclass(frozen=True)
class Approval:
    required: bool = False
    expire_hours: int = 72
    max_pending: int = 1000


@dataclass(frozen=True)
class AliasConfig:
    name: str
    source: str
    mode: str = "ca"
    preset: str | None = None
    ca: str | None = None
    cas: tuple[str, ...] = ()
    ca_identifiers: tuple[str, ...] = ()
    unknown_ca_identifier: str = "own_ca"
    scep_keys: str = "ca"
    certificate_profile: str = "default"
    end_entity_profile: str = "default"
    include_ca_certificate: bool = True
    return_ca_chain: bool = False
    chain_order: str = "leaf_first"
    response_cipher: str = "mirror"
    refuse_single_des: bool = False
    response_digest: str = "sha256"
    capabilities: tuple[str, ...] = (
        "POSTPKIOperation",
        "SHA-256",
        "SHA-512",
        "SHA-1",
        "AES",
        "DES3",
        "SCEPStandard",
    )
    renewal: Renewal = Renewal()
    ra: RaMode = RaMode()
    approval: Approval = Approval()
    max_signing_time_skew_seconds: int | None = None
    policies: Mapping[str, tuple[PolicyConfig, ...]] = field(default_factory=dict)
    # Where each effective top-level value came from: "file", "preset NAME: reason", "default".
    origins: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyAlgorithms:
    rsa_min_bits: int | None = 2048
    rsa_max_bits: int = 8192
    ec_curves: tuple[str, ...] = ("secp256r1", "secp384r1")
    ed25519: bool = False


@dataclass(frozen=True)
class SanRules:
    mode: str = "drop"
    dns: tuple[str, ...] = ()
    email: tuple[str, ...] = ()
    uri: tuple[str, ...] = ()
    ip: tuple[str, ...] = ()
    allow_wildcards: bool = False  # a requested `*.example.com` dNSName (gateway/policy/names)


@dataclass(frozen=True)
class CertificateProfile:
    name: str
    source: str
    validity_days: int = 365
    key_usage: tuple[str, ...] = ("digital_signature", "key_encipherment")
    extended_key_usage: tuple[str, ...] = ("client_auth",)
    key_algorithms: KeyAlgorithms = KeyAlgorithms()
    signature_digest: str | None = None
    subject_alt_names: SanRules = SanRules()
    crl_distribution_points: tuple[str, ...] = ()
    ca_issuers: tuple[str, ...] = ()
    ocsp: tuple[str, ...] = ()


@dataclass(frozen=True)
class EndEntityProfile:
    name: str
    source: str
    required: tuple[str, ...] = ("CN",)
    allowed: tuple[str, ...] | None = None
    defaults: Mapping[str, str] = field(default_factory=dict)
    approval_required: bool = False
    max_failed_attempts: int | None = 5


@dataclass(frozen=True)
class Config:
    aliases: dict[str, AliasConfig] = field(default_factory=dict)
    cas: dict[str, CaConfig] = field(default_factory=dict)
    certificate_profiles: dict[str, CertificateProfile] = field(default_factory=dict)
    end_entity_profiles: dict[str, EndEntityProfile] = field(default_factory=dict)
