"""ping, close, and databases that cannot be reached."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway.errors import StoreError
from gateway.store import Store

from .helpers import (
    POSTGRES_ADMIN_URL,
    T0,
    make_certificate,
    make_entity,
    make_pending,
    raw_engine,
)


async def test_ping_answers(store: Store) -> None:
    await store.ping()


async def test_closed_store_raises_store_error(database_url: str) -> None:
    store = await Store.open(database_url)
    await store.ping()
    await store.close()
    await store.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        await store.ping()
    with pytest.raises(StoreError):
        await store.get_end_entity("device-1")
    with pytest.raises(StoreError):
        await store.add_end_entity(make_entity())
    with pytest.raises(StoreError):
        await store.record_issuance(make_certificate(1))
    with pytest.raises(StoreError):
        await store.reset_end_entity("device-1", "h", T0)
    with pytest.raises(StoreError):
        await store.revoke_certificate("ca", 1, "superseded", T0)
    with pytest.raises(StoreError):
        await store.publish_crl("ca", this_update=T0, next_update=T0, sign=lambda n: b"")
    with pytest.raises(StoreError):
        await store.latest_crl("ca")
    with pytest.raises(StoreError):
        await store.add_pending(make_pending())
    with pytest.raises(StoreError):
        await store.expire_pending(T0)


async def test_unreachable_postgres_raises_store_error() -> None:
    url = make_url(POSTGRES_ADMIN_URL).set(host="127.0.0.1", port=1)
    with pytest.raises(StoreError):
        await Store.open(url.render_as_string(hide_password=False))


async def test_unopenable_sqlite_file_raises_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"not a directory")
    with pytest.raises(StoreError):
        await Store.open(f"sqlite:///{tmp_path / 'file' / 'gateway.db'}")


async def test_sqlite_file_that_is_not_a_database_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    path.write_bytes(b"this is not a SQLite database, just some bytes " * 100)
    with pytest.raises(StoreError):
        await Store.open(f"sqlite:///{path}")


@pytest.mark.postgres
async def test_ping_raises_store_error_once_the_database_is_gone(postgres_url: str) -> None:
    async with await Store.open(postgres_url) as store:
        await store.ping()
        name = make_url(postgres_url).database
        async with (
            raw_engine(POSTGRES_ADMIN_URL, autocommit=True) as admin,
            admin.connect() as connection,
        ):
            await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        with pytest.raises(StoreError):
            await store.ping()
        with pytest.raises(StoreError):
            await store.list_certificates()
        with pytest.raises(StoreError):
            await store.publish_crl("ca", this_update=T0, next_update=T0, sign=lambda n: b"")
        with pytest.raises(StoreError):
            await store.list_pending()
