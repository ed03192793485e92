"""The configuration reference (docs/configuration.md), generated from the JSON Schemas.

`make docs` writes it; a test fails when the file and the schemas disagree.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from gateway.config.loader import KINDS, schema

_SECTIONS = (
    ("alias", "aliases/<alias>.yaml"),
    ("ca", "cas/<ca>.yaml"),
    ("certificate-profile", "profiles/certificate/<name>.yaml"),
    ("end-entity-profile", "profiles/end-entity/<name>.yaml"),
)
assert {k for k, _ in _SECTIONS} == {k.schema for k in KINDS}


def _resolve(node: dict[str, Any], root: str) -> dict[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    base, _, pointer = ref.partition("#")
    target: dict[str, Any] = schema(base.removesuffix(".schema.json") if base else root)
    for part in pointer.strip("/").split("/") if pointer else []:
        target = target[part]
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return merged


def _type(node: dict[str, Any], root: str) -> str:
    node = _resolve(node, root)
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "oneOf" in node:
        return "secret reference: `{file: PATH}` or `{env: NAME}`"
    kind = node.get("type", "any")
    if kind == "array":
        items = _resolve(node.get("items", {}), root)
        if items.get("title") == "Policy":
            return "list of policies"
        return f"list of {_type(node.get('items', {}), root)}"
    if isinstance(kind, list):
        return " or ".join(kind)
    if "anyOf" in node:
        return " or ".join(_type(n, root) for n in node["anyOf"])
    return str(kind)


def _rows(node: dict[str, Any], root: str, prefix: str) -> list[str]:
    rows = []
    for name, prop in node.get("properties", {}).items():
        resolved = _resolve(prop, root)
        path = f"{prefix}{name}"
        default = f"`{json.dumps(prop['default'])}`" if "default" in prop else ""
        description = (prop.get("description") or resolved.get("description", "")).replace(
            "|", "\\|"
        )
        nested = resolved.get("type") == "object" and "properties" in resolved
        kind = "object" if nested else _type(prop, root)
        rows.append(f"| `{path}` | {kind} | {default} | {description} |")
        if nested:
            rows += _rows(resolved, root, f"{path}.")
    return rows


def render() -> str:
    out = [
        "# Configuration reference",
        "",
        "Generated from `gateway/config/schemas/` by `make docs`; do not edit by hand. Every",
        "file is validated against its schema on load (`scep-gateway check-config DIR`), unknown",
        "keys are errors, and relative paths are relative to the data directory (`--data-dir`).",
        "",
    ]
    for kind, where in _SECTIONS:
        node = schema(kind)
        out += [f"## {node['title']}: `{where}`", "", node["description"], ""]
        out += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
        out += _rows(node, kind, "")
        out.append("")
    policy = schema("policy")
    out += ["## Policy types", "", policy["description"], ""]
    out += ["| type | fields | description |", "| --- | --- | --- |"]
    for rule in policy["allOf"]:
        name = rule["if"]["properties"]["type"]["const"]
        target = _resolve(rule["then"], "policy")
        fields = [f"`{f}`" for f in target.get("properties", {}) if f != "type"]
        out.append(f"| `{name}` | {', '.join(fields) or '-'} | {target.get('description', '')} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
