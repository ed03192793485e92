"""What the enrollment pipeline passes from phase to phase (DESIGN.md section 4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cryptography import x509

from gateway.limits import Gate, LimitSettings, hashing_gate
from gateway.scep.messages import PkiRequest
from gateway.store import CertificateRecord, EndEntity, Store


@dataclass(frozen=True)
class EnrollmentContext:
    """Frozen: a policy returns a replaced copy, never mutates."""

    alias: str
    ca: str
    request: PkiRequest
    now: datetime
    # The certificate this CA issued that signed the request, if any (a renewal candidate).
    signer_record: CertificateRecord | None = None
    authenticated: bool = False
    end_entity: EndEntity | None = None
    username: str | None = None
    subject: x509.Name | None = None
    subject_alt_names: tuple[x509.GeneralName, ...] = ()
    # Issuance claims this entity's status atomically (CA mode: one enrollment per code).
    claim_entity: str | None = None
    # RA mode: the end entity to create or update together with the issuance.
    upsert_entity: EndEntity | None = None
    renewal_of: CertificateRecord | None = None
    approved: bool = False
    pending_id: int | None = None  # the approved pending request this issuance completes


@dataclass(frozen=True)
class Pending:
    """Manual approval needed: answered with CertRep PENDING (a value, not an error)."""

    reason: str


@dataclass(frozen=True)
class PolicyEnv:
    """What policies may use at request time; passed in, never read from globals."""

    store: Store
    clock: Callable[[], datetime]
    random: Callable[[int], bytes]
    # Memory-hard code checks run in a thread behind this bounded gate (docs/security.md).
    hashing: Gate = field(default_factory=lambda: hashing_gate(LimitSettings()))


class Policy(Protocol):
    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        """Return the (replaced) context, Pending, or raise ScepFailure to refuse."""
        ...
