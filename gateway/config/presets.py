"""Vendor presets: alias defaults that real clients need, each with its reason.

An alias names a preset with ``preset: NAME``; every value here can still be overridden in
the alias file. ``scep-gateway check-config DIR --explain ALIAS`` prints the effective values
and where each came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Value:
    value: Any
    reason: str


PRESETS: dict[str, dict[str, Value]] = {}
