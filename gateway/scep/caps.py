"""GetCACaps (RFC 8894 3.5.2)."""

from __future__ import annotations

from collections.abc import Iterable

# RFC 8894 3.5.2 Table 7, in the case the RFC fixes. Single DES and MD5 are no keywords and
# are never offered (RFC 8894 2.9, 7.5).
KNOWN = (
    "AES",
    "DES3",
    "GetNextCACert",
    "POSTPKIOperation",
    "Renewal",
    "SHA-1",
    "SHA-256",
    "SHA-512",
    "SCEPStandard",
)

# SCEPStandard implies AES, POSTPKIOperation and SHA-256; list them anyway for older clients,
# and POSTPKIOperation explicitly because pyscep posts only when it sees that keyword.
BASE = ("POSTPKIOperation", "SHA-256", "SHA-512", "SHA-1", "AES", "DES3", "SCEPStandard")


def capabilities(
    advertised: Iterable[str] = BASE, *, renewal: bool, next_ca_cert: bool
) -> tuple[str, ...]:
    caps = [c for c in advertised if c not in ("Renewal", "GetNextCACert")]
    if renewal:
        caps.insert(1, "Renewal")
    if next_ca_cert:
        caps.insert(1, "GetNextCACert")
    return tuple(caps)


def render(caps: Iterable[str]) -> bytes:
    """One keyword per line, LF separated (RFC 8894 3.5.2 allows LF or CRLF)."""
    return "".join(f"{c}\n" for c in caps).encode("ascii")
