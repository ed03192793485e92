"""HTTP <-> SCEP request values: methods, operations, the base64 quirks of real clients."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_to_bytes

from gateway.errors import MalformedRequest, PayloadTooLarge

OPERATIONS = ("GetCACaps", "GetCACert", "GetNextCACert", "GetCACertChain", "PKIOperation")
GET_ONLY = ("GetCACaps", "GetCACert", "GetNextCACert", "GetCACertChain")


@dataclass(frozen=True)
class ScepRequest:
    operation: str
    message: str | None  # GetCACert & co: CA identifier as sent
    payload: bytes  # PKIOperation: the DER/BER pkiMessage


def _raw_param(query: bytes, name: bytes) -> bytes | None:
    """The raw (still percent-encoded) value of ``name``; ``+`` is kept, not made a space."""
    for part in query.split(b"&"):
        key, _, value = part.partition(b"=")
        if unquote_to_bytes(key) == name:
            return value
    return None


def decode_message(raw: bytes) -> bytes:
    """HTTP-05: base64 as real clients send it in a GET query.

    Percent-decode without form semantics (macOS leaves ``+`` raw), drop CR/LF (sscep and
    Cisco IOS wrap every 64 characters with %0A), turn stray spaces back into ``+``, accept
    missing padding.
    """
    text = unquote_to_bytes(raw).replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b"+")
    text = text.rstrip(b"=")
    text += b"=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequest("message is not valid base64") from None


def parse(method: str, query: bytes, body: bytes, *, max_url_bytes: int) -> ScepRequest:
    if len(query) > max_url_bytes:
        raise PayloadTooLarge("request URL too long", status=414)
    params = dict(parse_qsl(query.decode("latin-1"), keep_blank_values=True))
    operation = params.get("operation")
    if method == "POST":
        # HTTP-03: every POST is a PKIOperation; many clients omit or misspell `operation`
        # (EJBCA forces it too). Any Content-Type, or none (sscep), is accepted.
        if operation in GET_ONLY:
            raise MalformedRequest(f"{operation} requires GET", status=405)
        if not body:
            raise MalformedRequest("empty PKIOperation body")
        return ScepRequest("PKIOperation", None, body)
    if method != "GET":
        raise MalformedRequest("method not allowed", status=405)
    if not operation:
        raise MalformedRequest("missing operation parameter")
    if operation not in OPERATIONS:
        raise MalformedRequest("unknown operation")
    if operation == "PKIOperation":
        raw = _raw_param(query, b"message")
        if not raw:
            raise MalformedRequest("PKIOperation by GET needs a message parameter")
        return ScepRequest(operation, None, decode_message(raw))
    return ScepRequest(operation, params.get("message"), b"")
