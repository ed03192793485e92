"""Store.open creates the schema with Alembic, and opening again changes nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from gateway.errors import StoreError
from gateway.store import Store
from gateway.store.engine import SQLITE_BUSY_TIMEOUT_MS, create_store_engine
from gateway.store.migrate import head_revision
from gateway.store.tables import metadata

from .helpers import make_certificate, make_entity, raw_engine


@dataclass
class Schema:
    tables: set[str]
    unique: set[str | None]
    indexes: dict[str | None, list[str | None]]
    entity_pk: list[str]
    diff: list[Any]


def _schema(connection: Connection) -> Schema:
    inspector = inspect(connection)
    return Schema(
        tables=set(inspector.get_table_names()),
        unique={u["name"] for u in inspector.get_unique_constraints("certificates")},
        indexes={
            i["name"]: i["column_names"]
            for i in inspector.get_indexes("certificates")
            if not i.get("duplicates_constraint")  # PostgreSQL: the index behind a UNIQUE
        },
        entity_pk=inspector.get_pk_constraint("end_entities")["constrained_columns"],
        diff=compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), metadata
        ),
    )


async def _versions(url: str) -> list[str]:
    async with raw_engine(url) as engine, engine.connect() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        return [row[0] for row in result]


async def test_open_creates_the_schema(database_url: str) -> None:
    store = await Store.open(database_url)
    await store.close()

    async with raw_engine(database_url) as engine, engine.connect() as connection:
        schema = await connection.run_sync(_schema)

    assert schema.tables == {"alembic_version", "end_entities", "certificates"}
    assert "uq_certificates_ca_serial" in schema.unique
    assert schema.indexes == {
        "ix_certificates_username": ["username"],
        "ix_certificates_transaction_id": ["transaction_id"],
        "ix_certificates_issuer_dn_serial": ["issuer_dn", "serial"],
    }
    assert schema.entity_pk == ["username"]
    assert schema.diff == [], "migrations and tables.py disagree"
    assert await _versions(database_url) == [head_revision()]


async def test_reopen_is_idempotent_and_keeps_data(database_url: str) -> None:
    entity, cert = make_entity(), make_certificate(0x1234)
    async with await Store.open(database_url) as store:
        await store.add_end_entity(entity)
        await store.record_issuance(cert)

    for _ in range(2):
        async with await Store.open(database_url) as store:
            assert await store.get_end_entity(entity.username) == entity
            assert await store.get_certificate(cert.ca, cert.serial) == cert
            assert await store.count_certificates() == 1
    assert await _versions(database_url) == [head_revision()]


async def test_replicas_opening_together_migrate_once(database_url: str) -> None:
    stores = await asyncio.gather(*(Store.open(database_url) for _ in range(3)))
    try:
        await stores[0].add_end_entity(make_entity())
        for store in stores:
            assert await store.get_end_entity("device-1") == make_entity()
    finally:
        for store in stores:
            await store.close()
    assert await _versions(database_url) == [head_revision()]


async def test_database_from_an_unknown_revision_is_refused(database_url: str) -> None:
    async with await Store.open(database_url):
        pass
    async with raw_engine(database_url) as engine, engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))

    with pytest.raises(StoreError, match="f00dfeed"):
        await Store.open(database_url)


async def test_plain_urls_get_the_async_driver(database_url: str) -> None:
    plain = database_url.replace("+aiosqlite", "").replace("+asyncpg", "")
    assert plain != database_url
    async with await Store.open(plain) as store:
        await store.ping()
        await store.add_end_entity(make_entity())
    async with await Store.open(database_url) as store:
        assert await store.get_end_entity("device-1") == make_entity()


async def test_sqlite_creates_the_directory_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c" / "gateway.db"
    async with await Store.open(f"sqlite:///{path}") as store:
        await store.ping()
    assert path.is_file()


async def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    async with await Store.open(url):
        pass
    engine = create_store_engine(url)
    try:
        async with engine.connect() as connection:
            journal = await connection.scalar(text("PRAGMA journal_mode"))
            keys = await connection.scalar(text("PRAGMA foreign_keys"))
            timeout = await connection.scalar(text("PRAGMA busy_timeout"))
    finally:
        await engine.dispose()
    assert (journal, keys, timeout) == ("wal", 1, SQLITE_BUSY_TIMEOUT_MS)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite+aiosqlite://",
        "sqlite:///:memory:",
        "mysql+aiomysql://root@127.0.0.1/test",
        "postgresql+psycopg2://postgres@127.0.0.1/test",
        "not a url",
    ],
)
async def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError):
        await Store.open(url)
