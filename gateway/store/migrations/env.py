"""Alembic environment of the store.

At run time :func:`gateway.store.migrate.upgrade` hands over an open connection inside its
transaction (``config.attributes["connection"]``). Without one (a developer's
``command.revision(..., autogenerate=True)``) a URL from ``sqlalchemy.url`` is used.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from gateway.errors import StoreError
from gateway.store.engine import WRITE_OPTIONS, create_store_engine
from gateway.store.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_url(url: str) -> None:
    engine = create_store_engine(url)
    try:
        async with engine.execution_options(**WRITE_OPTIONS).begin() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


def _main() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise StoreError("internal store error", detail="migrations need a connection or a URL")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_on_url(url))


_main()
