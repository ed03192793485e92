"""Config model -> runtime objects: keys loaded, CAs built, per-alias answers prepared."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.ca import bootstrap
from gateway.ca.local import LocalCA
from gateway.config.model import AliasConfig, CaConfig, Config, KeyPairConfig, SecretRef
from gateway.errors import ConfigError, ConfigIssue
from gateway.keys.files import (
    KeyLoadError,
    KeyPair,
    data_path,
    load_certificates,
    load_key_pair,
    open_mode,
    read_file,
    write_private_file,
)
from gateway.policy import names
from gateway.policy import pipeline as policy_pipeline
from gateway.policy.codes import random_text
from gateway.registry import AliasRuntime, CaRuntime, ScepKeys, Snapshot
from gateway.scep import cms as scep_cms
from gateway.scep.crypto import KeyDecrypter

log = logging.getLogger(__name__)


def _key_pem(data_dir: Path, ref: SecretRef) -> tuple[bytes, str]:
    if ref.file is not None:
        path = data_path(data_dir, ref.file)
        return read_file(path), str(path)
    name = ref.env or ""
    value = os.environ.get(name)
    if value is None:
        raise KeyLoadError(f"environment variable {name} is not set")
    return value.encode(), f"environment variable {name}"


def _pair(data_dir: Path, cfg: KeyPairConfig, source: str, where: str) -> KeyPair:
    try:
        pem, origin = _key_pem(data_dir, cfg.key)
        return load_key_pair(data_path(data_dir, cfg.certificate), pem, origin)
    except KeyLoadError as exc:
        raise ConfigError([ConfigIssue(source, where, exc.detail)]) from None


def _missing(data_dir: Path, cfg: KeyPairConfig) -> bool:
    return not data_path(data_dir, cfg.certificate).exists()


def build_ca(data_dir: Path, cfg: CaConfig, *, in_memory: bool = False) -> CaRuntime:
    """Load a CA's files. ``in_memory``: files that `create`/`ra` would make on first start
    are generated in memory instead (check-config validates without writing)."""
    own = KeyPairConfig(cfg.certificate, cfg.key)
    chain: list[x509.Certificate] = []
    if in_memory and cfg.create is not None and _missing(data_dir, own):
        pair = bootstrap.new_ca(cfg.create, digest=cfg.digest, now=datetime.now(UTC))
    else:
        pair = _pair(data_dir, own, cfg.source, "$")
        chain = load_certificates(data_path(data_dir, cfg.certificate))[1:]  # read just above
    issuer = LocalCA(name=cfg.name, key_pair=pair, digest=cfg.digest)
    ra_signer = ra_encrypter = None
    if cfg.ra is not None:
        if in_memory and _missing(data_dir, cfg.ra.signer):
            ra_signer, ra_encrypter = bootstrap.new_ra(cfg, issuer, now=datetime.now(UTC))
        else:
            ra_signer = _pair(data_dir, cfg.ra.signer, cfg.source, "$.ra.signer")
            ra_encrypter = _pair(data_dir, cfg.ra.encrypter, cfg.source, "$.ra.encrypter")
    runtime = CaRuntime(
        name=cfg.name,
        issuer=issuer,
        chain=tuple(chain),
        ra_signer=ra_signer,
        ra_encrypter=ra_encrypter,
        crl=cfg.crl,
        next=_next_generation(data_dir, cfg),
    )
    check_decrypters(cfg.source, _decrypting_keys(runtime))
    return runtime


def _decrypting_keys(ca: CaRuntime) -> dict[str, KeyDecrypter]:
    """The RSA keys of a CA that may open requests, by config path: its own key, its RA
    encrypter, and those of its rollover generation. Probed once per CA, whatever the number
    of aliases that use them."""
    keys: dict[str, KeyDecrypter] = {}
    for where, generation in (("$", ca), ("$.rollover", ca.next)):
        if generation is None:
            continue
        if isinstance(generation.issuer.key_pair.private_key, rsa.RSAPrivateKey):
            keys[f"{where}.key"] = generation.issuer.key_pair
        if generation.ra_encrypter is not None:
            keys[f"{where}.ra.encrypter"] = generation.ra_encrypter
    return keys


def _next_generation(data_dir: Path, cfg: CaConfig) -> CaRuntime | None:
    """The rollover generation, once `scep-gateway ca rollover` has written it."""
    rollover = cfg.rollover
    if rollover is None or _missing(data_dir, KeyPairConfig(rollover.certificate, rollover.key)):
        return None
    pair = _pair(
        data_dir, KeyPairConfig(rollover.certificate, rollover.key), cfg.source, "$.rollover"
    )
    # As for the current certificate: the file may carry the issuers (an intermediate CA
    # whose parent issued the next certificate).
    chain = load_certificates(data_path(data_dir, rollover.certificate))[1:]
    signer = encrypter = None
    if rollover.signer is not None and rollover.encrypter is not None:
        signer = _pair(data_dir, rollover.signer, cfg.source, "$.rollover.ra.signer")
        encrypter = _pair(data_dir, rollover.encrypter, cfg.source, "$.rollover.ra.encrypter")
    return CaRuntime(
        name=cfg.name,
        issuer=LocalCA(name=cfg.name, key_pair=pair, digest=cfg.digest),
        chain=tuple(chain),
        ra_signer=signer,
        ra_encrypter=encrypter,
        crl=cfg.crl,
    )


def _keys(alias: AliasConfig, ca: CaRuntime) -> ScepKeys:
    if alias.scep_keys == "ra":
        # The loader refuses `scep_keys: ra` on a CA without `ra`.
        assert ca.ra_signer is not None
        assert ca.ra_encrypter is not None
        return ScepKeys(ca=ca, signer=ca.ra_signer, decrypter=ca.ra_encrypter)
    return ScepKeys(ca=ca, signer=ca.issuer.key_pair, decrypter=ca.issuer.key_pair)


def secret_reader(
    data_dir: Path, source: str, *, in_memory: bool = False
) -> Callable[[SecretRef, str], bytes]:
    """Resolve ``{file: ...}`` / ``{env: ...}`` secrets, reporting problems against ``source``.

    ``in_memory``: a missing file that first start would generate stands in as a random value.
    """

    def read(ref: SecretRef, where: str) -> bytes:
        try:
            if ref.file is not None and in_memory and ref.generate:
                path = data_path(data_dir, ref.file)
                value = path.read_bytes() if path.exists() else secrets.token_hex(12).encode()
            elif ref.file is not None:
                value = read_file(data_path(data_dir, ref.file))
            else:
                env = os.environ.get(ref.env or "")
                if env is None:
                    raise KeyLoadError(f"environment variable {ref.env} is not set")
                value = env.encode("utf-8")
        except KeyLoadError as exc:
            raise ConfigError([ConfigIssue(source, where, exc.detail)]) from None
        # A file written with `echo` ends in a newline that is not part of the secret.
        value = value.removesuffix(b"\n").removesuffix(b"\r")
        if not value:
            raise ConfigError([ConfigIssue(source, where, "the secret is empty")])
        return value

    return read


def check_decrypters(source: str, decrypters: Mapping[str, KeyDecrypter]) -> None:
    """Refuse keys (by config path) that would answer PKCS#1 v1.5 errors as errors: see
    ``scep.cms.rejects_implicitly``. One private-key operation per key and load."""
    issues = []
    for where, decrypter in decrypters.items():
        if not scep_cms.rejects_implicitly(decrypter):
            issues.append(
                ConfigIssue(
                    source,
                    where,
                    "the key does not reject bad PKCS#1 v1.5 padding implicitly (OpenSSL 3.2 "
                    "or newer does); decrypting requests with it would be a timing oracle",
                )
            )
    if issues:
        raise ConfigError(issues)


def build_alias(
    alias: AliasConfig,
    config: Config,
    cas: dict[str, CaRuntime],
    data_dir: Path,
    *,
    in_memory: bool = False,
) -> AliasRuntime:
    names = [n for n in (alias.ca, *alias.cas) if n is not None]
    certificate_profile = config.certificate_profiles[alias.certificate_profile]
    pipeline = policy_pipeline.build(
        policy_pipeline.BuildContext(
            alias=alias,
            certificate_profile=certificate_profile,
            end_entity_profile=config.end_entity_profiles[alias.end_entity_profile],
            secret=secret_reader(data_dir, alias.source, in_memory=in_memory),
            reserved_subjects=reserved_subjects(cas),
        )
    )
    keys = tuple(_keys(alias, generation) for n in names for generation in cas[n].generations)
    return AliasRuntime(
        config=alias,
        own_ca=cas[alias.ca] if alias.ca else None,
        cas={n: cas[n] for n in names},
        keys=keys,
        pipeline=pipeline,
        certificate_profile=certificate_profile,
    )


def reserved_subjects(cas: dict[str, CaRuntime]) -> frozenset[names.NameKey]:
    """The subjects no issued certificate may have: every CA generation, its issuers and RA
    certificates, of every CA in the snapshot (not only the alias's own)."""
    certificates = [
        cert
        for ca in cas.values()
        for generation in ca.generations
        for cert in (
            generation.certificate,
            *generation.chain,
            *(p.certificate for p in (generation.ra_signer, generation.ra_encrypter) if p),
        )
    ]
    return frozenset(names.name_key(c.subject) for c in certificates)


def assemble(config: Config, data_dir: Path, *, in_memory: bool = False) -> Snapshot:
    """Build every runtime object, or raise ConfigError with every problem found."""
    issues: list[ConfigIssue] = []
    cas: dict[str, CaRuntime] = {}
    for cfg in config.cas.values():
        try:
            cas[cfg.name] = build_ca(data_dir, cfg, in_memory=in_memory)
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)
    aliases = {}
    for name, alias in config.aliases.items():
        try:
            aliases[name] = build_alias(alias, config, cas, data_dir, in_memory=in_memory)
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)
    return Snapshot(aliases=aliases, cas=cas)


def _exists_without_certificate(source: str, exc: FileExistsError) -> ConfigIssue:
    # A key without its certificate (a crash between the two writes, or a file put there by
    # hand) is never replaced: something may already use it.
    return ConfigIssue(
        source,
        "$",
        f"key file {exc.filename} exists without its certificate: supply the certificate, "
        "or remove the key to have a new one created",
    )


def _file_refs(config: Config) -> list[tuple[str, str, str, SecretRef]]:
    """(source, JSON path, kind, reference) of every key and secret the config names."""
    refs: list[tuple[str, str, str, SecretRef]] = []
    for ca in config.cas.values():
        pairs: list[tuple[str, KeyPairConfig | None]] = []
        if ca.ra is not None:
            pairs += [("$.ra.signer", ca.ra.signer), ("$.ra.encrypter", ca.ra.encrypter)]
        refs.append((ca.source, "$.key", "key", ca.key))
        if ca.rollover is not None:
            refs.append((ca.source, "$.rollover.key", "key", ca.rollover.key))
            pairs += [
                ("$.rollover.ra.signer", ca.rollover.signer),
                ("$.rollover.ra.encrypter", ca.rollover.encrypter),
            ]
        refs += [(ca.source, f"{w}.key", "key", pair.key) for w, pair in pairs if pair is not None]
    for alias in config.aliases.values():
        if alias.ra.secret is not None:
            refs.append((alias.source, "$.ra.secret", "secret", alias.ra.secret))
        for policies in alias.policies.values():
            refs += [
                (alias.source, f"{p.where}.secret", "secret", ref)
                for p in policies
                if isinstance(ref := p.parameters.get("secret"), SecretRef)
            ]
    return refs


def permission_warnings(config: Config, data_dir: Path) -> list[ConfigIssue]:
    """Key and secret files that group or others may read, as OpenSSH reports private keys.

    Warnings, not errors: a Kubernetes Secret volume is 0644 unless `defaultMode` says
    otherwise, and refusing it would stop a pod that is not exposed (docs/security.md)."""
    warnings = []
    for source, where, kind, ref in _file_refs(config):
        if ref.file is None:
            continue
        path = data_path(data_dir, ref.file)
        mode = open_mode(path)
        if mode is not None:
            who = "readable" if mode & 0o044 else "accessible"
            warnings.append(
                ConfigIssue(
                    source,
                    where,
                    f"{kind} file {path} is {who} by group/others (mode {mode:04o}); chmod 600 it",
                )
            )
    return warnings


def _generate_secrets(config: Config, data_dir: Path) -> None:
    for alias in config.aliases.values():
        refs = [alias.ra.secret] + [
            p.parameters.get("secret") for ps in alias.policies.values() for p in ps
        ]
        for ref in refs:
            if isinstance(ref, SecretRef) and ref.generate and ref.file:
                path = data_path(data_dir, ref.file)
                if not path.exists():
                    secret = random_text(os.urandom, 24) + "\n"
                    write_private_file(path, secret.encode(), exclusive=True)
                    log.info("created secret file %s for alias %s", path, alias.name)


def prepare(config: Config, data_dir: Path, *, now: datetime) -> None:
    """Create the CAs, RA pairs and secret files the config asks for and that do not exist:
    on first start, and on a reload that adds them.

    Under the data directory's creation lock, with keys written O_EXCL: however many workers
    (or commands) run this at once, each key is created exactly once and all load that one.
    """
    issues = []
    with bootstrap.creation_lock(data_dir):
        _generate_secrets(config, data_dir)
        for cfg in config.cas.values():
            try:
                _create_ca(cfg, data_dir, now=now)
            except FileExistsError as exc:
                issues.append(_exists_without_certificate(cfg.source, exc))
    if issues:
        raise ConfigError(issues)


def _create_ca(cfg: CaConfig, data_dir: Path, *, now: datetime) -> None:
    own = KeyPairConfig(cfg.certificate, cfg.key)
    if cfg.create is not None and _missing(data_dir, own):
        pair = bootstrap.new_ca(cfg.create, digest=cfg.digest, now=now)
        bootstrap.write_pair(data_dir, own, pair, exclusive=True)
        log.info("created CA %s (%s)", cfg.name, cfg.create.subject)
    if cfg.ra is not None and _missing(data_dir, cfg.ra.signer):
        without_ra = CaConfig(cfg.name, cfg.source, cfg.certificate, cfg.key, cfg.digest)
        issuer = build_ca(data_dir, without_ra).issuer
        bootstrap.issue_ra(data_dir, cfg, issuer, now=now, exclusive=True)
