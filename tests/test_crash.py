"""Crash safety: SIGKILL the server in the middle of a burst of RA-mode enrollments.

After a restart on the same data, every certificate a client received is in the store, no
serial number repeats, and every request a client was told is PENDING is still pending.
Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from gateway.scep.messages import PkiStatus
from tests.interop.conftest import Server, start_server, stop_server
from tests.interop.test_postgres import fresh_postgres
from tests.support import Device, copy_config

CLIENTS = 8
# Kill once this much has happened, with every client thread still sending.
ISSUED_BEFORE_KILL = 40
PENDING_BEFORE_KILL = 10
APPROVE_ALIAS = (
    "mode: ra\nca: ManagementCA\nra: {secret: {file: ra-demo.secret}}\napproval: {required: true}\n"
)


@dataclass
class Burst:
    server: Server
    secret: str
    recipient: x509.Certificate
    lock: threading.Lock = field(default_factory=threading.Lock)
    issued: dict[int, str] = field(default_factory=dict)  # serial -> subject, as received
    pending: set[str] = field(default_factory=set)  # transaction ids answered PENDING
    enough: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    killed: threading.Event = field(default_factory=threading.Event)  # set just before

    def client(self, number: int) -> None:
        alias = "ra-approve" if number % 2 else "ra"
        sent = 0
        while not self.stop.is_set():
            sent += 1
            name = f"crash-{number}-{sent}"
            device = Device(name)
            body = device.pkcsreq(self.secret, [self.recipient], transaction_id=name)
            request = urllib.request.Request(
                f"{self.server.url(alias)}?operation=PKIOperation", data=body, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    reply = device.read(response.read())
            except OSError as error:  # HTTP errors and refused connections alike
                if not self.killed.is_set():
                    raise AssertionError(f"{name} failed before the kill: {error}") from error
                continue  # the server is gone (or going): nothing was received
            with self.lock:
                assert reply.status is not PkiStatus.FAILURE, (name, reply.fail_info_text)
                if reply.status is PkiStatus.SUCCESS:
                    cert = reply.certificates[0]
                    assert cert.serial_number not in self.issued, "a client got a repeated serial"
                    self.issued[cert.serial_number] = cert.subject.rfc4514_string()
                elif reply.status is PkiStatus.PENDING:
                    self.pending.add(name)
                if (
                    len(self.issued) >= ISSUED_BEFORE_KILL
                    and len(self.pending) >= PENDING_BEFORE_KILL
                ):
                    self.enough.set()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None  # the default: a file in the data directory
        return
    with fresh_postgres() as url:
        yield url


def test_kill_during_a_burst_loses_nothing(tmp_path: Path, database: str | None) -> None:
    config = copy_config(tmp_path)
    (config / "aliases" / "ra-approve.yaml").write_text(APPROVE_ALIAS)
    process, server = start_server(tmp_path, database=database, config_dir=config)
    burst = Burst(
        server,
        (server.data_dir / "ra-demo.secret").read_text().strip(),
        x509.load_pem_x509_certificate((server.data_dir / "ca/ManagementCA/ca.pem").read_bytes()),
    )
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            clients = [pool.submit(burst.client, n) for n in range(CLIENTS)]
            assert burst.enough.wait(timeout=120), "the burst never got going"
            burst.killed.set()
            os.killpg(process.pid, signal.SIGKILL)  # no shutdown hook runs
            process.wait(timeout=10)
            burst.stop.set()
            for finished in clients:
                finished.result(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            stop_server(process)

    process, server = start_server(tmp_path, database=database, config_dir=config)
    try:
        listed = server.cli("cert", "list").stdout.splitlines()
        stored = [line.split("\t") for line in listed]
        serials = [int(row[0], 16) for row in stored]
        assert len(serials) == len(set(serials)), "a serial number repeats in the store"
        subjects = {int(row[0], 16): row[3] for row in stored}
        missing = {s: subj for s, subj in burst.issued.items() if subjects.get(s) != subj}
        assert missing == {}, f"clients hold certificates the store lost: {missing}"
        approvals = server.cli("approvals", "list").stdout
        lost = {t for t in burst.pending if f"transaction={t}\t" not in approvals}
        assert lost == set(), f"pending requests lost: {lost}"
    finally:
        stop_server(process)
