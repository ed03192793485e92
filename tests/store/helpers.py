"""Record factories and a raw engine for looking at the database behind the store's back."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from gateway.store import (
    CertificateRecord,
    EndEntity,
    EntityStatus,
    PendingRequest,
    PendingStatus,
)

POSTGRES_ADMIN_URL = os.environ.get(
    "SCEP_GATEWAY_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
"""The local PostgreSQL server, as a role that may create databases, on an existing database."""

T0 = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
"""A fixed instant with microseconds, to check exact round trips."""

CA = "main-ca"
ISSUER_DN = "CN=Main CA,O=Example"
ALIAS = "scep"


def make_entity(
    username: str = "device-1",
    *,
    status: EntityStatus = EntityStatus.NEW,
    code_hash: str = "scrypt$salt$hash",
    at: datetime = T0,
) -> EndEntity:
    return EndEntity(
        username=username,
        code_hash=code_hash,
        subject_dn=f"CN={username},O=Example",
        ca=CA,
        status=status,
        created_at=at,
        updated_at=at,
    )


def make_certificate(
    serial: int,
    *,
    ca: str = CA,
    issuer_dn: str = ISSUER_DN,
    username: str | None = "device-1",
    issued_at: datetime = T0,
    transaction_id: str | None = None,
) -> CertificateRecord:
    return CertificateRecord(
        ca=ca,
        serial=serial,
        subject_dn=f"CN={username or 'anonymous'},O=Example",
        issuer_dn=issuer_dn,
        username=username,
        transaction_id=transaction_id or f"tx-{serial:x}",
        not_before=issued_at - timedelta(minutes=5),
        not_after=issued_at + timedelta(days=365),
        der=b"\x30\x82\x01\x00\x00\xff" + f"{serial:x}".encode() + b"\x00\xff" * 8,
        issued_at=issued_at,
    )


_BY_TRANSACTION = "by transaction"


def make_pending(
    transaction_id: str = "tx-1",
    *,
    alias: str = ALIAS,
    username: str | None = _BY_TRANSACTION,
    key_id: str | None = "key-1",
    status: PendingStatus = PendingStatus.PENDING,
    created_at: datetime = T0,
    lifetime: timedelta = timedelta(hours=8),
) -> PendingRequest:
    """A pending request; by default of its own end entity (one open request per entity)."""
    if username == _BY_TRANSACTION:
        username = f"device-{transaction_id}"
    return PendingRequest(
        alias=alias,
        ca=CA,
        transaction_id=transaction_id,
        username=username,
        subject_dn=f"CN={username or 'anonymous'},O=Example",
        csr_der=b"\x30\x82\x02\x00" + transaction_id.encode() + b"\x00\xff" * 4,
        decision=f'{{"transaction": "{transaction_id}", "sans": [["dns", "a.example"]]}}',
        status=status,
        created_at=created_at,
        expires_at=created_at + lifetime,
        key_id=key_id,
    )


@asynccontextmanager
async def raw_engine(url: str, *, autocommit: bool = False) -> AsyncIterator[AsyncEngine]:
    """A plain engine (no pool) on the store's database, disposed at the end."""
    if autocommit:
        engine = create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    else:
        engine = create_async_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """Create a fresh database on the local PostgreSQL; yield its URL; drop it."""
    name = f"scepgw_{secrets.token_hex(8)}"
    async with raw_engine(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        try:
            async with admin.connect() as connection:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
        except (SQLAlchemyError, OSError) as exc:
            pytest.fail(
                f"the store tests need PostgreSQL at {POSTGRES_ADMIN_URL} "
                f"(set SCEP_GATEWAY_TEST_POSTGRES): {exc}"
            )
        try:
            yield (
                make_url(POSTGRES_ADMIN_URL)
                .set(database=name)
                .render_as_string(hide_password=False)
            )
        finally:
            async with admin.connect() as connection:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
