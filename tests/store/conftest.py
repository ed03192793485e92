"""Fixtures: every store test runs on SQLite and on PostgreSQL (`database_url`, tests/conftest).

PostgreSQL is the local server (``SCEP_GATEWAY_TEST_POSTGRES``, default
``postgresql+asyncpg://postgres@127.0.0.1:5432/test``). Each test gets a database of its own,
created with a random name and dropped afterwards, so that test runs may overlap. An unreachable
server fails the PostgreSQL tests; it never skips them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.store import Store

from .helpers import postgres_database


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
