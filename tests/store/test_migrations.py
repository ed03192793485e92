"""Store.open creates the schema with Alembic, and opening again changes nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import Connection

from gateway.errors import StoreError
from gateway.store import EntityStatus, PendingStatus, Store
from gateway.store.engine import SQLITE_BUSY_TIMEOUT_MS, WRITE_OPTIONS, create_store_engine
from gateway.store.migrate import alembic_config, head_revision
from gateway.store.tables import certificates, end_entities, metadata

from .helpers import CA, T0, make_certificate, make_entity, make_pending, raw_engine


@dataclass
class Schema:
    tables: set[str]
    unique: dict[str, set[str | None]]
    indexes: dict[str, dict[str | None, list[str | None]]]
    entity_pk: list[str]
    diff: list[Any]


STORE_TABLES = (
    "end_entities",
    "certificates",
    "crls",
    "pending_requests",
    "revocation_counters",
    "crl_coverage",
)


def _schema(connection: Connection) -> Schema:
    inspector = inspect(connection)
    return Schema(
        tables=set(inspector.get_table_names()),
        unique={
            table: {u["name"] for u in inspector.get_unique_constraints(table)}
            for table in STORE_TABLES
        },
        indexes={
            table: {
                i["name"]: i["column_names"]
                for i in inspector.get_indexes(table)
                if not i.get("duplicates_constraint")  # PostgreSQL: the index behind a UNIQUE
            }
            for table in STORE_TABLES
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

    assert schema.tables == {"alembic_version", *STORE_TABLES}
    assert schema.unique == {
        "end_entities": set(),
        "certificates": {"uq_certificates_ca_serial"},
        "crls": {"uq_crls_ca_number"},
        "pending_requests": {"uq_pending_requests_alias_transaction_id_key_id"},
        "revocation_counters": set(),
        "crl_coverage": set(),
    }
    assert schema.indexes == {
        "end_entities": {},
        "certificates": {
            "ix_certificates_username_ca": ["username", "ca"],
            "ix_certificates_transaction_id": ["transaction_id"],
            "ix_certificates_issuer_dn_serial": ["issuer_dn", "serial"],
        },
        "crls": {},
        "pending_requests": {
            "ix_pending_requests_alias_transaction_key": ["alias", "transaction_key"],
            "ix_pending_requests_alias_username": ["alias", "username"],
            "ix_pending_requests_status_expires_at": ["status", "expires_at"],
            "uq_pending_requests_open_entity": ["alias", "username"],
        },
        "revocation_counters": {},
        "crl_coverage": {},
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


async def test_every_kind_of_record_survives_close_and_reopen(database_url: str) -> None:
    async with await Store.open(database_url) as store:
        await store.add_end_entity(make_entity("claimed"))
        await store.record_issuance(make_certificate(1, username="claimed"), claim_entity="claimed")
        upserted = replace(make_entity("ra-1"), status=EntityStatus.GENERATED)
        await store.record_issuance(make_certificate(2, username="ra-1"), upsert_entity=upserted)
        revoked = await store.revoke_certificate(CA, 1, "superseded", T0 + timedelta(days=1))
        crl = await store.publish_crl(
            CA, this_update=T0, next_update=T0 + timedelta(days=1), sign=lambda n: bytes([n])
        )
        waiting = await store.add_pending(make_pending("Tx-Wait"))
        approved = await store.add_pending(make_pending("tx-approved", username="ra-2"))
        assert approved.id is not None
        approved = await store.decide_pending(approved.id, approve=True, reason="ok", now=T0)
        entities = await store.list_end_entities()
        certs = await store.list_certificates()

    async with await Store.open(database_url) as store:
        assert await store.list_end_entities() == entities
        assert await store.get_end_entity("ra-1") == upserted
        assert await store.list_certificates() == certs
        assert await store.revoked_certificates(CA) == [revoked]
        assert await store.latest_certificate("ra-1", CA) == make_certificate(2, username="ra-1")
        assert await store.latest_crl(CA) == crl
        assert await store.find_pending("scep", "tx-wait") == waiting
        assert await store.find_approved("scep", "ra-2") == approved
        assert await store.list_pending() == [waiting, approved]
        assert (
            await store.publish_crl(
                CA, this_update=T0, next_update=T0 + timedelta(days=1), sign=lambda n: bytes([n])
            )
        ).number == 2


async def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    """Bring the database to ``revision`` with Alembic, as an older gateway would have."""

    def run(connection: Connection) -> None:
        config = alembic_config(connection=connection)
        if down:
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)

    engine = create_store_engine(url)
    try:
        async with engine.execution_options(**WRITE_OPTIONS).begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()


async def test_upgrade_from_0001_keeps_the_rows(database_url: str) -> None:
    await _migrate(database_url, "0001")
    assert await _versions(database_url) == ["0001"]
    entities = [make_entity("alice"), make_entity("bob", status=EntityStatus.GENERATED)]
    certs = [
        make_certificate(0x1, username="bob"),
        make_certificate(0x2, username="bob", issued_at=T0 + timedelta(days=1)),
        replace(
            make_certificate(0xFF, username=None),
            revoked_at=T0 + timedelta(hours=2),
            revocation_reason="keyCompromise",
        ),
    ]
    # Rows written the way the store of revision 0001 wrote them (these tables keep their
    # columns in 0002).
    async with raw_engine(database_url) as engine, engine.begin() as connection:
        for entity in entities:
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
        for cert in certs:
            await connection.execute(
                insert(certificates).values(
                    {
                        "ca": cert.ca,
                        "serial": format(cert.serial, "x"),
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
                )
            )

    async with await Store.open(database_url) as store:
        assert await _versions(database_url) == [head_revision()]
        assert await store.list_end_entities() == entities
        assert await store.list_certificates() == [certs[0], certs[2], certs[1]]
        assert await store.latest_certificate("bob", CA) == certs[1]
        assert await store.revoked_certificates(CA) == [certs[2]]
        # The old rows work with what 0002 added.
        revoked = await store.revoke_certificate(CA, 0x1, "superseded", T0 + timedelta(days=2))
        assert await store.revoked_certificates(CA) == [certs[2], revoked]
        # 0005 counted the revocation made before it; the new one counts on.
        assert await store.revocation_count(CA) == 2
        await store.record_issuance(
            make_certificate(0x3, username="bob"),
            upsert_entity=replace(entities[1], subject_dn="CN=bob", updated_at=T0 + timedelta(1)),
        )
        bob = await store.get_end_entity("bob")
        assert bob is not None
        assert (bob.subject_dn, bob.created_at) == ("CN=bob", T0)
        assert (
            await store.publish_crl(
                CA, this_update=T0, next_update=T0 + timedelta(days=1), sign=lambda n: b"crl"
            )
        ).number == 1
        pending = await store.add_pending(make_pending())
        assert await store.find_pending("scep", "TX-1") == pending

    async with raw_engine(database_url) as engine, engine.connect() as connection:
        schema = await connection.run_sync(_schema)
    assert schema.diff == []
    assert "ix_certificates_username" not in schema.indexes["certificates"]


async def test_downgrade_to_0001_keeps_certificates_and_upgrades_again(database_url: str) -> None:
    cert = make_certificate(0x10, username="alice")
    async with await Store.open(database_url) as store:
        await store.add_end_entity(make_entity("alice"))
        await store.record_issuance(cert, claim_entity="alice")
        await store.add_pending(make_pending(status=PendingStatus.APPROVED))

    await _migrate(database_url, "0001", down=True)
    async with raw_engine(database_url) as engine, engine.connect() as connection:
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert tables == {"alembic_version", "end_entities", "certificates"}
    assert await _versions(database_url) == ["0001"]

    async with await Store.open(database_url) as store:
        assert await store.list_certificates() == [cert]
        assert await store.list_pending() == []
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
