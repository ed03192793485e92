"""Shared fixtures: a gateway app on a copy of config.example with its own data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509
from quart import Quart, Response
from quart.typing import TestClientProtocol

from gateway.app import create_app
from gateway.http.routes import Services
from gateway.settings import Settings
from tests.store.helpers import postgres_database
from tests.support import copy_config


async def body_of(response: Response) -> bytes:
    return await response.get_data(as_text=False)


@dataclass
class Gateway:
    app: Quart
    client: TestClientProtocol
    services: Services
    settings: Settings

    async def ca_certificate(self, alias: str = "scep") -> x509.Certificate:
        response = await self.client.get(f"/scep/{alias}/pkiclient.exe?operation=GetCACert")
        return x509.load_der_x509_certificate(await body_of(response))

    def recipients(self, alias: str = "scep") -> list[x509.Certificate]:
        runtime = self.services.snapshot().alias(alias)
        return [k.decrypter.certificate for k in runtime.keys]

    async def pki(self, body: bytes, alias: str = "scep") -> bytes:
        response = await self.client.post(
            f"/scep/{alias}/pkiclient.exe?operation=PKIOperation", data=body
        )
        assert response.status_code == 200, await response.get_data()
        assert response.headers["Content-Type"] == "application/x-pki-message"
        return await body_of(response)


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'store' / 'gateway.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """URL of an empty database: a SQLite file, or a fresh PostgreSQL database of its own
    (random name, dropped afterwards). An unreachable PostgreSQL fails; it never skips."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    async with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA and RA keys are created once per session; each test still gets its own database."""
    return tmp_path_factory.mktemp("data")


@asynccontextmanager
async def running_gateway(
    tmp_path: Path,
    data_dir: Path,
    files: Mapping[str, str] | None = None,
    *,
    watch: bool = False,
    clock: Callable[[], datetime] | None = None,
    database_url: str | None = None,
) -> AsyncIterator[Gateway]:
    """config.example plus ``files`` (path in the config dir -> YAML text), served in-process."""
    config_dir = copy_config(tmp_path)
    for name, text in (files or {}).items():
        (config_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (config_dir / name).write_text(text)
    settings = Settings(
        config_dir=config_dir,
        data_dir=data_dir,
        database_url=database_url or f"sqlite+aiosqlite:///{tmp_path / 'gateway.sqlite3'}",
        watch_config=watch,
        refresh_crls=False,
    )
    app = create_app(settings, clock=clock) if clock else create_app(settings)
    async with app.test_app() as test_app:
        yield Gateway(app, test_app.test_client(), app.config["SERVICES"], settings)


@pytest.fixture
async def gateway(tmp_path: Path, shared_data_dir: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path, shared_data_dir) as running:
        yield running
