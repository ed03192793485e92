"""The JSON Schemas shipped inside the package (``gateway/config/schemas/``).

They are read through :mod:`importlib.resources`, never through the source tree, so the same
files are found from a checkout, an editable install, a wheel and a zip import.
``scep-gateway schemas DIR`` writes them out for editors of a config repository.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any


@cache
def schema_texts() -> dict[str, str]:
    """Every ``*.schema.json`` by file name (which is also its ``$id``), as shipped."""
    folder = resources.files("gateway.config") / "schemas"
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".schema.json")
    }


@cache
def schemas() -> dict[str, dict[str, Any]]:
    """Every schema by file name, parsed."""
    return {name: json.loads(text) for name, text in schema_texts().items()}
