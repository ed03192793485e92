"""The same gateway on PostgreSQL: a real client enrolls, the CLI sees the same state."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.interop.clients import scepclient_enroll
from tests.interop.conftest import start_server, stop_server
from tests.store.helpers import POSTGRES_ADMIN_URL

pytestmark = [pytest.mark.interop, pytest.mark.postgres]


async def _admin(statement: str) -> None:
    url = make_url(POSTGRES_ADMIN_URL)
    connection = await asyncpg.connect(
        host=url.host, port=url.port, user=url.username, database=url.database
    )
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def fresh_postgres() -> Iterator[str]:
    """A database of its own on the local PostgreSQL (fails, never skips, when unreachable)."""
    name = f"scepgw_{secrets.token_hex(8)}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_scepclient_enrolls_against_postgresql(tmp_path: Path) -> None:
    with fresh_postgres() as url:
        process, server = start_server(tmp_path, database=url)
        try:
            server.cli(
                "entity",
                "add",
                "--username",
                "pg-dev",
                "--password",
                "Pg-code-1",
                "--ca",
                "ManagementCA",
            )
            run = scepclient_enroll(
                server.url("scep"), tmp_path / "c", common_name="pg-dev", challenge="Pg-code-1"
            )
            assert run.ok, run.stdout + run.stderr
            assert "status: generated" in server.cli("entity", "show", "pg-dev").stdout
            again = scepclient_enroll(
                server.url("scep"), tmp_path / "d", common_name="pg-dev", challenge="Pg-code-1"
            )
            assert again.fail_info == "badRequest"
        finally:
            stop_server(process)
