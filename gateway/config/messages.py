"""Schema errors as ``file:json.path: rule``, never quoting the offending value.

jsonschema's own messages start with the instance (``'hunter2' is not of type 'object'``), so
an inline secret or a PEM key pasted into a file would reach check-config output, the log and
the unauthenticated ``/readyz``. The messages here are built from the schema side only: the
expected type, the allowed values, the bounds. Keys of the instance appear in a path only
when a schema names them; any other key is shown as ``*`` (a mistyped key can be a secret
too), and an unknown key is pointed at by its position.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache
from typing import Any, cast

import jsonschema

from gateway.config import resources

_TYPES = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "null": "null",
}


def _walk(node: object) -> Iterator[str]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key == "properties" and isinstance(value, Mapping):
                yield from value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


@cache
def known_names() -> frozenset[str]:
    """Every key a schema names, and the DN field names (the keys of `subject.defaults`)."""
    names: set[str] = set()
    for contents in resources.schemas().values():
        names.update(_walk(contents))
        if contents.get("$id") == "dn-field.schema.json":
            names.update(contents["enum"])
    return frozenset(names)


def json_path(parts: Iterable[Any]) -> str:
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if part in known_names() else ".*"
    return text


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _one_of(values: Iterable[object]) -> str:
    return ", ".join(json.dumps(v) if not isinstance(v, str) else v for v in values)


def _unknown_keys(error: jsonschema.ValidationError) -> list[str]:
    instance = error.instance if isinstance(error.instance, Mapping) else {}
    allowed = list(error.schema.get("properties", {})) if isinstance(error.schema, dict) else []
    messages = []
    for position, key in enumerate(instance, start=1):
        if key in allowed:
            continue
        where = f"the {_ordinal(position)} key of this object"
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.75)
        if close:
            messages.append(f"unknown field ({where}): did you mean {close[0]}?")
        elif allowed:
            messages.append(f"unknown field ({where}); allowed: {', '.join(allowed)}")
        else:
            messages.append(f"unknown field ({where}): this object takes no fields")
    return messages or ["unknown field"]


def _type(expected: str | list[str], *, secret: bool) -> str:
    if secret:
        return "must be an object ({file: ...} or {env: ...}): secrets are never written inline"
    names = [expected] if isinstance(expected, str) else expected
    return "must be " + " or ".join(_TYPES.get(str(n), str(n)) for n in names)


# What a schema rule says, built from the rule only: never from the value that broke it.
_RULES: dict[str, Callable[[Any], str]] = {
    "enum": lambda value: f"must be one of: {_one_of(value)}",
    "const": lambda value: f"must be {_one_of([value])}",
    "minLength": lambda value: f"must be at least {value} characters",
    "maxLength": lambda value: f"must be at most {value} characters",
    "pattern": lambda value: f"must match the regular expression {value}",
    "minimum": lambda value: f"must be at least {value}",
    "maximum": lambda value: f"must be at most {value}",
    "exclusiveMinimum": lambda value: f"must be more than {value}",
    "exclusiveMaximum": lambda value: f"must be less than {value}",
    "minItems": lambda value: f"must have at least {value} items",
    "maxItems": lambda value: f"must have at most {value} items",
    "uniqueItems": lambda value: "must not list an item twice",
    "not": lambda value: "is not allowed here",
}


def rules(
    error: jsonschema.ValidationError, *, secret: bool = False, key: bool = False
) -> list[str]:
    """What the value at ``error``'s path must be, without the value. ``secret``: the failing
    schema is a secret reference; ``key``: the rule applies to a key (``propertyNames``)."""
    kind, value = error.validator, cast(Any, error.validator_value)
    prefix = "a key here " if key else ""
    if kind == "additionalProperties":
        return _unknown_keys(error)
    if kind == "required":
        instance = error.instance if isinstance(error.instance, Mapping) else {}
        missing = [name for name in value if name not in instance]
        return [f"{name!r} is a required property" for name in missing] or ["a field is missing"]
    if kind == "type":
        text = _type(value, secret=secret)
    elif kind == "minLength" and value == 1:
        text = "must not be empty"
    elif kind in ("oneOf", "anyOf"):
        text = _type("object", secret=True) if secret else "matches none of the allowed forms"
    elif kind in _RULES:
        text = _RULES[kind](value)
    else:
        text = f"violates the schema rule {kind!r}"
    return [prefix + text]
