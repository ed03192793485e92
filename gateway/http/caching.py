"""HTTP caching of CRLs: ETag, Cache-Control and conditional GET (RFC 9110 13, RFC 9111 5.2).

A relying party (a RADIUS server, a VPN gateway, a proxy in front of them) may ask again as
often as it likes: a matching If-None-Match gets 304 without a body.
"""

from __future__ import annotations

from datetime import datetime

from quart import Response

from gateway.revocation import ServedCrl

CRL_TYPE = "application/pkix-crl"  # RFC 2585 section 4.2
_MAX_TAGS = 32  # more entity tags than any cache sends; the rest are ignored


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 13.1.2: ``*`` or a list of entity tags, compared weakly (W/ ignored)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(",")[:_MAX_TAGS]:
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def crl_response(served: ServedCrl, if_none_match: str | None, now: datetime) -> Response:
    matched = etag_matches(if_none_match, served.etag)
    response = Response(b"" if matched else served.der, status=304 if matched else 200)
    if not matched:
        response.headers["Content-Type"] = CRL_TYPE
    response.headers["ETag"] = served.etag
    # public: the CRL is signed and the same for everyone; max-age never reaches past the
    # point where the gateway signs the next one (before nextUpdate).
    response.headers["Cache-Control"] = f"public, max-age={served.max_age(now)}"
    return response
