"""`scep-gateway serve --workers N`: N processes share the port and the database."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryptography import x509

from gateway.scep.messages import PkiStatus
from tests.interop.conftest import GATEWAY, Server, start_server, stop_server
from tests.support import Device

ENROLLMENTS = 24


def _workers(parent: int) -> set[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return {int(pid) for pid in children}


def _enroll(server: Server, name: str) -> x509.Certificate:
    secret = (server.data_dir / "ra-demo.secret").read_text().strip()
    recipient = x509.load_pem_x509_certificate(
        (server.data_dir / "ca/ManagementCA/ca.pem").read_bytes()
    )
    device = Device(name)
    request = urllib.request.Request(
        f"{server.url('ra')}?operation=PKIOperation",
        data=device.pkcsreq(secret, [recipient], transaction_id=name),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        reply = device.read(response.read())
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    return reply.certificates[0]


def test_two_workers_serve_one_port_and_stop_cleanly(tmp_path: Path) -> None:
    process, server = start_server(tmp_path, workers=2)
    try:
        workers = _workers(process.pid)
        assert len(workers) == 2
        with ThreadPoolExecutor(8) as pool:
            issued = list(pool.map(lambda n: _enroll(server, f"multi-{n}"), range(ENROLLMENTS)))
        assert len({cert.serial_number for cert in issued}) == ENROLLMENTS
        assert len(server.cli("cert", "list").stdout.splitlines()) == ENROLLMENTS
        # Both workers took a share of the issuances (the log names the process).
        issuers = re.findall(r"\[(\d+)\] INFO gateway.enrollment: issued ", server.log.read_text())
        assert len(issuers) == ENROLLMENTS
        assert {int(pid) for pid in issuers} == workers
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_dead_worker_stops_the_server(tmp_path: Path) -> None:
    process, _ = start_server(tmp_path, workers=2)
    try:
        victim, survivor = sorted(_workers(process.pid))
        os.kill(victim, signal.SIGKILL)
        # The supervisor stops the other worker and reports failure, so that the
        # orchestrator restarts the whole server instead of running it half-sized.
        assert process.wait(timeout=20) == 1
        assert not Path(f"/proc/{survivor}").exists()
    finally:
        stop_server(process)


def test_a_taken_port_fails_at_once(tmp_path: Path) -> None:
    process, server = start_server(tmp_path / "first", workers=2)
    try:
        port = server.base.rsplit(":", 1)[1]
        second = subprocess.run(
            [
                GATEWAY,
                "serve",
                "--config",
                str(server.config_dir),
                "--data-dir",
                str(tmp_path / "second"),
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in second.stderr
    finally:
        stop_server(process)
