"""A real gateway process (``scep-gateway serve`` on Hypercorn) on a loopback port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.clients import CERTMONGER, SCEPCLIENT, tool_available
from tests.support import copy_config

GATEWAY = str(Path(sys.executable).with_name("scep-gateway"))
STARTUP_SECONDS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    base: str
    config_dir: Path
    data_dir: Path
    database: str | None
    log: Path

    def url(self, alias: str) -> str:
        return f"{self.base}/scep/{alias}/pkiclient.exe"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [
            GATEWAY,
            *args,
            "--config",
            str(self.config_dir),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.database:
            command += ["--database", self.database]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{command} failed: {result.stdout}{result.stderr}")
        return result

    def ca_pem(self, tmp: Path, alias: str = "scep") -> Path:
        """The CA certificate as PEM (what an operator hands to certmonger's -N)."""
        target = tmp / f"{alias}-ca.pem"
        shutil.copy(self.data_dir / "ca/ManagementCA/ca.pem", target)
        return target


def start_server(
    tmp: Path,
    *,
    database: str | None = None,
    config_dir: Path | None = None,
    workers: int = 1,
    extra: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], Server]:
    """``extra``: more `serve` arguments (timeouts, caps)."""
    port = _free_port()
    server = Server(
        base=f"http://127.0.0.1:{port}",
        config_dir=config_dir or copy_config(tmp),
        data_dir=tmp / "var",
        database=database,
        log=tmp / "server.log",
    )
    command = [
        GATEWAY,
        "serve",
        "--config",
        str(server.config_dir),
        "--data-dir",
        str(server.data_dir),
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
    ]
    if database:
        command += ["--database", database]
    command += extra
    with server.log.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {server.log.read_text()}")
        try:
            with urllib.request.urlopen(f"{server.base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return process, server
        except OSError:
            time.sleep(0.1)
    stop_server(process)
    raise AssertionError(f"server did not become ready: {server.log.read_text()}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    for tool in (SCEPCLIENT, CERTMONGER):
        # The clients are installed by `make test`; a missing one is a failure, not a skip.
        assert tool_available(tool), f"{tool} missing: run `make test`, which installs it"
    process, running = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield running
    finally:
        stop_server(process)
