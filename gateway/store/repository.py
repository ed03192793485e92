"""The store: end entities and issued certificates in SQLite or PostgreSQL.

Every method is one transaction. Database failures come out as
:class:`~gateway.errors.StoreError` (or one of the subclasses in :mod:`gateway.store.errors`),
never as a driver's or a builtin exception.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from alembic.util import CommandError
from sqlalchemy import RowMapping, Select, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import StoreError
from gateway.store import migrate
from gateway.store.engine import WRITE_OPTIONS, create_store_engine, enable_wal
from gateway.store.errors import (
    EntityExists,
    EntityNotEnrollable,
    InvalidRecord,
    NoSuchEntity,
    SerialCollision,
)
from gateway.store.models import (
    ENROLLABLE,
    CertificateRecord,
    EndEntity,
    EntityStatus,
    check_serial,
)
from gateway.store.tables import certificates, end_entities

_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    sqlite3.Error,
    CommandError,
    OSError,  # includes ConnectionError and TimeoutError
)
"""What a database, its driver or Alembic raise; turned into StoreError."""

_SQLITE_UNIQUE = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
_POSTGRES_UNIQUE = "23505"


def _is_unique_violation(exc: IntegrityError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == _POSTGRES_UNIQUE:
        return True
    return getattr(orig, "sqlite_errorname", None) in _SQLITE_UNIQUE


def _serial_text(serial: int) -> str:
    return format(serial, "x")


def _serial_from_text(value: str) -> int:
    try:
        return int(value, 16)
    except ValueError:
        raise InvalidRecord(f"stored serial {value!r} is not hexadecimal") from None


def _entity_from_row(row: RowMapping) -> EndEntity:
    return EndEntity(
        username=row["username"],
        code_hash=row["code_hash"],
        subject_dn=row["subject_dn"],
        ca=row["ca"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _certificate_from_row(row: RowMapping) -> CertificateRecord:
    return CertificateRecord(
        ca=row["ca"],
        serial=_serial_from_text(row["serial"]),
        subject_dn=row["subject_dn"],
        issuer_dn=row["issuer_dn"],
        username=row["username"],
        transaction_id=row["transaction_id"],
        not_before=row["not_before"],
        not_after=row["not_after"],
        der=row["der"],
        issued_at=row["issued_at"],
        revoked_at=row["revoked_at"],
        revocation_reason=row["revocation_reason"],
    )


def _certificate_values(cert: CertificateRecord) -> dict[str, Any]:
    return {
        "ca": cert.ca,
        "serial": _serial_text(cert.serial),
        "subject_dn": cert.subject_dn,
        "issuer_dn": cert.issuer_dn,
        "username": cert.username,
        "transaction_id": cert.transaction_id,
        "not_before": cert.not_before,
        "not_after": cert.not_after,
        "der": cert.der,
        "issued_at": cert.issued_at,
        "revoked_at": cert.revoked_at,
        "revocation_reason": cert.revocation_reason,
    }


_CERTIFICATE_COLUMNS = [c for c in certificates.c if c.name != "id"]


@asynccontextmanager
async def _translated(action: str) -> AsyncIterator[None]:
    """Turn database errors raised inside into StoreError; let ours through."""
    try:
        yield
    except StoreError:
        raise
    except _DATABASE_ERRORS as exc:
        raise StoreError("database error", detail=f"{action}: {exc}") from exc


class Store:
    """End entities and certificates. Create with :meth:`open`, end with :meth:`close`."""

    def __init__(self, engine: AsyncEngine) -> None:
        """Wrap an engine whose database is migrated; use :meth:`open` instead."""
        self._engine: AsyncEngine | None = engine

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect to ``url`` and migrate the database to the current schema."""
        engine = create_store_engine(url)
        try:
            async with _translated("prepare the database"):
                await enable_wal(engine)
                await migrate.upgrade(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        """Close every connection. The store cannot be used afterwards; closing twice is fine."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _live_engine(self) -> AsyncEngine:
        if self._engine is None:
            raise StoreError("database unavailable", detail="the store is closed")
        return self._engine

    @asynccontextmanager
    async def _reading(self, action: str) -> AsyncIterator[AsyncConnection]:
        engine = self._live_engine()
        async with _translated(action), engine.connect() as connection:
            yield connection

    @asynccontextmanager
    async def _writing(self, action: str) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed at the end, rolled back on any exception."""
        engine = self._live_engine()
        async with (
            _translated(action),
            engine.execution_options(**WRITE_OPTIONS).begin() as connection,
        ):
            yield connection

    async def ping(self) -> None:
        """Check that the database answers; StoreError if not."""
        async with self._reading("ping") as connection:
            await connection.execute(text("SELECT 1"))

    # End entities

    async def add_end_entity(self, entity: EndEntity) -> None:
        """Add an end entity; EntityExists if the username is taken."""
        async with self._writing(f"add end entity {entity.username!r}") as connection:
            try:
                await connection.execute(
                    insert(end_entities).values(
                        username=entity.username,
                        code_hash=entity.code_hash,
                        subject_dn=entity.subject_dn,
                        ca=entity.ca,
                        status=entity.status.value,
                        created_at=entity.created_at,
                        updated_at=entity.updated_at,
                    )
                )
            except IntegrityError as exc:
                if _is_unique_violation(exc):
                    raise EntityExists(entity.username) from exc
                raise

    async def get_end_entity(self, username: str) -> EndEntity | None:
        """The end entity of that username, or None."""
        async with self._reading(f"get end entity {username!r}") as connection:
            result = await connection.execute(
                select(end_entities).where(end_entities.c.username == username)
            )
            row = result.mappings().one_or_none()
        return None if row is None else _entity_from_row(row)

    async def list_end_entities(self) -> list[EndEntity]:
        """Every end entity, ordered by username."""
        async with self._reading("list end entities") as connection:
            result = await connection.execute(
                select(end_entities).order_by(end_entities.c.username)
            )
            rows = result.mappings().all()
        return [_entity_from_row(row) for row in rows]

    async def reset_end_entity(self, username: str, code_hash: str, now: datetime) -> None:
        """Let the end entity enroll again with a new code: status NEW. NoSuchEntity if absent."""
        if now.utcoffset() is None:
            raise InvalidRecord("now must be timezone-aware")
        async with self._writing(f"reset end entity {username!r}") as connection:
            result = await connection.execute(
                update(end_entities)
                .where(end_entities.c.username == username)
                .values(code_hash=code_hash, status=EntityStatus.NEW.value, updated_at=now)
            )
            if result.rowcount != 1:
                raise NoSuchEntity(username)

    # Certificates

    async def record_issuance(
        self, cert: CertificateRecord, *, claim_entity: str | None = None
    ) -> None:
        """Record an issued certificate and, with ``claim_entity``, use up that end entity.

        One transaction: the end entity moves from NEW or FAILED to GENERATED (else
        EntityNotEnrollable) and the certificate is inserted (SerialCollision if its CA already
        used the serial). Any failure leaves both tables as they were.
        """
        values = _certificate_values(cert)
        async with self._writing(f"record certificate {cert.serial:#x} of {cert.ca!r}") as conn:
            if claim_entity is not None:
                claimed = await conn.execute(
                    update(end_entities)
                    .where(
                        end_entities.c.username == claim_entity,
                        end_entities.c.status.in_([s.value for s in ENROLLABLE]),
                    )
                    .values(status=EntityStatus.GENERATED.value, updated_at=cert.issued_at)
                )
                if claimed.rowcount != 1:
                    status = await conn.scalar(
                        select(end_entities.c.status).where(end_entities.c.username == claim_entity)
                    )
                    raise EntityNotEnrollable(claim_entity, status)
            try:
                await conn.execute(insert(certificates).values(values))
            except IntegrityError as exc:
                if _is_unique_violation(exc):
                    raise SerialCollision(cert.ca, cert.serial) from exc
                raise

    def _select_certificates(self) -> Select[Any]:
        return select(*_CERTIFICATE_COLUMNS)

    async def get_certificate(self, ca: str, serial: int) -> CertificateRecord | None:
        """The certificate that CA ``ca`` issued with ``serial``, or None."""
        if not _storable_serial(serial):
            return None
        query = self._select_certificates().where(
            certificates.c.ca == ca, certificates.c.serial == _serial_text(serial)
        )
        async with self._reading(f"get certificate {serial:#x} of {ca!r}") as connection:
            row = (await connection.execute(query)).mappings().one_or_none()
        return None if row is None else _certificate_from_row(row)

    async def find_certificate_by_issuer_dn(
        self, issuer_dn: str, serial: int
    ) -> CertificateRecord | None:
        """The certificate of that issuer DN and serial (RFC 8894 IssuerAndSerialNumber).

        Should two CAs share a DN and a serial, the one issued last wins.
        """
        if not _storable_serial(serial):
            return None
        query = (
            self._select_certificates()
            .where(
                certificates.c.issuer_dn == issuer_dn,
                certificates.c.serial == _serial_text(serial),
            )
            .order_by(certificates.c.issued_at.desc(), certificates.c.id.desc())
            .limit(1)
        )
        async with self._reading(f"find certificate {serial:#x}") as connection:
            row = (await connection.execute(query)).mappings().one_or_none()
        return None if row is None else _certificate_from_row(row)

    async def list_certificates(self, *, username: str | None = None) -> list[CertificateRecord]:
        """Certificates (of one end entity if ``username``), by issue time, then serial."""
        query = self._select_certificates().order_by(
            certificates.c.issued_at,
            # Hex text without leading zeros: shorter is smaller, then compare the digits.
            func.length(certificates.c.serial),
            certificates.c.serial,
            certificates.c.id,
        )
        if username is not None:
            query = query.where(certificates.c.username == username)
        async with self._reading("list certificates") as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_certificate_from_row(row) for row in rows]

    async def count_certificates(self) -> int:
        """How many certificates are recorded."""
        async with self._reading("count certificates") as connection:
            count = await connection.scalar(select(func.count()).select_from(certificates))
        return int(count or 0)


def _storable_serial(serial: int) -> bool:
    try:
        check_serial(serial)
    except InvalidRecord:
        return False
    return True
