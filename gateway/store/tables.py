"""SQLAlchemy Core tables. Alembic migrations in ``migrations/versions`` create them.

Change a table here and add a migration (never edit an applied one); the store tests compare
the two.

Strings are ``Text`` on both dialects (PostgreSQL would enforce a ``VARCHAR(n)`` that SQLite
ignores). Serial numbers are lowercase hexadecimal text without leading zeros, so that 160-bit
values fit and compare the same on both dialects.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.types import TypeDecorator

from gateway.store.errors import InvalidRecord

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that always comes back timezone-aware in UTC.

    SQLite keeps no offset: the value is stored as naive UTC and marked UTC again on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise InvalidRecord("datetime must be timezone-aware")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


end_entities = Table(
    "end_entities",
    metadata,
    Column("username", Text, primary_key=True),
    Column("code_hash", Text, nullable=False),
    Column("subject_dn", Text, nullable=False),
    Column("ca", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Wrong codes in a row; at the profile's max_failed_attempts the entity is locked until
    # an operator resets it (EJBCA's "maximum number of failed login attempts").
    Column("failed_attempts", Integer, nullable=False, server_default="0"),
    Column("locked_at", UTCDateTime, nullable=True),
    # The enrollment code is refused from this instant on (NULL: never expires).
    Column("code_expires_at", UTCDateTime, nullable=True),
    CheckConstraint("status IN ('new', 'generated', 'failed')", name="status"),
)

certificates = Table(
    "certificates",
    metadata,
    Column(
        "id",
        # SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid).
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("ca", Text, nullable=False),
    Column("serial", Text, nullable=False),
    Column("subject_dn", Text, nullable=False),
    Column("issuer_dn", Text, nullable=False),
    # No foreign key: end entities may be deleted while their certificates stay.
    Column("username", Text, nullable=True),
    Column("transaction_id", Text, nullable=False, index=True),
    Column("not_before", UTCDateTime, nullable=False),
    Column("not_after", UTCDateTime, nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revocation_reason", Text, nullable=True),
    # The SCEP alias that issued it: a certificate renews only where it was issued.
    Column("alias", Text, nullable=True),
    UniqueConstraint("ca", "serial", name="uq_certificates_ca_serial"),
    Index("ix_certificates_issuer_dn_serial", "issuer_dn", "serial"),
    # Also serves look-ups by username alone (it replaced ix_certificates_username).
    Index("ix_certificates_username_ca", "username", "ca"),
)

crls = Table(
    "crls",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    # The CRL series; any text (the gateway names a CA key).
    Column("ca", Text, nullable=False),
    Column("number", BigInteger, nullable=False),
    Column("this_update", UTCDateTime, nullable=False),
    Column("next_update", UTCDateTime, nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Two replicas publishing at once cannot both use a number.
    UniqueConstraint("ca", "number", name="uq_crls_ca_number"),
    CheckConstraint("number > 0", name="number"),
)

# How many revocations each CA name has seen (revoke_certificate counts up in the same
# transaction): a CRL records the count it was built from, so "is the CRL stale?" is one
# look-up by key instead of a scan of the revoked certificates (docs/security.md, costs).
revocation_counters = Table(
    "revocation_counters",
    metadata,
    Column("ca", Text, primary_key=True),
    Column("revocations", BigInteger, nullable=False),
)

# The revocation count of ``ca`` that CRL ``number`` of ``series`` lists (read before its
# revoked certificates were): a CRL without a row here counts as stale.
crl_coverage = Table(
    "crl_coverage",
    metadata,
    Column("series", Text, primary_key=True),
    Column("number", BigInteger, primary_key=True),
    Column("revocations", BigInteger, nullable=False),
)

pending_requests = Table(
    "pending_requests",
    metadata,
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("alias", Text, nullable=False),
    Column("ca", Text, nullable=False),
    Column("transaction_id", Text, nullable=False),
    # transaction_id in lower case, to find it case-insensitively through an index on
    # both dialects (SQLite cannot reflect an index on lower(transaction_id)).
    Column("transaction_key", Text, nullable=False),
    Column("username", Text, nullable=True),
    Column("subject_dn", Text, nullable=False),
    Column("csr_der", LargeBinary, nullable=False),
    Column("decision", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("issued_serial", Text, nullable=True),
    # SHA-256 of the CSR's key and of the PKCSReq signer's key (gateway.scep.csr.key_id):
    # a poll or a resend is answered only for the key that made the request.
    Column("key_id", Text, nullable=True),
    Column("signer_key_id", Text, nullable=True),
    # One transactionID per key: another key reusing it starts a request of its own.
    UniqueConstraint(
        "alias",
        "transaction_id",
        "key_id",
        name="uq_pending_requests_alias_transaction_id_key_id",
    ),
    CheckConstraint(
        "status IN ('pending', 'approved', 'rejected', 'expired', 'issued')", name="status"
    ),
    Index("ix_pending_requests_alias_transaction_key", "alias", "transaction_key"),
    Index("ix_pending_requests_alias_username", "alias", "username"),
    Index("ix_pending_requests_status_expires_at", "status", "expires_at"),
    # One open (pending) request per end entity and alias, on both dialects.
    Index(
        "uq_pending_requests_open_entity",
        "alias",
        "username",
        unique=True,
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
)
