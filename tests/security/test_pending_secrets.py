"""Item 3 of docs/security.md (pending requests): no table holds a challenge password, RA
secret or enrollment code in clear, not even for a request that waits for approval."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import MetaData, insert, inspect, select
from sqlalchemy.engine import Connection

from gateway.cli import main
from gateway.scep import client
from gateway.scep import csr as scep_csr
from gateway.scep.messages import MessageType, PkiStatus
from gateway.store import PendingStatus, Store
from gateway.store.engine import WRITE_OPTIONS, create_store_engine
from gateway.store.migrate import alembic_config
from tests.conftest import Gateway, running_gateway
from tests.store.helpers import raw_engine
from tests.support import Device, cn, fresh_key, register

RA_SECRET = "Distinct-RA-Secret-5q7Z"
CODE = "Distinct-Code-8w3X"
FILES = {
    "aliases/ra-approve.yaml": "mode: ra\nca: ManagementCA\n"
    "ra:\n  secret: {env: SCEP_TEST_RA_SECRET}\napproval: {required: true}\n",
    "profiles/end-entity/approve.yaml": "approval_required: true\n",
    "aliases/ca-approve.yaml": "mode: ca\nca: ManagementCA\nend_entity_profile: approve\n",
}


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [
        raw,
        secret.encode("utf-16-be"),  # a BMPString challengePassword
        raw.hex().encode(),
        raw.hex().upper().encode(),
        base64.b64encode(raw)[:-4],
    ]


async def _cells(url: str) -> list[tuple[str, str, bytes]]:
    """Every value of every column of every table, as bytes."""

    def read(connection: Connection) -> list[tuple[str, str, bytes]]:
        meta = MetaData()
        meta.reflect(connection)
        cells = []
        for name in inspect(connection).get_table_names():
            table = meta.tables[name]
            for row in connection.execute(select(table)).mappings():
                for column, value in row.items():
                    if isinstance(value, bytes | bytearray | memoryview):
                        cells.append((name, column, bytes(value)))
                    elif value is not None:
                        cells.append((name, column, str(value).encode()))
        return cells

    async with raw_engine(url) as engine, engine.connect() as connection:
        return await connection.run_sync(read)


async def _assert_nowhere(url: str, *secrets: str) -> int:
    cells = await _cells(url)
    for secret in secrets:
        for form in _forms(secret):
            found = [(t, c) for t, c, value in cells if form in value]
            assert found == [], f"{secret!r} found in {found}"
    return len(cells)


@pytest.fixture
async def gw(
    tmp_path: Path, shared_data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("SCEP_TEST_RA_SECRET", RA_SECRET)
    async with running_gateway(tmp_path, shared_data_dir, FILES, database_url=database_url) as g:
        yield g


async def _poll(gw: Gateway, device: Device, alias: str, tid: str) -> client.CertRep:
    issuer = (await gw.ca_certificate()).subject
    body = device.message(
        client.cert_poll_content(issuer, cn(device.common_name)),
        gw.recipients(alias),
        message_type=MessageType.CERT_POLL,
        transaction_id=tid,
    )
    return device.read(await gw.pki(body, alias))


async def test_no_table_holds_the_secret_of_a_pending_request(gw: Gateway) -> None:
    url = str(gw.settings.database_url)
    await register(gw.services.store, "waits-for-ok", CODE)
    ra_device = Device("ra-waiting", key=fresh_key())
    ca_device = Device("waits-for-ok", key=fresh_key())
    for device, alias, secret in (
        (ra_device, "ra-approve", RA_SECRET),
        (ca_device, "ca-approve", CODE),
    ):
        body = device.pkcsreq(secret, gw.recipients(alias), transaction_id=f"tx-{alias}")
        assert device.read(await gw.pki(body, alias)).status is PkiStatus.PENDING
    assert len(await gw.services.store.list_pending(status=PendingStatus.PENDING)) == 2
    assert await _assert_nowhere(url, RA_SECRET, CODE) > 20
    # What is kept still issues what was approved, to the key that asked.
    s = gw.settings
    for pending in await gw.services.store.list_pending(status=PendingStatus.PENDING):
        args = ["approvals", "approve", str(pending.id), "--config", str(s.config_dir)]
        args += ["--data-dir", str(s.data_dir), "--database", url]
        assert await asyncio.to_thread(main, args) == 0
    for device, alias in ((ra_device, "ra-approve"), (ca_device, "ca-approve")):
        reply = await _poll(gw, device, alias, f"tx-{alias}")
        assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
        assert reply.certificates[0].public_key() == device.key.public_key()
    await _assert_nowhere(url, RA_SECRET, CODE)


async def test_the_upgrade_removes_the_secret_from_stored_requests(database_url: str) -> None:
    def to_0003(connection: Connection) -> None:
        command.upgrade(alembic_config(connection=connection), "0003")

    engine = create_store_engine(database_url)
    try:
        async with engine.execution_options(**WRITE_OPTIONS).begin() as connection:
            await connection.run_sync(to_0003)
    finally:
        await engine.dispose()
    device = Device("old-row", key=fresh_key())
    now = datetime.now(UTC)
    row = {
        "alias": "ra-approve",
        "ca": "ManagementCA",
        "transaction_id": "tx-old",
        "transaction_key": "tx-old",
        "username": "old-row",
        "subject_dn": "CN=old-row",
        "csr_der": device.csr(RA_SECRET),  # what a gateway before 0004 stored
        "decision": "{}",
        "status": "pending",
        "created_at": now,
        "expires_at": now + timedelta(hours=1),
    }

    def write(connection: Connection) -> None:
        meta = MetaData()
        meta.reflect(connection, only=["pending_requests"])
        connection.execute(insert(meta.tables["pending_requests"]).values(row))

    async with raw_engine(database_url) as raw, raw.begin() as connection:
        await connection.run_sync(write)
    async with await Store.open(database_url):
        pass
    await _assert_nowhere(database_url, RA_SECRET)
    async with await Store.open(database_url) as store:
        found = await store.find_pending_for_key(
            "ra-approve", "tx-old", scep_csr.key_id(device.key.public_key())
        )
        assert found is not None
        kept = scep_csr.parse(found.csr_der)
        assert kept.challenge_password is None
        assert kept.subject == cn("old-row")
