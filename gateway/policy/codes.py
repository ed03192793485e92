"""Enrollment codes: stored hashed, compared in constant time (RFC 8894 7.3).

Two schemes, told apart by the stored hash's prefix:

- ``scrypt$N$r$p$salt$digest``: a code an operator chose (it may be short or guessable), so
  a memory-hard hash (RFC 7914), about 16 MiB and tens of milliseconds per check.
- ``sha256$digest``: a code the gateway generated (:func:`generate_code`, 142 bits from the
  system's random source). No dictionary or brute force reaches 2**142 candidates, so a
  plain SHA-256 is as safe at rest as scrypt and costs microseconds, which takes scrypt off
  the path of a replayed request. Not keyed: every worker and replica sharing the database
  verifies it without sharing a key.

Which work a check does depends only on the code presented, never on the end entity: a code
of the generated shape is checked by SHA-256, any other by scrypt, against the entity's hash
or, if there is none to compare with (unknown user, RA-created entity, locked, expired),
against a dummy hash of the same scheme. So an unknown username costs what a wrong code
costs, and the work reveals nothing about the entity. The price: an operator-chosen code of
the generated shape (24 letters and digits) never verifies; the CLI refuses such codes, and
one set before this rule (old versions accepted any code) must be reset.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from collections.abc import Callable

# RFC 7914 parameters: about 16 MiB and a few tens of milliseconds per check; run it in a
# thread so the event loop keeps serving.
_N, _R, _P = 2**14, 8, 1
_PREFIX = "scrypt"
_SHA256 = "sha256"

GENERATED_LENGTH = 24
"""Characters of a generated code: 24 * log2(62) = 142.9 bits of entropy."""


def _derive(code: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(code.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=64 << 20)


def _sha256(code: str) -> bytes:
    return hashlib.sha256(code.encode("utf-8")).digest()


def hash_code(code: str, salt: bytes | None = None) -> str:
    """The scrypt hash of an operator-chosen code."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = _derive(code, salt, _N, _R, _P)
    b64 = base64.b64encode
    return f"{_PREFIX}${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def hash_generated_code(code: str) -> str:
    """The SHA-256 hash of a code from :func:`generate_code` (and only of such a code)."""
    if not is_generated_shape(code):
        raise ValueError("not a generated code: hash it with hash_code")
    return f"{_SHA256}${base64.b64encode(_sha256(code)).decode()}"


def is_generated_shape(code: str) -> bool:
    """Whether ``code`` looks like one :func:`generate_code` makes (so it is checked by
    SHA-256). An operator cannot choose such a code (the CLI refuses it)."""
    return len(code) == GENERATED_LENGTH and all(c in _ALPHANUMERIC for c in code)


def _verify_scrypt(code: str, stored: str) -> bool:
    try:
        prefix, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = _derive(code, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        _verify_scrypt(code, DUMMY_HASH)  # a malformed hash costs what a real one costs
        return False
    return prefix == _PREFIX and hmac.compare_digest(actual, expected)


def _verify_sha256(code: str, stored: str) -> bool:
    prefix, _, digest = stored.partition("$")
    actual = _sha256(code)
    try:
        expected = base64.b64decode(digest, validate=True)
    except ValueError:
        expected = b""
    return hmac.compare_digest(actual, expected) and prefix == _SHA256


def verify_code(code: str, stored: str | None) -> bool:
    """True if ``code`` matches ``stored``; constant time in the comparison.

    ``stored`` None (or anything that is not a hash of ours, like the RA-mode marker) is
    compared with a dummy hash of the scheme the code's shape selects, and is False: the
    same work as a real check.
    """
    stored = stored or ""
    scheme = stored.split("$", 1)[0]
    if is_generated_shape(code):
        ok = _verify_sha256(code, stored if scheme == _SHA256 else DUMMY_SHA256)
        return ok and scheme == _SHA256
    # Not the generated shape: only an operator-chosen (scrypt) code can match.
    ok = _verify_scrypt(code, stored if scheme == _PREFIX else DUMMY_HASH)
    return ok and scheme == _PREFIX


# REQ-03: letters and digits only: generated codes, secrets and names stay inside
# PrintableString, or the Windows client refuses them.
_ALPHANUMERIC = string.ascii_letters + string.digits


def random_text(random: Callable[[int], bytes], length: int = 12) -> str:
    """Letters and digits from ``random`` bytes, without modulo bias (EJBCA's RANDOM names
    are 12 characters)."""
    out: list[str] = []
    while len(out) < length:
        for byte in random(length * 2):
            if byte < 248:  # 248 = 4 * 62
                out.append(_ALPHANUMERIC[byte % 62])
    return "".join(out[:length])


def generate_code(random: Callable[[int], bytes]) -> str:
    """A new enrollment code: 24 letters and digits (142 bits), stored by SHA-256."""
    return random_text(random, GENERATED_LENGTH)


# Hashes of random codes, checked when there is nothing real to compare with, so that such a
# check costs the same time as a wrong code (no username oracle).
DUMMY_HASH = hash_code(secrets.token_urlsafe(16))
DUMMY_SHA256 = f"{_SHA256}${base64.b64encode(secrets.token_bytes(32)).decode()}"
