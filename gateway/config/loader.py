"""Read a configuration directory: YAML -> JSON Schema -> frozen dataclasses.

Every problem is collected as ``file:json.path: message``; nothing is returned unless the
whole directory is valid. Defaults come from the schemas (the single source the reference
documentation is generated from), then the alias's preset, then the file.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from cryptography import x509
from referencing import Registry, Resource

from gateway.config import messages, presets, resources
from gateway.config.model import (
    PHASES,
    AliasConfig,
    Approval,
    CaConfig,
    CaCreate,
    CertificateProfile,
    Config,
    CrlSettings,
    EndEntityProfile,
    KeyAlgorithms,
    KeyPairConfig,
    NameScheme,
    PolicyConfig,
    RaConfig,
    RaMode,
    Renewal,
    Rollover,
    SanRules,
    SecretRef,
)
from gateway.errors import ConfigError, ConfigIssue
from gateway.policy import names


@dataclass(frozen=True)
class Kind:
    folder: str
    schema: str


KINDS = (
    Kind("cas", "ca"),
    Kind("profiles/certificate", "certificate-profile"),
    Kind("profiles/end-entity", "end-entity-profile"),
    Kind("aliases", "alias"),
)
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@cache
def _registry() -> Registry[Any]:
    return Registry().with_resources(
        (name, Resource.from_contents(contents)) for name, contents in resources.schemas().items()
    )


def schema(kind: str) -> dict[str, Any]:
    contents: dict[str, Any] = _registry()[f"{kind}.schema.json"].contents
    return contents


@cache
def validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema(kind), registry=_registry())


def _most_specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    # A failed `if/then` or `anyOf` says little; its context holds the error that matters.
    # Of `oneOf` branches, the one that got furthest into the value is the one meant
    # (`{env: bad-name}` is a bad env name, not a `file` reference with an unknown key).
    while error.context:
        deepest = max(len(e.absolute_path) for e in error.context)
        error = jsonschema.exceptions.best_match(
            e for e in error.context if len(e.absolute_path) == deepest
        )
    return error


def _is_secret_ref(error: jsonschema.ValidationError) -> bool:
    return isinstance(error.schema, dict) and error.schema.get("$id") == "secret.schema.json"


def schema_issues(kind: str, source: str, data: object) -> list[ConfigIssue]:
    """One issue per schema violation, naming the path and the rule, never the value."""
    found = [(e, _most_specific(e)) for e in validator(kind).iter_errors(data)]
    # Most specific first: the deepest path, then jsonschema's own relevance order.
    found.sort(key=lambda p: (-len(p[1].absolute_path), jsonschema.exceptions.relevance(p[1])))
    seen: set[tuple[str, str]] = set()
    issues = []
    for top, error in found:
        secret = _is_secret_ref(top) and error.absolute_path == top.absolute_path
        key = "propertyNames" in error.absolute_schema_path
        path = messages.json_path(error.absolute_path)
        for text in messages.rules(error, secret=secret, key=key):
            if (path, text) not in seen:
                seen.add((path, text))
                issues.append(ConfigIssue(source, path, text))
    return issues


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    base, _, pointer = ref.partition("#")
    target: dict[str, Any] = schema(base.removesuffix(".schema.json")) if base else {}
    for part in pointer.strip("/").split("/") if pointer else []:
        target = target[part]
    return target


def with_defaults(
    node_schema: dict[str, Any], data: Mapping[str, Any], root: str
) -> dict[str, Any]:
    """``data`` with every schema default filled in, recursively for nested objects."""
    result = dict(data)
    for name, prop in node_schema.get("properties", {}).items():
        if "$ref" in prop and prop["$ref"].startswith("#/"):
            resolved = _resolve({"$ref": f"{root}.schema.json{prop['$ref']}"})
        else:
            resolved = prop
        if name not in result and "default" in prop:
            result[name] = copy.deepcopy(prop["default"])
        if name in result and resolved.get("type") == "object" and "properties" in resolved:
            result[name] = with_defaults(resolved, result[name], root)
    return result


def _files(directory: Path, folder: str) -> Iterator[Path]:
    path = directory / folder
    if path.is_dir():
        yield from sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))


def _secret(value: Mapping[str, str] | None) -> SecretRef | None:
    if not value:
        return None
    return SecretRef(
        file=value.get("file"), env=value.get("env"), generate=bool(value.get("generate"))
    )


def _key_pair(value: Mapping[str, Any]) -> KeyPairConfig:
    key = _secret(value["key"])
    assert key is not None  # required by the schema
    return KeyPairConfig(certificate=value["certificate"], key=key)


def _ca(name: str, source: str, data: Mapping[str, Any]) -> CaConfig:
    create, ra = data.get("create"), data.get("ra")
    return CaConfig(
        name=name,
        source=source,
        certificate=data["certificate"],
        key=_key_pair(data).key,
        digest=data["digest"],
        create=CaCreate(**create) if create else None,
        ra=RaConfig(_key_pair(ra["signer"]), _key_pair(ra["encrypter"]), ra["validity_days"])
        if ra
        else None,
        crl=CrlSettings(**data["crl"]),
        rollover=_rollover(data.get("rollover")),
    )


def _rollover(data: Mapping[str, Any] | None) -> Rollover | None:
    if not data:
        return None
    ra = data.get("ra")
    return Rollover(
        certificate=data["certificate"],
        key=_key_pair(data).key,
        signer=_key_pair(ra["signer"]) if ra else None,
        encrypter=_key_pair(ra["encrypter"]) if ra else None,
    )


def _certificate_profile(name: str, source: str, data: Mapping[str, Any]) -> CertificateProfile:
    keys = data["key_algorithms"]
    rsa, ec = keys.get("rsa"), keys.get("ec")
    sans = data["subject_alt_names"]
    allow = sans["allow"]
    aia = data["authority_information_access"]
    return CertificateProfile(
        name=name,
        source=source,
        validity_days=data["validity_days"],
        key_usage=tuple(data["key_usage"]),
        extended_key_usage=tuple(data["extended_key_usage"]),
        key_algorithms=KeyAlgorithms(
            rsa_min_bits=rsa["min_bits"] if rsa else None,
            rsa_max_bits=rsa["max_bits"] if rsa else 0,
            ec_curves=tuple(ec["curves"]) if ec else (),
            ed25519=keys.get("ed25519", False),
        ),
        signature_digest=data.get("signature_digest"),
        subject_alt_names=SanRules(
            mode=sans["mode"],
            dns=tuple(allow["dns"]),
            email=tuple(allow["email"]),
            uri=tuple(allow["uri"]),
            ip=tuple(allow["ip"]),
            allow_wildcards=sans["allow_wildcards"],
        ),
        crl_distribution_points=tuple(data["crl_distribution_points"]),
        ca_issuers=tuple(aia["ca_issuers"]),
        ocsp=tuple(aia["ocsp"]),
    )


_SAN_PATTERNS = {
    "dns": names.parse_dns_pattern,
    "email": names.parse_email_pattern,
    "uri": names.parse_uri_pattern,
    "ip": names.parse_network,
}


def san_pattern_issues(profile: CertificateProfile) -> list[ConfigIssue]:
    """Every allow-list entry that is not a pattern under gateway/policy/names.py's rules;
    found here, not at the first request that needs it."""
    issues = []
    for kind, parse in _SAN_PATTERNS.items():
        for i, pattern in enumerate(getattr(profile.subject_alt_names, kind)):
            try:
                parse(pattern)
            except names.NameRefused as exc:
                where = f"$.subject_alt_names.allow.{kind}[{i}]"
                # ipaddress's own text quotes the value; the rule is enough.
                rule = "not an IP network in CIDR notation" if kind == "ip" else str(exc)
                issues.append(ConfigIssue(profile.source, where, f"not a valid pattern: {rule}"))
    return issues


def _end_entity_profile(name: str, source: str, data: Mapping[str, Any]) -> EndEntityProfile:
    subject = data["subject"]
    allowed = subject.get("allowed")
    return EndEntityProfile(
        name=name,
        source=source,
        required=tuple(subject["required"]),
        allowed=tuple(allowed) if allowed is not None else None,
        defaults=dict(subject["defaults"]),
        approval_required=data["approval_required"],
        max_failed_attempts=data["max_failed_attempts"],
    )


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def effective_alias(data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Schema defaults <- preset <- file, with where each top-level value came from."""
    preset_name = data.get("preset")
    preset = presets.PRESETS.get(preset_name, {}) if preset_name else {}
    preset_values = {k: v.value for k, v in preset.items()}
    merged = with_defaults(schema("alias"), _deep_merge(preset_values, data), "alias")
    origins = {}
    for key in merged:
        if key in data:
            origins[key] = "file"
        elif key in preset:
            origins[key] = f"preset {preset_name}: {preset[key].reason}"
        else:
            origins[key] = "default"
    return merged, origins


def _policies(data: Mapping[str, Any]) -> dict[str, tuple[PolicyConfig, ...]]:
    result = {}
    for phase in PHASES:
        if phase in data:
            result[phase] = tuple(
                PolicyConfig(
                    type=item["type"],
                    parameters={
                        k: _secret(v) if k == "secret" else v
                        for k, v in item.items()
                        if k != "type"
                    },
                    where=f"$.policies.{phase}[{i}]",
                )
                for i, item in enumerate(data[phase])
            )
    return result


def _alias(name: str, source: str, data: Mapping[str, Any]) -> AliasConfig:
    values, origins = effective_alias(data)
    ra = values["ra"]
    return AliasConfig(
        name=name,
        source=source,
        mode=values["mode"],
        preset=values.get("preset"),
        ca=values.get("ca"),
        cas=tuple(values["cas"]),
        ca_identifiers=tuple(values["ca_identifiers"]),
        unknown_ca_identifier=values["unknown_ca_identifier"],
        scep_keys=values["scep_keys"],
        certificate_profile=values["certificate_profile"],
        end_entity_profile=values["end_entity_profile"],
        include_ca_certificate=values["include_ca_certificate"],
        return_ca_chain=values["return_ca_chain"],
        chain_order=values["chain_order"],
        response_cipher=values["response_cipher"],
        refuse_single_des=values["refuse_single_des"],
        response_digest=values["response_digest"],
        capabilities=tuple(values["capabilities"])
        if "capabilities" in values
        else AliasConfig.capabilities,
        renewal=Renewal(**values["renewal"]),
        ra=RaMode(secret=_secret(ra.get("secret")), name=NameScheme(**ra["name"])),
        approval=Approval(**values["approval"]),
        max_signing_time_skew_seconds=values["max_signing_time_skew_seconds"],
        policies=_policies(values["policies"]),
        origins=origins,
    )


_BUILDERS = {
    "ca": _ca,
    "certificate-profile": _certificate_profile,
    "end-entity-profile": _end_entity_profile,
}


def load(directory: Path) -> Config:
    """Load and validate a whole configuration directory, or raise ConfigError."""
    if not directory.is_dir():
        raise ConfigError([ConfigIssue(str(directory), "$", "not a directory")])
    issues: list[ConfigIssue] = []
    invalid: set[tuple[str, str]] = set()  # files already reported: no follow-on errors
    config = Config()
    targets: dict[str, dict[str, Any]] = {
        "ca": config.cas,
        "certificate-profile": config.certificate_profiles,
        "end-entity-profile": config.end_entity_profiles,
        "alias": config.aliases,
    }
    # `default` profiles are built in; a file of that name replaces them.
    config.certificate_profiles["default"] = _builtin("certificate-profile")
    config.end_entity_profiles["default"] = _builtin("end-entity-profile")
    for kind in KINDS:
        for path in _files(directory, kind.folder):
            source = str(path.relative_to(directory))
            name = path.stem
            if not _NAME.match(name):
                issues.append(
                    ConfigIssue(source, "$", f"invalid name {name!r}: use A-Z a-z 0-9 . _ -")
                )
                continue
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                issues.append(ConfigIssue(source, "$", _read_error(exc)))
                invalid.add((kind.schema, name))
                continue
            data = {} if data is None else data
            found = schema_issues(kind.schema, source, data)
            if found:
                issues.extend(found)
                invalid.add((kind.schema, name))
                continue
            if kind.schema == "alias":
                config.aliases[name] = _alias(name, source, data)
            else:
                defaulted = with_defaults(schema(kind.schema), data, kind.schema)
                targets[kind.schema][name] = _BUILDERS[kind.schema](name, source, defaulted)
                if kind.schema == "certificate-profile":
                    issues.extend(san_pattern_issues(targets[kind.schema][name]))
    issues.extend(references(config, invalid))
    issues.extend(value_issues(config))
    if issues:
        raise ConfigError(issues)
    return config


# PyYAML quotes what it found (an undefined alias `*hunter2`, an unknown tag): keep only its
# token names (`'<stream end>'`) and single characters, never the text of the file.
_QUOTED = re.compile(r"'([^']*)'")


def _token(match: re.Match[str]) -> str:
    inner = match.group(1)
    return match.group(0) if len(inner) <= 2 or re.fullmatch(r"<[a-z ]+>", inner) else "(...)"


def _read_error(exc: Exception) -> str:
    """One line, whatever the YAML parser's message looks like, without the file's text."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        problem = _QUOTED.sub(_token, " ".join(str(exc.problem).split()))
        return f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 (byte {exc.start})"
    if isinstance(exc, OSError):
        return f"cannot read: {exc.strerror}"
    return f"cannot read YAML: {type(exc).__name__}"


def references(
    config: Config, invalid: AbstractSet[tuple[str, str]] = frozenset()
) -> list[ConfigIssue]:
    """Semantic checks across files: every name an alias uses must exist.

    A name whose file exists but was already reported as invalid is not reported again.
    """
    issues = [
        ConfigIssue(ca.source, "$.rollover", "a CA with `ra` needs `rollover.ra` too")
        for ca in config.cas.values()
        if ca.ra is not None and ca.rollover is not None and ca.rollover.signer is None
    ]
    issues += [
        # Else every CRL request would sign a new CRL: it is always "about to expire".
        ConfigIssue(
            ca.source,
            "$.crl.refresh_before_hours",
            "must be less than crl.validity_hours",
        )
        for ca in config.cas.values()
        if ca.crl.refresh_before_hours >= ca.crl.validity_hours
    ]
    for alias in config.aliases.values():
        src = alias.source
        if alias.ca is None and not alias.cas:
            issues.append(ConfigIssue(src, "$", "an alias needs `ca` or `cas`"))
        for i, ca in enumerate((alias.ca, *alias.cas)):
            if ca is not None and ca not in config.cas and ("ca", ca) not in invalid:
                path = "$.ca" if i == 0 else f"$.cas[{i - 1}]"
                issues.append(ConfigIssue(src, path, f"unknown CA {ca!r}"))
            elif ca in config.cas and alias.scep_keys == "ra" and config.cas[ca].ra is None:
                issues.append(
                    ConfigIssue(src, "$.scep_keys", f"CA {ca!r} has no `ra` key pair configured")
                )
        if (
            alias.certificate_profile not in config.certificate_profiles
            and ("certificate-profile", alias.certificate_profile) not in invalid
        ):
            issues.append(
                ConfigIssue(
                    src,
                    "$.certificate_profile",
                    f"unknown certificate profile {alias.certificate_profile!r}",
                )
            )
        if (
            alias.end_entity_profile not in config.end_entity_profiles
            and ("end-entity-profile", alias.end_entity_profile) not in invalid
        ):
            issues.append(
                ConfigIssue(
                    src,
                    "$.end_entity_profile",
                    f"unknown end entity profile {alias.end_entity_profile!r}",
                )
            )
        authenticate = {p.type for p in alias.policies.get("authenticate", ())}
        if alias.mode == "ra" and "challenge.end_entity" in authenticate:
            issues.append(
                ConfigIssue(
                    src,
                    "$.policies.authenticate",
                    "challenge.end_entity needs registered end entities: use `mode: ca`",
                )
            )
        if alias.mode == "ra" and alias.ra.secret is None and "authenticate" not in alias.policies:
            issues.append(
                ConfigIssue(
                    src, "$.ra.secret", "RA mode needs a secret (or `policies.authenticate`)"
                )
            )
    return issues


def _parses(parse: Callable[[str], object], text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True


def value_issues(config: Config) -> list[ConfigIssue]:
    """Values the schema admits but the code would refuse later, outside ConfigError (and at
    request time, as an HTTP 500): each becomes an ordinary issue now."""
    issues = [
        ConfigIssue(ca.source, "$.create.subject", "not an RFC 4514 distinguished name")
        for ca in config.cas.values()
        if ca.create is not None and not _parses(x509.Name.from_rfc4514_string, ca.create.subject)
    ]
    for profile in config.certificate_profiles.values():
        issues += [
            ConfigIssue(profile.source, f"$.extended_key_usage[{i}]", "not a valid OID")
            for i, name in enumerate(profile.extended_key_usage)
            if "." in name and not _parses(x509.ObjectIdentifier, name)
        ]
    # SAN allow-list patterns, IP networks included: san_pattern_issues.
    return issues


def _builtin(kind: str) -> Any:
    return _BUILDERS[kind]("default", "built-in", with_defaults(schema(kind), {}, kind))


def effective_alias_values(alias: AliasConfig) -> dict[str, Any]:
    """The alias's effective settings as plain values, in schema order (for --explain)."""
    values = dataclasses.asdict(alias)
    for internal in ("name", "source", "origins", "policies"):
        values.pop(internal)
    if alias.ra.secret is not None:
        values["ra"]["secret"] = {k: v for k, v in values["ra"]["secret"].items() if v}
    order = list(schema("alias")["properties"])
    return {
        k: values[k] for k in sorted(values, key=lambda k: order.index(k) if k in order else 99)
    }
