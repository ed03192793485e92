"""Item 5 of docs/security.md: CA-mode end entities lock after N wrong codes, and every
wrong-code path answers alike after the same hash work.

The hash work is counted (a spy around the hash functions), not timed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.errors import FailInfo
from gateway.policy import codes
from gateway.scep.messages import PkiStatus
from tests.conftest import Gateway, running_gateway
from tests.support import Device, fresh_key, register

SECRET = "Lockout-RA-Secret-1"
ALIASES = {
    "aliases/ra-open.yaml": "mode: ra\nca: ManagementCA\n"
    "ra:\n  secret: {env: SCEP_TEST_RA_SECRET}\n",
}
WRONG = ("authentication failed", FailInfo.BAD_REQUEST)


@pytest.fixture
async def gw(
    tmp_path: Path, shared_data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("SCEP_TEST_RA_SECRET", SECRET)
    async with running_gateway(
        tmp_path, shared_data_dir, ALIASES, database_url=database_url
    ) as running:
        yield running


async def _cli(gw: Gateway, *args: str) -> int:
    s = gw.settings
    common = ["--config", str(s.config_dir), "--data-dir", str(s.data_dir)]
    return await asyncio.to_thread(main, [*args, *common, "--database", str(s.database_url)])


async def _enroll(gw: Gateway, name: str, code: str, alias: str = "scep") -> tuple[Any, ...]:
    device = Device(name, key=fresh_key())
    reply = device.read(await gw.pki(device.pkcsreq(code, gw.recipients(alias)), alias))
    return (
        (reply.fail_info_text, reply.fail_info)
        if reply.status is not PkiStatus.SUCCESS
        else ("SUCCESS",)
    )


async def test_an_entity_locks_after_five_wrong_codes_until_an_operator_resets_it(
    gw: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    await register(gw.services.store, "lock-me", "Right-Code-1")
    for _ in range(5):
        assert await _enroll(gw, "lock-me", "Wrong-Code-9") == WRONG
    # Locked: the right code is answered exactly like a wrong one, and like an unknown user.
    assert await _enroll(gw, "lock-me", "Right-Code-1") == WRONG
    assert await _enroll(gw, "nobody-here", "Right-Code-1") == WRONG
    capsys.readouterr()
    assert await _cli(gw, "entity", "show", "lock-me") == 0
    shown = capsys.readouterr().out
    assert re.search(r"^locked: locked since \d{4}-", shown, re.M), shown
    assert "failed attempts: 6" in shown
    assert await _cli(gw, "entity", "reset", "lock-me", "--password", "New-Code-2") == 0
    assert await _cli(gw, "entity", "show", "lock-me") == 0
    shown = capsys.readouterr().out
    assert "locked: no" in shown
    assert "failed attempts: 0" in shown
    assert await _enroll(gw, "lock-me", "New-Code-2") == ("SUCCESS",)


async def test_fewer_wrong_codes_than_the_limit_do_not_lock(gw: Gateway) -> None:
    await register(gw.services.store, "almost", "Right-Code-1")
    for _ in range(4):
        assert await _enroll(gw, "almost", "Wrong-Code-9") == WRONG
    assert await _enroll(gw, "almost", "Right-Code-1") == ("SUCCESS",)


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    calls: list[int] = []
    real: Callable[..., bytes] = getattr(codes, name)

    def counted(*args: Any) -> bytes:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(codes, name, counted)
    return calls


async def test_every_wrong_code_path_does_the_hash_work_of_a_real_check(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = gw.services.store
    await register(store, "wrong-code", "Right-Code-1")
    await register(store, "used-code", "Right-Code-1")
    assert await _enroll(gw, "used-code", "Right-Code-1") == ("SUCCESS",)
    await register(store, "locked", "Right-Code-1")
    for _ in range(5):
        await _enroll(gw, "locked", "Wrong-Code-9")
    assert await _enroll(gw, "ra-made", SECRET, alias="ra-open") == ("SUCCESS",)
    ra_made = await store.get_end_entity("ra-made")
    assert ra_made is not None
    capsys.readouterr()
    assert await _cli(gw, "entity", "add", "--username", "generated", "--ca", "ManagementCA") == 0
    (generated,) = re.findall(r"enrollment code: (\S+)", capsys.readouterr().out)

    scrypt = _spy(monkeypatch, "_derive")
    chosen_paths = {
        "unknown user": ("no-such-user", "Some-Code-1"),
        "RA-created user": ("ra-made", "Some-Code-1"),
        "wrong code": ("wrong-code", "Some-Code-1"),
        "locked, right code": ("locked", "Right-Code-1"),
        "used code, wrong": ("used-code", "Some-Code-1"),
        "generated entity, chosen-looking code": ("generated", "Some-Code-1"),
    }
    for path, (name, code) in chosen_paths.items():
        scrypt.clear()
        assert await _enroll(gw, name, code) == WRONG, path
        assert len(scrypt) == 1, path
    # A code of the generated shape costs one SHA-256 and no scrypt, whoever is asked for.
    sha256 = _spy(monkeypatch, "_sha256")
    other = codes.generate_code(lambda n: bytes(range(n)))
    generated_paths = {
        "unknown user": ("no-such-user", other),
        "RA-created user": ("ra-made", other),
        "wrong generated code": ("generated", other),
        "operator-chosen entity": ("wrong-code", other),
    }
    for path, (name, code) in generated_paths.items():
        scrypt.clear()
        sha256.clear()
        assert await _enroll(gw, name, code) == WRONG, path
        assert (len(scrypt), len(sha256)) == (0, 1), path
    sha256.clear()
    assert await _enroll(gw, "generated", generated) == ("SUCCESS",)
    assert (len(scrypt), len(sha256)) == (0, 1)


async def test_a_name_with_a_control_character_is_an_unknown_user(gw: Gateway) -> None:
    """Answered like any wrong code, not with the 503 a store fault gets (PostgreSQL text
    holds no NUL), and without a failed-attempt write."""
    for name in ("dev\x00ice", "dev\nice"):
        assert await _enroll(gw, name, "Wrong-Code-1") == WRONG
