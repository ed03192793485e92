"""Read a configuration directory: YAML -> JSON Schema -> frozen dataclasses.

Every problem is collected as ``file:json.path: message``; nothing is returned unless the
whole directory is valid.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

from gateway.config.model import (
    AliasConfig,
    CaConfig,
    CaCreate,
    Config,
    KeyPairConfig,
    RaConfig,
    SecretRef,
)
from gateway.errors import ConfigError, ConfigIssue

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
KINDS = {"aliases": "alias", "cas": "ca"}
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@cache
def _registry() -> Registry[Any]:
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.schema.json")):
        resources.append((path.name, Resource.from_contents(json.loads(path.read_text()))))
    return Registry().with_resources(resources)


@cache
def validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = _registry()[f"{kind}.schema.json"].contents
    return jsonschema.Draft202012Validator(schema, registry=_registry())


def _json_path(error: jsonschema.ValidationError) -> str:
    path = "$"
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _schema_issues(kind: str, source: str, data: object) -> list[ConfigIssue]:
    issues = []
    for error in validator(kind).iter_errors(data):
        best = jsonschema.exceptions.best_match([error])
        issues.append(ConfigIssue(source, _json_path(best), best.message))
    return sorted(issues, key=lambda i: (i.path, i.message))


def _files(directory: Path, sub: str) -> Iterator[Path]:
    folder = directory / sub
    if folder.is_dir():
        yield from sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))


def _secret(value: dict[str, str]) -> SecretRef:
    return SecretRef(file=value.get("file"), env=value.get("env"))


def _key_pair(value: dict[str, Any]) -> KeyPairConfig:
    return KeyPairConfig(certificate=value["certificate"], key=_secret(value["key"]))


def _ca(name: str, source: str, data: dict[str, Any]) -> CaConfig:
    create = data.get("create")
    ra = data.get("ra")
    return CaConfig(
        name=name,
        source=source,
        certificate=data["certificate"],
        key=_secret(data["key"]),
        digest=data.get("digest", "sha256"),
        create=CaCreate(**create) if create else None,
        ra=RaConfig(
            signer=_key_pair(ra["signer"]),
            encrypter=_key_pair(ra["encrypter"]),
            validity_days=ra.get("validity_days", 730),
        )
        if ra
        else None,
    )


def _alias(name: str, source: str, data: dict[str, Any]) -> AliasConfig:
    values = dict(data)
    values["cas"] = tuple(values.get("cas", ()))
    return AliasConfig(name=name, source=source, **values)


def load(directory: Path) -> Config:
    """Load and validate a whole configuration directory, or raise ConfigError."""
    issues: list[ConfigIssue] = []
    config = Config()
    if not directory.is_dir():
        raise ConfigError([ConfigIssue(str(directory), "$", "not a directory")])
    for sub, kind in KINDS.items():
        for path in _files(directory, sub):
            source = str(path.relative_to(directory))
            name = path.stem
            if not _NAME.match(name):
                issues.append(ConfigIssue(source, "$", f"invalid {kind} name {name!r}"))
                continue
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                issues.append(ConfigIssue(source, "$", f"cannot read YAML: {exc}"))
                continue
            found = _schema_issues(kind, source, data)
            if found:
                issues.extend(found)
                continue
            if kind == "ca":
                config.cas[name] = _ca(name, source, data)
            else:
                config.aliases[name] = _alias(name, source, data)
    issues.extend(_references(config))
    if issues:
        raise ConfigError(issues)
    return config


def _references(config: Config) -> list[ConfigIssue]:
    issues = []
    for alias in config.aliases.values():
        for i, ca in enumerate((alias.ca, *alias.cas)):
            if ca is not None and ca not in config.cas:
                path = "$.ca" if i == 0 else f"$.cas[{i - 1}]"
                issues.append(ConfigIssue(alias.source, path, f"unknown CA {ca!r}"))
        if alias.scep_keys == "ra":
            for ca in (alias.ca, *alias.cas):
                if ca in config.cas and config.cas[ca].ra is None:
                    issues.append(
                        ConfigIssue(
                            alias.source,
                            "$.scep_keys",
                            f"CA {ca!r} has no `ra` key pair configured",
                        )
                    )
    return issues
