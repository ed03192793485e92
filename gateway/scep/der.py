"""The few DER encodings we write by hand.

asn1crypto re-sorts every SET OF on encode; certificate sets in SCEP answers must keep the order we
choose (issued certificate first, RA certificates before the CA; DESIGN.md section 10), so the
SignedData shells are assembled here from already-encoded parts.
"""

from __future__ import annotations

from collections.abc import Iterable

SEQUENCE = 0x30
SET = 0x31
INTEGER = 0x02
OCTET_STRING = 0x04
CONTEXT_0 = 0xA0  # [0] constructed
CONTEXT_1 = 0xA1  # [1] constructed
CONTEXT_0_PRIMITIVE = 0x80  # [0] IMPLICIT of a primitive type


def length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + length(len(content)) + content


def concat(tag: int, parts: Iterable[bytes]) -> bytes:
    """A constructed value whose elements stay in the given order (no DER SET sorting)."""
    return tlv(tag, b"".join(parts))


def small_integer(value: int) -> bytes:
    return tlv(INTEGER, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big"))


def integer(value: int) -> bytes:
    """Any INTEGER, minimal two's complement (serial numbers of clients can be negative)."""
    magnitude = value if value >= 0 else ~value
    return tlv(INTEGER, value.to_bytes((magnitude.bit_length() + 8) // 8, "big", signed=True))


# RFC 5652 4, 5: id-data and id-signedData.
ID_DATA = bytes.fromhex("06092a864886f70d010701")
ID_SIGNED_DATA = bytes.fromhex("06092a864886f70d010702")
ID_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")
