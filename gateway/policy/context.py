"""What the enrollment pipeline passes from phase to phase (DESIGN.md section 4)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509

from gateway.scep.messages import PkiRequest


@dataclass(frozen=True)
class EnrollmentContext:
    """Frozen: a policy returns a replaced copy, never mutates."""

    alias: str
    ca: str
    request: PkiRequest
    now: datetime
    validity: timedelta
    subject: x509.Name | None = None
    subject_alt_names: tuple[x509.GeneralName, ...] = ()
    username: str | None = None
    claim_entity: str | None = None  # end entity whose status issuance must claim atomically


@dataclass(frozen=True)
class Pending:
    """Manual approval needed: answered with CertRep PENDING (a value, not an error)."""

    reason: str


class Policy(Protocol):
    async def apply(self, ctx: EnrollmentContext) -> EnrollmentContext | Pending: ...
