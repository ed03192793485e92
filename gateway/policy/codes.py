"""Enrollment codes: stored as salted scrypt hashes, compared in constant time (RFC 8894 7.3)."""

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


def _derive(code: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(code.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=64 << 20)


def hash_code(code: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = _derive(code, salt, _N, _R, _P)
    b64 = base64.b64encode
    return f"{_PREFIX}${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_code(code: str, stored: str) -> bool:
    """True if ``code`` matches ``stored``; constant time in the comparison."""
    try:
        prefix, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        actual = _derive(code, base64.b64decode(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return prefix == _PREFIX and hmac.compare_digest(actual, expected)


# A hash of a random code, checked when the username does not exist, so that an unknown
# user costs the same time as a wrong code (no username oracle).
DUMMY_HASH = hash_code(secrets.token_urlsafe(16))


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
