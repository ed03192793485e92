"""The configuration reference is generated from the schemas and kept in the repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.config.loader import KINDS, schema
from gateway.config.reference import render

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_docs_configuration_md_is_up_to_date() -> None:
    assert DOC.read_text() == render(), "run `make docs` and commit docs/configuration.md"


def _properties(node: Any, path: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        for name, prop in node.get("properties", {}).items():
            found.append((f"{path}.{name}", prop))
        for key, value in node.items():
            if key == "if":
                continue  # a condition's `properties` are not fields
            if key != "properties" or not isinstance(value, dict):
                found += _properties(value, f"{path}/{key}")
            else:
                for name, prop in value.items():
                    found += _properties(prop, f"{path}.{name}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _properties(item, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("kind", [k.schema for k in KINDS] + ["policy", "secret"])
def test_every_field_is_described_and_closed(kind: str) -> None:
    node = schema(kind)
    for path, prop in _properties(node, kind):
        assert prop.get("description") or "$ref" in prop, f"{path} has no description"
    _assert_closed(node, kind)


def _assert_closed(node: Any, path: str) -> None:
    if isinstance(node, dict):
        # A policy is closed by the branch its `type` selects (each has additionalProperties).
        if node.get("type") == "object" and "properties" in node and "allOf" not in node:
            assert node.get("additionalProperties") is False, f"{path} is open"
        for key, value in node.items():
            _assert_closed(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _assert_closed(item, f"{path}[{i}]")


def test_every_config_example_file_names_its_schema() -> None:
    root = Path(__file__).parents[2] / "config.example"
    for path in root.rglob("*.yaml"):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# yaml-language-server: $schema="), path
        target = (path.parent / first.split("=", 1)[1]).resolve()
        assert target.is_file(), f"{path}: {target} does not exist"
