"""Fixtures: every store test runs on SQLite (a file in tmp_path) and on PostgreSQL.

PostgreSQL is the local server (``SCEP_GATEWAY_TEST_POSTGRES``, default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``). Each test gets a database of its own,
created with a random name and dropped afterwards, so that test runs may overlap. An unreachable
server fails the PostgreSQL tests; it never skips them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store import Store

from .helpers import postgres_database


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
