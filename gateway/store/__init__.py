"""Persistence: end entities and issued certificates in SQLite or PostgreSQL.

SQLAlchemy Core with async drivers; the schema is kept by Alembic migrations that
:meth:`Store.open` runs.
"""

from gateway.errors import StoreError
from gateway.store.errors import (
    EntityExists,
    EntityNotEnrollable,
    InvalidRecord,
    NoSuchEntity,
    SerialCollision,
)
from gateway.store.models import CertificateRecord, EndEntity, EntityStatus
from gateway.store.repository import Store

__all__ = [
    "CertificateRecord",
    "EndEntity",
    "EntityExists",
    "EntityNotEnrollable",
    "EntityStatus",
    "InvalidRecord",
    "NoSuchEntity",
    "SerialCollision",
    "Store",
    "StoreError",
]
