"""DESIGN.md section 2: the import direction, enforced rather than hoped for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"

# Higher may import lower (or its own rank), never the reverse.
RANK = {
    "errors": 0,
    "logs": 0,
    "scep": 1,
    "settings": 2,
    "limits": 2,
    "metrics": 2,
    "policy": 2,
    "ca": 2,
    "keys": 2,
    "store": 2,
    "config": 2,
    "registry": 3,
    "enrollment": 4,
    "revocation": 4,
    "assembly": 4,
    "http": 5,
    "reload": 5,
    "app": 6,
    "serve": 7,
    "cli": 8,
}
# Third-party packages that belong to exactly one part of the code.
OWNERS = {
    "quart": {"http", "app"},
    "hypercorn": {"serve"},
    "werkzeug": {"http", "app"},
    "yaml": {"config"},
    "jsonschema": {"config"},
    "referencing": {"config"},
    "watchfiles": {"reload"},
    "sqlalchemy": {"store"},
    "alembic": {"store"},
}


def _modules() -> list[Path]:
    return sorted(p for p in GATEWAY.rglob("*.py") if "migrations" not in p.parts)


def _part(path: Path) -> str:
    rel = path.relative_to(GATEWAY)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(GATEWAY)))
def test_imports_follow_the_layers(path: Path) -> None:
    part = _part(path)
    if part == "__init__":
        return
    assert part in RANK, f"{part} has no rank in the design; add it to DESIGN.md and here"
    for name in _imports(path):
        top, _, rest = name.partition(".")
        if top == "gateway" and rest:
            target = rest.split(".")[0]
            assert RANK[target] <= RANK[part], f"{part} must not import {target}"
        owners = OWNERS.get(top)
        if owners is not None:
            assert part in owners, f"only {sorted(owners)} may import {top}, not {part}"
