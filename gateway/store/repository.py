"""The store: end entities, certificates, CRLs and pending requests in SQLite or PostgreSQL.

Every method is one transaction (:meth:`Store.publish_crl` retries in a new one). Database
failures come out as :class:`~gateway.errors.StoreError` (or one of the subclasses in
:mod:`gateway.store.errors`), never as a driver's or a builtin exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from alembic.util import CommandError
from sqlalchemy import (
    Executable,
    RowMapping,
    Select,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import StoreError
from gateway.store import migrate
from gateway.store.deadline import (
    STORE_TIMEOUT_S,
    StoreTimeout,
    StoreUnavailable,
    WriteHealth,
    bounded,
    driver_timeout,
)
from gateway.store.engine import WRITE_OPTIONS, create_store_engine, enable_wal
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
    ENROLLABLE,
    CertificateRecord,
    CrlRecord,
    CrlState,
    EndEntity,
    EntityStatus,
    ExpectLatest,
    PendingRequest,
    PendingStatus,
    check_reason,
    check_serial,
)
from gateway.store.tables import (
    certificates,
    crl_coverage,
    crls,
    end_entities,
    pending_requests,
    revocation_counters,
)

log = logging.getLogger(__name__)

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
        failed_attempts=row["failed_attempts"],
        locked_at=row["locked_at"],
        code_expires_at=row["code_expires_at"],
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
        alias=row["alias"],
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
        "alias": cert.alias,
    }


_CERTIFICATE_COLUMNS = [c for c in certificates.c if c.name != "id"]

_BY_SERIAL = (
    # Hex text without leading zeros: shorter is smaller, then compare the digits.
    func.length(certificates.c.serial),
    certificates.c.serial,
)

_ID_LIMIT = 1 << 63
"""Ids of pending requests are positive BIGINTs."""

CRL_NUMBER_ATTEMPTS = 5
"""How many CRL numbers :meth:`Store.publish_crl` tries before it gives up."""

_POSTGRES_CRL_LOCK_CLASS = 0x5343_524C
"""First key of the pg_advisory_xact_lock(int, int) that numbers a CRL series ("SCRL")."""

_POSTGRES_PENDING_LOCK_CLASS = 0x5350_4E44
"""First key of the advisory lock that serializes new pending requests of an alias ("SPND")."""


class _CrlNumberTaken(Exception):
    """Another transaction committed the CRL number first: try the next one."""


def _aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidRecord(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _storable_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < _ID_LIMIT


def _crl_lock_key(ca: str) -> int:
    """The second advisory-lock key of a CRL series: 32 bits of a hash of its name."""
    digest = hashlib.sha256(ca.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


def _entity_values(entity: EndEntity) -> dict[str, Any]:
    return {
        "username": entity.username,
        "code_hash": entity.code_hash,
        "subject_dn": entity.subject_dn,
        "ca": entity.ca,
        "status": entity.status.value,
        "created_at": entity.created_at,
        "updated_at": entity.updated_at,
        "failed_attempts": entity.failed_attempts,
        "locked_at": entity.locked_at,
        "code_expires_at": entity.code_expires_at,
    }


_UPSERT_KEEPS = frozenset({"username", "created_at"})
"""Columns of an existing end entity that an upsert leaves alone."""


def _upsert_statement(dialect: str) -> Executable:
    """INSERT an end entity, or UPDATE the one of that username (atomic on both dialects).

    Built once per dialect and executed with the entity's values as parameters: SQLAlchemy
    then compiles it once, instead of building and hashing a new statement per enrollment."""
    statement = _UPSERTS.get(dialect)
    if statement is None:
        columns = [c.name for c in end_entities.c if c.name != "id"]
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        base = insert_(end_entities)
        statement = base.on_conflict_do_update(
            index_elements=[end_entities.c.username],
            set_={k: base.excluded[k] for k in columns if k not in _UPSERT_KEEPS},
            # Only an entity of the same kind (same code hash: the RA-mode marker) is
            # updated; an operator-registered one is never taken over (EntityExists).
            where=end_entities.c.code_hash == base.excluded.code_hash,
        )
        _UPSERTS[dialect] = statement
    return statement


async def _count_revocation(conn: AsyncConnection, ca: str) -> None:
    """One more revocation of CA ``ca``, in the caller's transaction (see CrlState)."""
    insert_ = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    base = insert_(revocation_counters).values(ca=ca, revocations=1)
    await conn.execute(
        base.on_conflict_do_update(
            index_elements=[revocation_counters.c.ca],
            set_={"revocations": revocation_counters.c.revocations + 1},
        )
    )


def _valid_at(cert: CertificateRecord, now: datetime) -> bool:
    return cert.revoked_at is None and cert.not_after > now


_UPSERTS: dict[str, Executable] = {}
# Asked once per RA enrollment: built once (see _upsert_statement).
_LATEST_CERTIFICATE = (
    select(*_CERTIFICATE_COLUMNS)
    .where(certificates.c.username == bindparam("username"), certificates.c.ca == bindparam("ca"))
    .order_by(certificates.c.issued_at.desc(), certificates.c.id.desc())
    .limit(1)
)
_INSERT_CERTIFICATE = insert(certificates)


def _crl_from_row(row: RowMapping) -> CrlRecord:
    return CrlRecord(
        ca=row["ca"],
        number=row["number"],
        this_update=row["this_update"],
        next_update=row["next_update"],
        der=row["der"],
        created_at=row["created_at"],
    )


_CRL_COLUMNS = [c for c in crls.c if c.name != "id"]


def _pending_from_row(row: RowMapping) -> PendingRequest:
    serial = row["issued_serial"]
    return PendingRequest(
        id=row["id"],
        alias=row["alias"],
        ca=row["ca"],
        transaction_id=row["transaction_id"],
        username=row["username"],
        subject_dn=row["subject_dn"],
        csr_der=row["csr_der"],
        decision=row["decision"],
        status=row["status"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        reason=row["reason"],
        decided_at=row["decided_at"],
        issued_serial=None if serial is None else _serial_from_text(serial),
        key_id=row["key_id"],
        signer_key_id=row["signer_key_id"],
    )


def _pending_values(request: PendingRequest) -> dict[str, Any]:
    return {
        "alias": request.alias,
        "ca": request.ca,
        "transaction_id": request.transaction_id,
        "transaction_key": _transaction_key(request.transaction_id),
        "username": request.username,
        "subject_dn": request.subject_dn,
        "csr_der": request.csr_der,
        "decision": request.decision,
        "status": request.status.value,
        "created_at": request.created_at,
        "expires_at": request.expires_at,
        "reason": request.reason,
        "decided_at": request.decided_at,
        "issued_serial": (
            None if request.issued_serial is None else _serial_text(request.issued_serial)
        ),
        "key_id": request.key_id,
        "signer_key_id": request.signer_key_id,
    }


def _transaction_key(transaction_id: str) -> str:
    """What pending requests are found by: the transactionID without case (EJBCA)."""
    return transaction_id.lower()


_PENDING_COLUMNS = [c for c in pending_requests.c if c.name != "transaction_key"]


@asynccontextmanager
async def _translated(action: str) -> AsyncIterator[None]:
    """Turn database errors raised inside into StoreError; let ours through."""
    try:
        yield
    except StoreError:
        raise
    except _DATABASE_ERRORS as exc:
        raise StoreUnavailable("database error", detail=f"{action}: {exc}") from exc


def _unanswered(error: StoreUnavailable) -> bool:
    """Whether the database gave no answer (deadline, lost connection), rather than a refusal
    (SQLite's "disk is full" on COMMIT, for one, means the transaction was rolled back)."""
    if isinstance(error, StoreTimeout):
        return True
    cause = error.__cause__
    if isinstance(cause, DBAPIError):
        return cause.connection_invalidated or isinstance(cause.orig, OSError)
    return isinstance(cause, OSError)


class Store:
    """End entities, certificates, CRLs, pending requests. Create with :meth:`open`."""

    def __init__(self, engine: AsyncEngine, *, timeout: float = STORE_TIMEOUT_S) -> None:
        """Wrap an engine whose database is migrated; use :meth:`open` instead.

        ``timeout``: the overall bound of every operation (see :mod:`gateway.store.deadline`).
        """
        self._engine: AsyncEngine | None = engine
        self._timeout = timeout
        self.write_health = WriteHealth()
        # Built once: an options engine per write costs more than the write's own Python.
        self._write_engine = engine.execution_options(**WRITE_OPTIONS)
        # SQLite has one writer at a time; a waiting connection sleeps in SQLite's busy
        # handler (up to 100 ms a nap). Queueing this process's writers here instead lets the
        # next one start the moment the lock is free; other processes still use the handler.
        self._sqlite_writers = (
            asyncio.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @classmethod
    async def open(cls, url: str, *, deadline: float = STORE_TIMEOUT_S) -> Store:
        """Connect to ``url`` and migrate the database to the current schema.

        Every later operation ends within ``deadline`` seconds (StoreTimeout otherwise). The
        migration runs first on an engine of its own without those bounds: a migration of a
        large table may legitimately take longer than any request should.
        """
        setup = create_store_engine(url)
        try:
            async with _translated("prepare the database"):
                await enable_wal(setup)
                await migrate.upgrade(setup)
        finally:
            await setup.dispose()
        engine = create_store_engine(url, wait_timeout=driver_timeout(deadline))
        return cls(engine, timeout=deadline)

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
        async with (
            bounded(action, self._timeout),
            _translated(action),
            engine.connect() as connection,
        ):
            yield connection

    @asynccontextmanager
    async def _writing(self, action: str) -> AsyncIterator[AsyncConnection]:
        """One write transaction: committed at the end, rolled back on any exception.

        The deadline covers the wait in this process's queue of SQLite writers, the wait for
        the database's write lock, the statements and the COMMIT. Past it the transaction is
        rolled back (StoreTimeout): a caller never sees success for a write that did not
        commit. A COMMIT cut off by the deadline may still have committed; the caller then
        answers 503 for a stored record, which a retry of the client resolves.
        """
        self._live_engine()
        committing = False
        try:
            async with (
                bounded(action, self._timeout),
                self._sqlite_writers,
                _translated(action),
                self._write_engine.begin() as connection,
            ):
                yield connection
                committing = True  # what fails from here on is the COMMIT
        except StoreUnavailable as error:
            self.write_health.failed()
            if committing and _unanswered(error):
                # No client can tell whether a COMMIT that got no answer took effect (the
                # server may run it after a stall). Say so, with the action naming the record.
                log.error("commit in doubt: %s", error.detail)
            raise
        self.write_health.succeeded()

    async def ping(self) -> None:
        """Check that the database answers; StoreError if not."""
        async with self._reading("ping") as connection:
            await connection.execute(text("SELECT 1"))

    # End entities

    async def add_end_entity(self, entity: EndEntity) -> None:
        """Add an end entity; EntityExists if the username is taken."""
        async with self._writing(f"add end entity {entity.username!r}") as connection:
            try:
                await connection.execute(insert(end_entities).values(_entity_values(entity)))
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

    async def reset_end_entity(
        self,
        username: str,
        code_hash: str,
        now: datetime,
        *,
        code_expires_at: datetime | None = None,
    ) -> None:
        """Let the end entity enroll again with a new code: status NEW, no failed attempts,
        unlocked, the code valid until ``code_expires_at`` (None: no expiry). NoSuchEntity if
        absent."""
        if now.utcoffset() is None:
            raise InvalidRecord("now must be timezone-aware")
        if code_expires_at is not None:
            code_expires_at = _aware("code_expires_at", code_expires_at)
        async with self._writing(f"reset end entity {username!r}") as connection:
            result = await connection.execute(
                update(end_entities)
                .where(end_entities.c.username == username)
                .values(
                    code_hash=code_hash,
                    status=EntityStatus.NEW.value,
                    updated_at=now,
                    failed_attempts=0,
                    locked_at=None,
                    code_expires_at=code_expires_at,
                )
            )
            if result.rowcount != 1:
                raise NoSuchEntity(username)

    async def record_failed_attempt(self, username: str, limit: int | None, now: datetime) -> None:
        """Count a wrong code for ``username``; at ``limit`` wrong codes it is locked.

        One UPDATE: a wrong code is answered quickly whatever else writes. An unknown username
        runs the same statement (it matches no row), so that both paths issue the same query.
        """
        now = _aware("now", now)
        attempts = end_entities.c.failed_attempts + 1
        lock: Any = end_entities.c.locked_at
        if limit is not None:
            lock = case(
                (attempts >= limit, func.coalesce(end_entities.c.locked_at, now)), else_=lock
            )
        async with self._writing("count a failed attempt") as connection:
            await connection.execute(
                update(end_entities)
                .where(end_entities.c.username == username)
                .values(failed_attempts=attempts, locked_at=lock)
            )

    # Certificates

    async def record_issuance(
        self,
        cert: CertificateRecord,
        *,
        claim_entity: str | None = None,
        upsert_entity: EndEntity | None = None,
        complete_pending: int | None = None,
        expect_latest: ExpectLatest | None = None,
    ) -> None:
        """Record an issued certificate, with what the issuance changes, in one transaction.

        - ``claim_entity``: that end entity moves from NEW or FAILED to GENERATED (else
          EntityNotEnrollable): its enrollment code is used up.
        - ``upsert_entity`` (RA mode): that end entity is inserted, or the one of its username
          gets its subject DN, CA, code hash, status and ``updated_at`` (``created_at`` stays)
          if it has the same code hash; else EntityExists. Exclusive with ``claim_entity``
          (InvalidRecord).
        - ``expect_latest``: the end entity's latest certificate at this CA must still be the
          one given (a renewal), or there must be no valid one (a first RA enrollment); else
          LatestCertificateChanged. Checked with the end entity's row locked, so two
          concurrent issuances to one end entity cannot both pass.
        - ``complete_pending``: that pending request moves from APPROVED to ISSUED and names the
          certificate's serial (else PendingNotApproved).

        The certificate is inserted (SerialCollision if its CA already used the serial). Any
        failure leaves every table as it was.
        """
        if claim_entity is not None and upsert_entity is not None:
            raise InvalidRecord("claim_entity and upsert_entity are mutually exclusive")
        if upsert_entity is not None and not isinstance(upsert_entity, EndEntity):
            raise InvalidRecord("upsert_entity must be an EndEntity")
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
            if upsert_entity is not None:
                upserted = await conn.execute(
                    _upsert_statement(conn.dialect.name), _entity_values(upsert_entity)
                )
                if upserted.rowcount != 1:
                    raise EntityExists(upsert_entity.username)
            if complete_pending is not None:
                await self._complete_pending(conn, complete_pending, cert.serial)
            if expect_latest is not None and cert.username is not None:
                await self._check_latest(conn, cert, expect_latest)
            try:
                await conn.execute(_INSERT_CERTIFICATE, values)
            except IntegrityError as exc:
                if _is_unique_violation(exc):
                    raise SerialCollision(cert.ca, cert.serial) from exc
                raise
            if cert.revoked_at is not None:  # recorded revoked: its CRLs are stale
                await _count_revocation(conn, cert.ca)

    @staticmethod
    async def _check_latest(
        conn: AsyncConnection, cert: CertificateRecord, expect: ExpectLatest
    ) -> None:
        username = cert.username
        if conn.dialect.name == "postgresql":
            # SQLite's BEGIN IMMEDIATE already serializes writers; PostgreSQL locks the row.
            await conn.execute(
                select(end_entities.c.username)
                .where(end_entities.c.username == username)
                .with_for_update()
            )
        row = (
            (await conn.execute(_LATEST_CERTIFICATE, {"username": username, "ca": cert.ca}))
            .mappings()
            .one_or_none()
        )
        latest = None if row is None else _certificate_from_row(row)
        if expect.serial is None:
            if latest is not None and _valid_at(latest, expect.now):
                raise LatestCertificateChanged(str(username), None, latest.serial)
        elif latest is None or latest.serial != expect.serial:
            raise LatestCertificateChanged(
                str(username), expect.serial, latest.serial if latest else None
            )

    @staticmethod
    async def _complete_pending(conn: AsyncConnection, pending_id: int, serial: int) -> None:
        if not _storable_id(pending_id):
            raise PendingNotApproved(pending_id, None)
        completed = await conn.execute(
            update(pending_requests)
            .where(
                pending_requests.c.id == pending_id,
                pending_requests.c.status == PendingStatus.APPROVED.value,
            )
            .values(status=PendingStatus.ISSUED.value, issued_serial=_serial_text(serial))
        )
        if completed.rowcount != 1:
            status = await conn.scalar(
                select(pending_requests.c.status).where(pending_requests.c.id == pending_id)
            )
            raise PendingNotApproved(pending_id, status)

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

    async def list_certificates(
        self, *, username: str | None = None, ca: str | None = None
    ) -> list[CertificateRecord]:
        """Certificates (of one end entity, of one CA), by issue time, then serial."""
        query = self._select_certificates().order_by(
            certificates.c.issued_at, *_BY_SERIAL, certificates.c.id
        )
        if username is not None:
            query = query.where(certificates.c.username == username)
        if ca is not None:
            query = query.where(certificates.c.ca == ca)
        async with self._reading("list certificates") as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_certificate_from_row(row) for row in rows]

    async def latest_certificate(self, username: str, ca: str) -> CertificateRecord | None:
        """The certificate that CA ``ca`` issued last to end entity ``username``, revoked or not."""
        async with self._reading(f"latest certificate of {username!r}") as connection:
            result = await connection.execute(_LATEST_CERTIFICATE, {"username": username, "ca": ca})
            row = result.mappings().one_or_none()
        return None if row is None else _certificate_from_row(row)

    async def valid_certificate(
        self, username: str, ca: str, now: datetime
    ) -> CertificateRecord | None:
        """The end entity's latest certificate from ``ca`` if it is valid (not revoked, not
        expired) at ``now``."""
        latest = await self.latest_certificate(username, ca)
        return latest if latest is not None and _valid_at(latest, now) else None

    async def find_certificate_by_serial(self, serial: int) -> list[CertificateRecord]:
        """The certificates of that serial, from any CA (by CA name); empty if none."""
        if not _storable_serial(serial):
            return []
        query = (
            self._select_certificates()
            .where(certificates.c.serial == _serial_text(serial))
            .order_by(certificates.c.ca)
        )
        async with self._reading(f"find certificate {serial:#x}") as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_certificate_from_row(row) for row in rows]

    async def revoke_certificate(
        self, ca: str, serial: int, reason: str, at: datetime
    ) -> CertificateRecord:
        """Mark the certificate revoked at ``at`` for ``reason`` (an RFC 5280 CRLReason name).

        NoSuchCertificate if CA ``ca`` did not issue ``serial``; AlreadyRevoked if it is revoked
        (of two concurrent revocations exactly one succeeds). Returns the revoked record.
        """
        check_reason(reason)
        at = _aware("at", at)
        if not _storable_serial(serial):
            raise NoSuchCertificate(ca, serial)
        this = (certificates.c.ca == ca, certificates.c.serial == _serial_text(serial))
        async with self._writing(f"revoke certificate {serial:#x} of {ca!r}") as connection:
            revoked = await connection.execute(
                update(certificates)
                .where(*this, certificates.c.revoked_at.is_(None))
                .values(revoked_at=at, revocation_reason=reason)
            )
            result = await connection.execute(self._select_certificates().where(*this))
            row = result.mappings().one_or_none()
            if row is None:
                raise NoSuchCertificate(ca, serial)
            if revoked.rowcount != 1:
                raise AlreadyRevoked(ca, serial)
            await _count_revocation(connection, ca)
        return _certificate_from_row(row)

    async def revoked_certificates(self, ca: str) -> list[CertificateRecord]:
        """Every revoked certificate of CA ``ca``, by revocation time, then serial."""
        query = (
            self._select_certificates()
            .where(certificates.c.ca == ca, certificates.c.revoked_at.is_not(None))
            .order_by(certificates.c.revoked_at, *_BY_SERIAL)
        )
        async with self._reading(f"revoked certificates of {ca!r}") as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_certificate_from_row(row) for row in rows]

    async def count_certificates(self) -> int:
        """How many certificates are recorded."""
        async with self._reading("count certificates") as connection:
            count = await connection.scalar(select(func.count()).select_from(certificates))
        return int(count or 0)

    # CRLs

    async def publish_crl(
        self,
        ca: str,
        *,
        this_update: datetime,
        next_update: datetime,
        sign: Callable[[int], bytes],
        covers: int | None = None,
    ) -> CrlRecord:
        """Number, sign and store the next CRL of the series ``ca``, in one transaction.

        ``covers``: the CA's :meth:`revocation_count`, read before the revoked certificates
        the CRL lists were; recorded with it for :meth:`crl_state`.

        The number is one more than the highest stored (1 for the first); ``sign(number)``
        returns the DER of the CRL. Should another replica commit that number first (a unique
        violation), the next number is signed in a new transaction, up to
        :data:`CRL_NUMBER_ATTEMPTS` numbers in all; then StoreError. On PostgreSQL an advisory
        lock per series makes concurrent publishers wait for each other instead of clashing;
        on SQLite ``BEGIN IMMEDIATE`` does the same.
        """
        this_update = _aware("this_update", this_update)
        next_update = _aware("next_update", next_update)
        if next_update < this_update:
            raise InvalidRecord("next_update must not be before this_update")
        for _ in range(CRL_NUMBER_ATTEMPTS):
            try:
                return await self._publish_crl_once(ca, this_update, next_update, sign, covers)
            except _CrlNumberTaken:
                continue
        raise StoreError(
            "could not allocate a CRL number",
            detail=f"CRL of {ca!r}: {CRL_NUMBER_ATTEMPTS} numbers in a row were taken",
        )

    async def _publish_crl_once(
        self,
        ca: str,
        this_update: datetime,
        next_update: datetime,
        sign: Callable[[int], bytes],
        covers: int | None = None,
    ) -> CrlRecord:
        async with self._writing(f"publish CRL of {ca!r}") as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:class, :key)"),
                    {"class": _POSTGRES_CRL_LOCK_CLASS, "key": _crl_lock_key(ca)},
                )
            highest = await connection.scalar(
                select(func.max(crls.c.number)).where(crls.c.ca == ca)
            )
            number = 1 if highest is None else int(highest) + 1
            record = CrlRecord(
                ca=ca,
                number=number,
                this_update=this_update,
                next_update=next_update,
                der=sign(number),
                created_at=datetime.now(UTC),
            )
            try:
                await connection.execute(
                    insert(crls).values(
                        ca=record.ca,
                        number=record.number,
                        this_update=record.this_update,
                        next_update=record.next_update,
                        der=record.der,
                        created_at=record.created_at,
                    )
                )
            except IntegrityError as exc:
                if _is_unique_violation(exc):
                    raise _CrlNumberTaken from exc
                raise
            if covers is not None:
                await connection.execute(
                    insert(crl_coverage).values(series=ca, number=number, revocations=covers)
                )
        return record

    async def latest_crl(self, ca: str) -> CrlRecord | None:
        """The CRL of the series ``ca`` with the highest number, or None."""
        query = select(*_CRL_COLUMNS).where(crls.c.ca == ca).order_by(crls.c.number.desc()).limit(1)
        async with self._reading(f"latest CRL of {ca!r}") as connection:
            row = (await connection.execute(query)).mappings().one_or_none()
        return None if row is None else _crl_from_row(row)

    async def revocation_count(self, ca: str) -> int:
        """How many revocations CA ``ca`` has seen (never decreases)."""
        query = select(revocation_counters.c.revocations).where(revocation_counters.c.ca == ca)
        async with self._reading(f"revocation count of {ca!r}") as connection:
            count = await connection.scalar(query)
        return int(count or 0)

    async def crl_state(self, series: str, ca: str) -> CrlState | None:
        """The newest CRL of ``series`` without its DER, with the revocation count it lists
        and the current one of CA ``ca``: one indexed look-up, whatever the number of
        revoked certificates. None if the series has no CRL."""
        current = (
            select(revocation_counters.c.revocations)
            .where(revocation_counters.c.ca == ca)
            .scalar_subquery()
        )
        query = (
            select(
                crls.c.number,
                crls.c.this_update,
                crls.c.next_update,
                crl_coverage.c.revocations.label("covered"),
                current.label("current"),
            )
            .select_from(
                crls.outerjoin(
                    crl_coverage,
                    (crl_coverage.c.series == crls.c.ca) & (crl_coverage.c.number == crls.c.number),
                )
            )
            .where(crls.c.ca == series)
            .order_by(crls.c.number.desc())
            .limit(1)
        )
        async with self._reading(f"CRL state of {series!r}") as connection:
            row = (await connection.execute(query)).mappings().one_or_none()
        if row is None:
            return None
        return CrlState(
            number=row["number"],
            this_update=row["this_update"],
            next_update=row["next_update"],
            covered=row["covered"],
            revocations=int(row["current"] or 0),
        )

    # Pending requests

    async def add_pending(
        self, request: PendingRequest, *, limit: int | None = None
    ) -> PendingRequest:
        """Store a request that waits for approval; returns it with its id.

        In one transaction, serialized per alias (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: an
        advisory lock per alias), so that the checks hold on every replica:

        - pending requests of the same end entity on the alias that are past ``expires_at``
          are marked expired first (they no longer block a new request);
        - EntityPending if the end entity (``username``) still has an open request on the
          alias (a unique partial index backs this);
        - TooManyPending if the alias holds ``limit`` open requests (None: no limit);
        - PendingExists if the alias has a request with that transactionID (exact case) for
          the same key (``key_id``).
        """
        if request.id is not None:
            raise InvalidRecord("the store gives a pending request its id")
        action = f"add pending request {request.transaction_id!r} of {request.alias!r}"
        now = request.created_at
        async with self._writing(action) as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(:class, :key)"),
                    {"class": _POSTGRES_PENDING_LOCK_CLASS, "key": _crl_lock_key(request.alias)},
                )
            still_open = (
                pending_requests.c.alias == request.alias,
                pending_requests.c.status == PendingStatus.PENDING.value,
            )
            if request.username is not None:
                of_entity = pending_requests.c.username == request.username
                await connection.execute(
                    update(pending_requests)
                    .where(*still_open, of_entity, pending_requests.c.expires_at <= now)
                    .values(status=PendingStatus.EXPIRED.value)
                )
                row = (
                    (
                        await connection.execute(
                            self._select_pending().where(*still_open, of_entity).limit(1)
                        )
                    )
                    .mappings()
                    .one_or_none()
                )
                if row is not None:
                    raise EntityPending(_pending_from_row(row))
            if limit is not None:
                count = await connection.scalar(
                    select(func.count())
                    .select_from(pending_requests)
                    .where(*still_open, pending_requests.c.expires_at > now)
                )
                if int(count or 0) >= limit:
                    raise TooManyPending(request.alias, limit)
            try:
                result = await connection.execute(
                    insert(pending_requests).values(_pending_values(request))
                )
            except IntegrityError as exc:
                if _is_unique_violation(exc):
                    raise PendingExists(request.alias, request.transaction_id) from exc
                raise
            (new_id,) = result.inserted_primary_key or (None,)
        if new_id is None:  # pragma: no cover - both drivers report the id
            raise StoreError("internal store error", detail=f"{action}: no id")
        return replace(request, id=int(new_id))

    def _select_pending(self) -> Select[Any]:
        return select(*_PENDING_COLUMNS)

    async def get_pending(self, pending_id: int) -> PendingRequest | None:
        """The pending request of that id, or None."""
        if not _storable_id(pending_id):
            return None
        query = self._select_pending().where(pending_requests.c.id == pending_id)
        async with self._reading(f"get pending request {pending_id}") as connection:
            row = (await connection.execute(query)).mappings().one_or_none()
        return None if row is None else _pending_from_row(row)

    async def find_pending(self, alias: str, transaction_id: str) -> PendingRequest | None:
        """The request of that transactionID on the alias, whatever its case (EJBCA).

        Should two requests differ only in the case of their transactionID, the exact match
        wins, then the older one.
        """
        query = (
            self._select_pending()
            .where(
                pending_requests.c.alias == alias,
                pending_requests.c.transaction_key == _transaction_key(transaction_id),
            )
            .order_by(
                case((pending_requests.c.transaction_id == transaction_id, 0), else_=1),
                pending_requests.c.id,
            )
            .limit(1)
        )
        async with self._reading(f"find pending request {transaction_id!r}") as connection:
            row = (await connection.execute(query)).mappings().one_or_none()
        return None if row is None else _pending_from_row(row)

    async def find_pending_for_key(
        self,
        alias: str,
        transaction_id: str,
        key_id: str,
        *,
        or_signer: bool = False,
        any_transaction: bool = False,
    ) -> PendingRequest | None:
        """The request of that transactionID (whatever its case) on the alias whose CSR key has
        id ``key_id`` (``or_signer``: or whose PKCSReq was signed by that key), else None.

        The exact case wins, then the older one. ``any_transaction``: failing those, the
        newest request of that key under another transactionID.
        """
        pending = pending_requests.c
        same_transaction = pending.transaction_key == _transaction_key(transaction_id)
        key = pending.key_id == key_id
        if or_signer:
            key = or_(key, pending.signer_key_id == key_id)
        query = (
            self._select_pending()
            .where(pending.alias == alias, key, *(() if any_transaction else (same_transaction,)))
            .order_by(
                case((pending.transaction_id == transaction_id, 0), (same_transaction, 1), else_=2),
                case((same_transaction, pending.id), else_=-pending.id),
            )
            .limit(1)
        )
        async with self._reading(f"find pending request {transaction_id!r}") as connection:
            row = (await connection.execute(query)).mappings().one_or_none()
        return None if row is None else _pending_from_row(row)

    async def find_approved(self, alias: str, username: str) -> PendingRequest | None:
        """The newest request of the end entity on the alias that is approved but not issued."""
        query = (
            self._select_pending()
            .where(
                pending_requests.c.alias == alias,
                pending_requests.c.username == username,
                pending_requests.c.status == PendingStatus.APPROVED.value,
            )
            .order_by(pending_requests.c.created_at.desc(), pending_requests.c.id.desc())
            .limit(1)
        )
        async with self._reading(f"find approved request of {username!r}") as connection:
            row = (await connection.execute(query)).mappings().one_or_none()
        return None if row is None else _pending_from_row(row)

    async def list_pending(self, *, status: PendingStatus | None = None) -> list[PendingRequest]:
        """Pending requests (of one status), oldest first."""
        query = self._select_pending().order_by(
            pending_requests.c.created_at, pending_requests.c.id
        )
        if status is not None:
            try:
                wanted = PendingStatus(status)
            except ValueError:
                raise InvalidRecord(f"unknown pending request status {status!r}") from None
            query = query.where(pending_requests.c.status == wanted.value)
        async with self._reading("list pending requests") as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [_pending_from_row(row) for row in rows]

    async def decide_pending(
        self, pending_id: int, *, approve: bool, reason: str | None, now: datetime
    ) -> PendingRequest:
        """Approve or reject a request that is pending and not expired; returns it decided.

        NoSuchPending if there is none of that id. PendingNotDecidable if it is not pending
        (of two concurrent decisions exactly one succeeds) or if ``now`` is at or past its
        ``expires_at``: then it is marked expired (and that is committed) first.
        """
        now = _aware("now", now)
        if reason is not None and not isinstance(reason, str):
            raise InvalidRecord(f"reason must be a string, not {type(reason).__name__}")
        if not _storable_id(pending_id):
            raise NoSuchPending(pending_id)
        status = PendingStatus.APPROVED if approve else PendingStatus.REJECTED
        this = pending_requests.c.id == pending_id
        still_pending = pending_requests.c.status == PendingStatus.PENDING.value
        refusal: StoreError | None = None
        async with self._writing(f"decide pending request {pending_id}") as connection:
            decided = await connection.execute(
                update(pending_requests)
                .where(this, still_pending, pending_requests.c.expires_at > now)
                .values(status=status.value, reason=reason, decided_at=now)
            )
            row = (
                (await connection.execute(self._select_pending().where(this)))
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NoSuchPending(pending_id)
            if decided.rowcount != 1:
                current = row["status"]
                if current == PendingStatus.PENDING.value:
                    # Past its expiry: say so for good, then refuse (after the commit).
                    await connection.execute(
                        update(pending_requests)
                        .where(this, still_pending)
                        .values(status=PendingStatus.EXPIRED.value)
                    )
                    current = PendingStatus.EXPIRED.value
                refusal = PendingNotDecidable(pending_id, current)
        if refusal is not None:
            raise refusal
        return _pending_from_row(row)

    async def expire_pending(self, now: datetime) -> int:
        """Mark every pending request whose ``expires_at`` is not after ``now`` as expired.

        Returns how many were marked.
        """
        now = _aware("now", now)
        async with self._writing("expire pending requests") as connection:
            result = await connection.execute(
                update(pending_requests)
                .where(
                    pending_requests.c.status == PendingStatus.PENDING.value,
                    pending_requests.c.expires_at <= now,
                )
                .values(status=PendingStatus.EXPIRED.value)
            )
        return int(result.rowcount)


def _storable_serial(serial: int) -> bool:
    try:
        check_serial(serial)
    except InvalidRecord:
        return False
    return True
