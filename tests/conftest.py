"""Shared fixtures: a gateway app on a copy of config.example with its own data directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from quart import Quart, Response
from quart.typing import TestClientProtocol

from gateway.app import create_app
from gateway.http.routes import Services
from gateway.settings import Settings
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


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CA and RA keys are created once per session; each test still gets its own database."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
async def gateway(tmp_path: Path, shared_data_dir: Path) -> AsyncIterator[Gateway]:
    settings = Settings(
        config_dir=copy_config(tmp_path),
        data_dir=shared_data_dir,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.sqlite3'}",
        watch_config=False,
    )
    app = create_app(settings)
    async with app.test_app() as test_app:
        yield Gateway(app, test_app.test_client(), app.config["SERVICES"], settings)
