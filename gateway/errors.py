"""The gateway's exception hierarchy (DESIGN.md section 6).

Every exception carries data: what the client may see (``client_text``) and what only the
log may see (``detail``). Internal text never reaches a client.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class FailInfo(enum.IntEnum):
    """RFC 8894 3.2.1.4 Table 5."""

    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    def __init__(self, client_text: str, *, detail: str = "") -> None:
        super().__init__(detail or client_text)
        self.client_text = client_text
        self.detail = detail or client_text


class UnknownAlias(GatewayError):
    """No alias of that name: HTTP 404."""


class MalformedRequest(GatewayError):
    """Bad method, operation, base64 or not CMS: HTTP 400 (or 405 with ``status``)."""

    def __init__(self, client_text: str, *, detail: str = "", status: int = 400) -> None:
        super().__init__(client_text, detail=detail)
        self.status = status


class PayloadTooLarge(GatewayError):
    """Body (413) or URL (414) beyond the configured bound."""

    def __init__(self, client_text: str, *, status: int = 413) -> None:
        super().__init__(client_text)
        self.status = status


class NotFound(GatewayError):
    """A resource that an operation needs does not exist (no CA for GetCACert, no rollover)."""

    def __init__(self, client_text: str, *, detail: str = "", status: int = 404) -> None:
        super().__init__(client_text, detail=detail)
        self.status = status


class ScepFailure(GatewayError):
    """A refusal answered with a signed CertRep FAILURE (RFC 8894 3.3.2.2)."""

    def __init__(self, fail_info: FailInfo, client_text: str, *, detail: str = "") -> None:
        super().__init__(client_text, detail=detail)
        self.fail_info = fail_info


@dataclass(frozen=True)
class ConfigIssue:
    """One configuration problem, printed as ``file:json.path: message``."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.path}: {self.message}"


class ConfigError(GatewayError):
    """A configuration that cannot be served: exit 1 at start, keep the last good on reload."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        text = "\n".join(str(i) for i in self.issues)
        super().__init__("configuration error", detail=text)


class StoreError(GatewayError):
    """The database refused or failed an operation."""
