"""Item 10 of docs/security.md: an enrollment code may expire (NDES: one-time passwords expire
after 60 minutes); an expired code is answered exactly like a wrong one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.errors import FailInfo
from gateway.policy import codes
from gateway.scep.messages import PkiStatus
from tests.conftest import Gateway, running_gateway
from tests.support import Clock, Device, fresh_key

WRONG = (FailInfo.BAD_REQUEST, "authentication failed")


@pytest.fixture
async def gw(
    tmp_path: Path, shared_data_dir: Path, database_url: str
) -> AsyncIterator[tuple[Gateway, Clock]]:
    clock = Clock()
    async with running_gateway(
        tmp_path, shared_data_dir, clock=clock, database_url=database_url
    ) as running:
        yield running, clock


async def _cli(gw: Gateway, *args: str) -> int:
    s = gw.settings
    common = ["--config", str(s.config_dir), "--data-dir", str(s.data_dir)]
    return await asyncio.to_thread(main, [*args, *common, "--database", str(s.database_url)])


async def _enroll(gw: Gateway, name: str, code: str) -> tuple[object, ...]:
    device = Device(name, key=fresh_key())
    reply = device.read(await gw.pki(device.pkcsreq(code, gw.recipients())))
    if reply.status is PkiStatus.SUCCESS:
        return ("SUCCESS",)
    return (reply.fail_info, reply.fail_info_text)


async def _add(gw: Gateway, name: str, *extra: str) -> None:
    args = ["entity", "add", "--username", name, "--password", f"Code-{name}", *extra]
    assert await _cli(gw, *args, "--ca", "ManagementCA") == 0


async def test_an_expired_code_is_answered_like_a_wrong_one(
    gw: tuple[Gateway, Clock], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, clock = gw
    await _add(gateway, "fresh", "--code-valid-hours", "1")
    await _add(gateway, "stale", "--code-valid-hours", "1")
    await _add(gateway, "forever")
    capsys.readouterr()
    assert await _cli(gateway, "entity", "show", "stale") == 0
    assert "code expires: 20" in capsys.readouterr().out
    assert await _cli(gateway, "entity", "show", "forever") == 0
    assert "code expires: never" in capsys.readouterr().out
    assert await _cli(gateway, "entity", "list") == 0
    listed = capsys.readouterr().out
    assert "code-expires=never" in listed
    assert "code-expires=20" in listed

    assert await _enroll(gateway, "fresh", "Code-fresh") == ("SUCCESS",)
    clock.now += timedelta(hours=2)
    scrypt: list[int] = []
    real = codes._derive

    def counted(*args: Any) -> bytes:
        scrypt.append(1)
        return real(*args)

    monkeypatch.setattr(codes, "_derive", counted)
    assert await _enroll(gateway, "stale", "Code-stale") == WRONG
    assert len(scrypt) == 1  # the same hash work as a wrong code
    assert await _enroll(gateway, "stale", "Not-the-code") == WRONG
    assert await _enroll(gateway, "forever", "Code-forever") == ("SUCCESS",)
    # A reset gives a new code, by default without expiry.
    assert await _cli(gateway, "entity", "reset", "stale", "--password", "Code-stale-2") == 0
    assert await _enroll(gateway, "stale", "Code-stale-2") == ("SUCCESS",)


async def test_expires_at_takes_an_instant_with_a_zone(
    gw: tuple[Gateway, Clock], capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, clock = gw
    past = (clock.now - timedelta(minutes=1)).isoformat()
    await _add(gateway, "past", "--expires-at", past)
    assert await _enroll(gateway, "past", "Code-past") == WRONG
    capsys.readouterr()
    args = ["entity", "add", "--username", "naive", "--password", "Code-naive"]
    assert await _cli(gateway, *args, "--expires-at", "2030-01-01T00:00:00", "--ca", "x") == 1
    assert "time zone" in capsys.readouterr().err
    assert await gateway.services.store.get_end_entity("naive") is None
