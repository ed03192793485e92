"""Run the Alembic migrations in ``migrations/`` without an ``alembic.ini``.

:func:`upgrade` runs on every open. On PostgreSQL a transaction-scoped advisory lock makes
replicas that start together migrate one after the other; on SQLite ``BEGIN IMMEDIATE`` does
the same. DDL is transactional on both, so a failed migration leaves nothing behind.

A developer creates the next migration with::

    from alembic import command
    from gateway.store.migrate import alembic_config
    command.revision(alembic_config(url="sqlite:///var/dev.db"), "what changes",
                     autogenerate=True)
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import StoreError
from gateway.store.engine import WRITE_OPTIONS


@cache
def migrations_dir() -> str:
    """The ``migrations/`` package data as a directory Alembic can list.

    Found through :mod:`importlib.resources`, so it is the installed package's copy wherever that
    is. From a plain install it is that directory itself. From a zip import it is extracted once
    for the life of the process: Alembic reads the scripts as files, and Python 3.11's
    ``resources.as_file`` copies single files only.
    """
    found = resources.files("gateway.store") / "migrations"
    if isinstance(found, Path):
        return str(found)
    target = Path(tempfile.mkdtemp(prefix="scep-gateway-migrations-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    _extract(found, target)
    return str(target)


def _extract(source: Traversable, target: Path) -> None:
    for entry in source.iterdir():
        if entry.is_dir():
            (target / entry.name).mkdir()
            _extract(entry, target / entry.name)
        elif entry.name.endswith((".py", ".mako")):
            (target / entry.name).write_bytes(entry.read_bytes())


_POSTGRES_LOCK_KEY = 0x5343_4550_4757_0001
"""pg_advisory_xact_lock key held while migrating ("SCEPGW" 1)."""


def alembic_config(*, connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic configuration for our migrations, running on ``connection`` or ``url``."""
    config = Config()
    # ConfigParser interpolates '%': escape it in paths.
    config.set_main_option("script_location", migrations_dir().replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision that :func:`upgrade` brings a database to."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise StoreError("internal store error", detail="no migrations found")
    return head


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_LOCK_KEY})
    command.upgrade(alembic_config(connection=connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the head revision, in one transaction."""
    async with engine.execution_options(**WRITE_OPTIONS).begin() as connection:
        await connection.run_sync(_upgrade)
