"""Fixtures: every store test runs on SQLite (a file in tmp_path) and on PostgreSQL.

PostgreSQL is the local server (``SCEP_GATEWAY_TEST_POSTGRES``, default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``). Each test gets a database of its own,
created with a random name and dropped afterwards, so that test runs may overlap. An unreachable
server fails the PostgreSQL tests; it never skips them.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from gateway.store import Store

from .helpers import POSTGRES_ADMIN_URL, raw_engine


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


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'store' / 'gateway.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """URL of an empty database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """URL of a fresh PostgreSQL database, for tests about PostgreSQL alone."""
    async with postgres_database() as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """An open store on an empty database, closed after the test."""
    opened = await Store.open(database_url)
    try:
        yield opened
    finally:
        await opened.close()
