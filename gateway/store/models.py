"""The values that the store keeps: end entities, certificates, CRLs, pending requests.

The dataclasses check themselves on construction, so that a record the database cannot hold
(naive datetime, serial number out of range) fails early with :class:`InvalidRecord`, and every
datetime is normalised to timezone-aware UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.store.errors import InvalidRecord

SERIAL_LIMIT = 1 << 160
"""Serial numbers are positive and below this bound (at most 160 bits, 40 hex digits)."""


class EntityStatus(enum.StrEnum):
    """Where an end entity stands in its enrollment."""

    NEW = "new"
    GENERATED = "generated"
    FAILED = "failed"


ENROLLABLE = frozenset({EntityStatus.NEW, EntityStatus.FAILED})
"""Statuses from which an enrollment may claim the end entity."""


class PendingStatus(enum.StrEnum):
    """Where a request that waits for an operator stands.

    ``pending`` becomes ``approved`` or ``rejected`` (an operator) or ``expired`` (time);
    ``approved`` becomes ``issued`` when its certificate is recorded.
    """

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    ISSUED = "issued"


REVOCATION_REASONS = frozenset(
    {
        "unspecified",
        "keyCompromise",
        "cACompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "certificateHold",
        "removeFromCRL",
        "privilegeWithdrawn",
        "aACompromise",
    }
)
"""RFC 5280 5.3.1 CRLReason names that a revocation may give."""


def _utc(field: str, value: object, *, optional: bool = False) -> datetime | None:
    if value is None and optional:
        return None
    if not isinstance(value, datetime):
        raise InvalidRecord(f"{field} must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise InvalidRecord(f"{field} must be timezone-aware")
    return value.astimezone(UTC)


def _text(field: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise InvalidRecord(f"{field} must be a string, not {type(value).__name__}")


def _status(value: object) -> EntityStatus:
    if not isinstance(value, str):
        raise InvalidRecord(f"status must be a string, not {type(value).__name__}")
    try:
        return EntityStatus(value)
    except ValueError:
        raise InvalidRecord(f"unknown end entity status {value!r}") from None


def _pending_status(value: object) -> PendingStatus:
    if not isinstance(value, str):
        raise InvalidRecord(f"status must be a string, not {type(value).__name__}")
    try:
        return PendingStatus(value)
    except ValueError:
        raise InvalidRecord(f"unknown pending request status {value!r}") from None


def _bytes(field: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidRecord(f"{field} must be bytes, not {type(value).__name__}")
    return bytes(value)


def _integer(field: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRecord(f"{field} must be an int, not {type(value).__name__}")
    if value <= 0:
        raise InvalidRecord(f"{field} must be positive, not {value}")


def check_reason(reason: object) -> str:
    """Return ``reason`` if it is an RFC 5280 CRLReason name, else raise InvalidRecord."""
    if not isinstance(reason, str) or reason not in REVOCATION_REASONS:
        raise InvalidRecord(f"unknown revocation reason {reason!r}")
    return reason


def check_serial(serial: object) -> int:
    """Return ``serial`` if it is a serial number the store can hold, else raise InvalidRecord."""
    if not isinstance(serial, int) or isinstance(serial, bool):
        raise InvalidRecord(f"serial must be an int, not {type(serial).__name__}")
    if not 0 < serial < SERIAL_LIMIT:
        # The bit length, not the number: a client's 60 KB INTEGER has more digits than
        # Python converts to decimal.
        raise InvalidRecord(f"serial of {serial.bit_length()} bits is not in 1..2**160")
    return serial


@dataclass(frozen=True)
class EndEntity:
    """A device or user allowed to enroll with an enrollment code."""

    username: str
    code_hash: str
    """Hash of the enrollment code, produced elsewhere; never the code itself."""
    subject_dn: str
    """RFC 4514 string."""
    ca: str
    """Name of the CA that issues for this entity."""
    status: EntityStatus
    created_at: datetime
    updated_at: datetime
    failed_attempts: int = 0
    """Wrong codes since the last reset."""
    locked_at: datetime | None = None
    """When too many wrong codes locked it (None: not locked); an operator's reset unlocks."""
    code_expires_at: datetime | None = None
    """The code is refused from this instant on (None: it never expires)."""

    def __post_init__(self) -> None:
        for name in ("username", "code_hash", "subject_dn", "ca"):
            _text(name, getattr(self, name))
        object.__setattr__(self, "status", _status(self.status))
        object.__setattr__(self, "created_at", _utc("created_at", self.created_at))
        object.__setattr__(self, "updated_at", _utc("updated_at", self.updated_at))
        if not isinstance(self.failed_attempts, int) or self.failed_attempts < 0:
            raise InvalidRecord("failed_attempts must be a non-negative int")
        for name in ("locked_at", "code_expires_at"):
            object.__setattr__(self, name, _utc(name, getattr(self, name), optional=True))


@dataclass(frozen=True)
class CertificateRecord:
    """A certificate that a CA issued."""

    ca: str
    """Name of the CA that issued it."""
    serial: int
    """Positive, at most 160 bits; unique per CA."""
    subject_dn: str
    issuer_dn: str
    username: str | None
    """The end entity it was issued to, if any."""
    transaction_id: str
    """SCEP transactionID of the request."""
    not_before: datetime
    not_after: datetime
    der: bytes
    issued_at: datetime
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    alias: str | None = None
    """The SCEP alias that issued it (None: issued before aliases were recorded)."""

    def __post_init__(self) -> None:
        for name in ("ca", "subject_dn", "issuer_dn", "transaction_id"):
            _text(name, getattr(self, name))
        _text("username", self.username, optional=True)
        _text("alias", self.alias, optional=True)
        _text("revocation_reason", self.revocation_reason, optional=True)
        check_serial(self.serial)
        object.__setattr__(self, "der", _bytes("der", self.der))
        for name in ("not_before", "not_after", "issued_at"):
            object.__setattr__(self, name, _utc(name, getattr(self, name)))
        object.__setattr__(self, "revoked_at", _utc("revoked_at", self.revoked_at, optional=True))


@dataclass(frozen=True)
class CrlRecord:
    """A CRL that was signed and published; ``number`` counts up from 1 for each ``ca``."""

    ca: str
    """Name of the CRL series (the store does not interpret it)."""
    number: int
    """The cRLNumber extension: positive, allocated by :meth:`Store.publish_crl`."""
    this_update: datetime
    next_update: datetime
    der: bytes
    created_at: datetime

    def __post_init__(self) -> None:
        _text("ca", self.ca)
        _integer("number", self.number)
        object.__setattr__(self, "der", _bytes("der", self.der))
        for name in ("this_update", "next_update", "created_at"):
            object.__setattr__(self, name, _utc(name, getattr(self, name)))
        if self.next_update < self.this_update:
            raise InvalidRecord("next_update must not be before this_update")


@dataclass(frozen=True)
class PendingRequest:
    """An enrollment that waits for an operator's approval while its client polls."""

    alias: str
    ca: str
    transaction_id: str
    """SCEP transactionID; found again case-insensitively."""
    username: str | None
    subject_dn: str
    csr_der: bytes
    decision: str
    """Opaque JSON text: what the caller decided before the request waited."""
    status: PendingStatus
    created_at: datetime
    expires_at: datetime
    """The operator may decide until this instant; from then on the request is expired."""
    id: int | None = None
    """Given by the store on :meth:`Store.add_pending`."""
    reason: str | None = None
    """Why the operator decided so."""
    decided_at: datetime | None = None
    issued_serial: int | None = None
    """Serial of the certificate issued for it (status ``issued``)."""
    key_id: str | None = None
    """Id of the CSR's public key (gateway.scep.csr.key_id); None only for rows whose stored
    CSR could not be read when key ids were introduced."""
    signer_key_id: str | None = None
    """Id of the key that signed the PKCSReq (Apple's MDM signer differs from the CSR key)."""

    def __post_init__(self) -> None:
        for name in ("alias", "ca", "transaction_id", "subject_dn", "decision"):
            _text(name, getattr(self, name))
        _text("username", self.username, optional=True)
        _text("reason", self.reason, optional=True)
        _text("key_id", self.key_id, optional=True)
        _text("signer_key_id", self.signer_key_id, optional=True)
        object.__setattr__(self, "csr_der", _bytes("csr_der", self.csr_der))
        object.__setattr__(self, "status", _pending_status(self.status))
        object.__setattr__(self, "created_at", _utc("created_at", self.created_at))
        object.__setattr__(self, "expires_at", _utc("expires_at", self.expires_at))
        object.__setattr__(self, "decided_at", _utc("decided_at", self.decided_at, optional=True))
        _integer("id", self.id, optional=True)
        if self.issued_serial is not None:
            check_serial(self.issued_serial)


@dataclass(frozen=True)
class ExpectLatest:
    """What an issuance expects of the end entity's certificates (Store.record_issuance):
    ``serial`` is the latest one (a renewal), or None for "no certificate valid at ``now``"."""

    serial: int | None
    now: datetime


@dataclass(frozen=True)
class CrlState:
    """The newest CRL of a series as :meth:`Store.crl_state` sees it, without its DER."""

    number: int
    this_update: datetime
    next_update: datetime
    covered: int | None
    """The CA's revocation count this CRL lists; None if not recorded (then it is stale)."""
    revocations: int
    """The CA's revocation count now."""

    @property
    def lists_every_revocation(self) -> bool:
        return self.covered is not None and self.covered >= self.revocations
