"""Persistence: end entities, certificates, CRLs and pending requests in SQLite or PostgreSQL.

SQLAlchemy Core with async drivers; the schema is kept by Alembic migrations that
:meth:`Store.open` runs.
"""

from gateway.errors import StoreError
from gateway.store.errors import (
    AlreadyRevoked,
    EntityExists,
    EntityNotEnrollable,
    EntityPending,
    InvalidRecord,
    LatestCertificateChanged,
    NoSuchCertificate,
    NoSuchEntity,
    NoSuchPending,
    PendingExists,
    PendingNotApproved,
    PendingNotDecidable,
    SerialCollision,
    TooManyPending,
)
from gateway.store.models import (
    REVOCATION_REASONS,
    CertificateRecord,
    CrlRecord,
    EndEntity,
    EntityStatus,
    ExpectLatest,
    PendingRequest,
    PendingStatus,
)
from gateway.store.repository import CRL_NUMBER_ATTEMPTS, Store

__all__ = [
    "CRL_NUMBER_ATTEMPTS",
    "REVOCATION_REASONS",
    "AlreadyRevoked",
    "CertificateRecord",
    "CrlRecord",
    "EndEntity",
    "EntityExists",
    "EntityNotEnrollable",
    "EntityPending",
    "EntityStatus",
    "ExpectLatest",
    "InvalidRecord",
    "LatestCertificateChanged",
    "NoSuchCertificate",
    "NoSuchEntity",
    "NoSuchPending",
    "PendingExists",
    "PendingNotApproved",
    "PendingNotDecidable",
    "PendingRequest",
    "PendingStatus",
    "SerialCollision",
    "Store",
    "StoreError",
    "TooManyPending",
]
