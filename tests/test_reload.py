"""Hot reload: edits apply while serving, broken edits never replace what serves.

Waits are bounded polls on the reloader's state (the watcher runs on its own task); no test
asserts how fast, the benchmark notes measure that.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.http.routes import Services
from gateway.settings import Settings
from tests.conftest import Gateway, body_of, running_gateway
from tests.support import copy_config

pytestmark = pytest.mark.asyncio
WAIT_SECONDS = 15  # generous: only a hang fails


@pytest.fixture
async def watched(tmp_path: Path, shared_data_dir: Path) -> AsyncIterator[Gateway]:
    async with running_gateway(tmp_path, shared_data_dir, watch=True) as running:
        yield running


async def _next_generation(services: Services, after: int) -> None:
    async with asyncio.timeout(WAIT_SECONDS):
        await services.reloader.wait_for(lambda s: s.generation > after)


async def _errors(services: Services) -> tuple[str, ...]:
    async with asyncio.timeout(WAIT_SECONDS):
        state = await services.reloader.wait_for(lambda s: bool(s.errors))
    return tuple(str(e) for e in state.errors)


async def _caps_status(gateway: Gateway, alias: str) -> int:
    return (
        await gateway.client.get(f"/scep/{alias}/pkiclient.exe?operation=GetCACaps")
    ).status_code


async def test_new_alias_is_served_after_an_edit(watched: Gateway) -> None:
    assert await _caps_status(watched, "fresh") == 404
    generation = watched.services.reloader.state.generation
    aliases = watched.settings.config_dir / "aliases"
    (aliases / "fresh.yaml").write_text("ca: ManagementCA\ncapabilities: [AES, SHA-256]\n")
    await _next_generation(watched.services, generation)
    response = await watched.client.get("/scep/fresh/pkiclient.exe?operation=GetCACaps")
    assert await body_of(response) == b"AES\nSHA-256\n"


async def test_removed_alias_stops_being_served(watched: Gateway) -> None:
    generation = watched.services.reloader.state.generation
    (watched.settings.config_dir / "aliases" / "ndes.yaml").unlink()
    await _next_generation(watched.services, generation)
    assert await _caps_status(watched, "ndes") == 404
    assert await _caps_status(watched, "scep") == 200


async def test_broken_edit_keeps_the_last_good_snapshot(watched: Gateway) -> None:
    before = watched.services.snapshot()
    scep = watched.settings.config_dir / "aliases" / "scep.yaml"
    good = scep.read_text()
    scep.write_text(good + "include_ca_cert: false\n")
    errors = await _errors(watched.services)
    assert errors == (
        "aliases/scep.yaml:$: unknown field (the 7th key of this object): "
        "did you mean include_ca_certificate?",
    )
    assert watched.services.snapshot() is before
    assert await _caps_status(watched, "scep") == 200
    ready = await watched.client.get("/readyz")
    assert ready.status_code == 200
    report = json.loads(await body_of(ready))
    assert report["status"] == "ready"
    assert report["config_errors"] == list(errors)
    metrics = (await body_of(await watched.client.get("/metrics"))).decode()
    assert 'scep_config_reloads_total{result="failure"}' in metrics
    assert "scep_config_last_reload_success 0" in metrics
    # Fixing the file clears the error.
    generation = watched.services.reloader.state.generation
    scep.write_text(good.replace("include_ca_certificate: true", "include_ca_certificate: false"))
    await _next_generation(watched.services, generation)
    assert watched.services.reloader.state.errors == ()
    assert watched.services.snapshot().alias("scep").config.include_ca_certificate is False
    report = json.loads(await body_of(await watched.client.get("/readyz")))
    assert report["config_errors"] == []


def _configmap_generation(root: Path, source: Path, name: str) -> None:
    """Write a timestamped directory and swap `..data` to it, as the kubelet does."""
    target = root / name
    shutil.copytree(source, target)
    tmp_link = root / "..data_tmp"
    tmp_link.symlink_to(name)
    os.replace(tmp_link, root / "..data")  # atomic rename over the old symlink


@pytest.fixture
async def configmap(tmp_path: Path, shared_data_dir: Path) -> AsyncIterator[tuple[Gateway, Path]]:
    source = copy_config(tmp_path / "src")
    mount = tmp_path / "mount"
    mount.mkdir()
    _configmap_generation(mount, source, "..2026_11_27_00_00_00.1")
    for folder in ("aliases", "cas", "profiles"):
        (mount / folder).symlink_to(f"..data/{folder}")
    settings = Settings(
        config_dir=mount,
        data_dir=shared_data_dir,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'gateway.sqlite3'}",
        watch_config=True,
    )
    app = create_app(settings)
    async with app.test_app() as test_app:
        yield Gateway(app, test_app.test_client(), app.config["SERVICES"], settings), source


async def test_configmap_symlink_swap_is_picked_up(configmap: tuple[Gateway, Path]) -> None:
    gateway, source = configmap
    mount = gateway.settings.config_dir
    assert await _caps_status(gateway, "swapped") == 404
    (source / "aliases" / "swapped.yaml").write_text("ca: ManagementCA\n")
    generation = gateway.services.reloader.state.generation
    _configmap_generation(mount, source, "..2026_11_27_00_01_00.2")
    shutil.rmtree(mount / "..2026_11_27_00_00_00.1")  # the kubelet removes the old one
    await _next_generation(gateway.services, generation)
    assert await _caps_status(gateway, "swapped") == 200
