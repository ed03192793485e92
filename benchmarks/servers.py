"""The servers under test, each a subprocess on 127.0.0.1 that the benchmark starts and stops.

* the gateway: ``scep-gateway serve`` on a temporary configuration (RA mode, shared secret,
  RSA-2048 CA) with SQLite in a temporary data directory or a fresh PostgreSQL database;
* micromdm's ``scepserver`` on a temporary depot;
* the bare Quart app of ``benchmarks.bare_app``.

CA keys are cached under ``benchmarks/.cache`` and copied into each fresh data directory or
depot, so every run talks to the same CA and the cached message sets stay valid.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.messages import CACHE

HOST = "127.0.0.1"
STARTUP_SECONDS = 60.0
STOP_SECONDS = 15.0
BIN = Path(sys.executable).parent
GATEWAY = BIN / "scep-gateway"
SCEPSERVER = Path("/usr/bin/scepserver")
SECRET_ENV = "SCEP_BENCH_SECRET"
PG_ADMIN = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "database": "postgres"}

GATEWAY_CA_YAML = """\
# scep-gateway benchmark: an RSA-2048 CA, created on first start (then cached and reused).
certificate: ca/BenchCA/ca.pem
key: {file: ca/BenchCA/ca.key}
create: {subject: "CN=Bench CA", key_size: 2048}
"""
GATEWAY_ALIAS_YAML = """\
# scep-gateway benchmark: RA mode, the challenge password is the shared secret.
mode: ra
ca: BenchCA
ra: {secret: {env: SCEP_BENCH_SECRET}}
"""
# Development only (--gateway-mode ca): CA mode, end entities registered beforehand.
GATEWAY_CA_MODE_ALIAS_YAML = """\
mode: ca
ca: BenchCA
"""
GATEWAY_CA_FILES = ("ca/BenchCA/ca.pem", "ca/BenchCA/ca.key")
MICROMDM_CA_FILES = ("ca.pem", "ca.key")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def bench_secret(cache: Path = CACHE) -> str:
    """The RA secret / challenge password: random once, then stable (it is inside the cached
    CSRs)."""
    path = cache / "ra-secret"
    if path.exists():
        return path.read_text().strip()
    cache.mkdir(parents=True, exist_ok=True)
    value = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(24))
    path.write_text(value + "\n")
    return value


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A started server process and where it serves SCEP."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    scep_path: str
    log: Path
    workdir: Path
    database: str = ""  # the gateway's SQLAlchemy URL

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """The server process and its worker processes (``serve --workers N`` forks them)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return [self.pid, *map(int, children)]

    def status_kib(self, field_name: str) -> int:
        """A /proc/<pid>/status memory field in KiB (VmHWM: peak RSS; VmRSS: current), summed
        over the server's processes."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field_name + ":"):
                    total += int(line.split()[1])
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's processes, all their threads."""
        ticks = 0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks / _clock_ticks()

    def threads(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/task"))

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def keep_log(self, cache: Path = CACHE) -> Path:
        """Copy the server's log to benchmarks/.cache/logs/ (the work directory is temporary)."""
        target = cache / "logs" / f"{self.name}.log"
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.copyfile(self.log, target)
        return target

    def stop(self) -> None:
        """SIGTERM to the server's own process group (it was started in a new session), and
        keep its log."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_SECONDS)
        self.keep_log()


def _spawn(
    command: list[str], log: Path, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )


def _get_status(port: int, target: str) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", target)
        return conn.getresponse().status
    finally:
        conn.close()


def _wait_ready(server: Server, target: str) -> None:
    """Poll ``target`` until it answers 200: at most STARTUP_SECONDS, at most 10 per second."""
    deadline = time.monotonic() + STARTUP_SECONDS
    for _ in range(int(STARTUP_SECONDS * 10)):
        if time.monotonic() > deadline:
            break
        if not server.alive():
            raise RuntimeError(f"{server.name} exited at start:\n{server.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if _get_status(server.port, target) == 200:
                return
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(
        f"{server.name} not ready after {STARTUP_SECONDS:.0f} s:\n{server.log_tail()}"
    )


def _seed(source: Path, target: Path, names: tuple[str, ...]) -> bool:
    """Copy cached CA files into a fresh directory; False when the cache has none yet."""
    if not all((source / n).exists() for n in names):
        return False
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)
        os.chmod(target / name, 0o600)
    return True


def _keep(source: Path, target: Path, names: tuple[str, ...]) -> None:
    """Cache the CA files a server created on its first start."""
    if all((target / n).exists() for n in names):
        return
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)
        os.chmod(target / name, 0o600)


def write_gateway_config(root: Path, mode: str = "ra") -> Path:
    config = root / "config"
    (config / "cas").mkdir(parents=True, exist_ok=True)
    (config / "aliases").mkdir(parents=True, exist_ok=True)
    (config / "cas" / "BenchCA.yaml").write_text(GATEWAY_CA_YAML)
    alias = GATEWAY_ALIAS_YAML if mode == "ra" else GATEWAY_CA_MODE_ALIAS_YAML
    (config / "aliases" / "bench.yaml").write_text(alias)
    return config


def start_gateway(
    name: str,
    root: Path,
    secret: str,
    *,
    database: str | None = None,
    mode: str = "ra",
    workers: int = 1,
    cache: Path = CACHE,
    extra_aliases: dict[str, str] | None = None,
    serve_args: tuple[str, ...] = (),
) -> Server:
    """``scep-gateway serve`` as a user runs it: default settings, INFO logging to a file.

    ``extra_aliases`` (file name -> YAML) are added to the configuration, ``serve_args`` to
    the command line."""
    root.mkdir(parents=True, exist_ok=True)
    config = write_gateway_config(root, mode)
    for file_name, text in (extra_aliases or {}).items():
        (config / "aliases" / file_name).write_text(text)
    data = root / "data"
    data.mkdir(exist_ok=True)
    _seed(cache / "gateway-ca", data, GATEWAY_CA_FILES)
    port = free_port()
    command = [
        str(GATEWAY),
        "serve",
        "--config",
        str(config),
        "--data-dir",
        str(data),
        "--bind",
        f"{HOST}:{port}",
        "--workers",
        str(workers),
    ]
    if database:
        command += ["--database", database]
    command += serve_args
    env = {**os.environ, SECRET_ENV: secret}
    log = root / "server.log"
    server = Server(
        name, _spawn(command, log, env=env), port, "/scep/bench/pkiclient.exe", log, root
    )
    server.database = database or f"sqlite+aiosqlite:///{(data / 'gateway.sqlite3').resolve()}"
    _wait_ready(server, "/readyz")
    _keep(data, cache / "gateway-ca", GATEWAY_CA_FILES)
    return server


def start_micromdm(root: Path, secret: str, *, cache: Path = CACHE) -> Server:
    """micromdm's scepserver on a fresh depot holding the cached RSA-2048 CA."""
    root.mkdir(parents=True, exist_ok=True)
    depot = root / "depot"
    depot.mkdir(exist_ok=True)
    if not _seed(cache / "micromdm-ca", depot, MICROMDM_CA_FILES):
        init = subprocess.run(
            [str(SCEPSERVER), "ca", "-init", "-depot", str(depot), "-keySize", "2048"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if init.returncode != 0:
            raise RuntimeError(
                f"scepserver ca -init failed: {init.stderr.decode(errors='replace')}"
            )
        _keep(depot, cache / "micromdm-ca", MICROMDM_CA_FILES)
    port = free_port()
    # It listens on all interfaces (no flag to change that); we only ever talk to 127.0.0.1.
    command = [
        str(SCEPSERVER),
        "-depot",
        str(depot),
        "-port",
        str(port),
        "-challenge",
        secret,
        "-allowrenew",
        "0",
    ]
    log = root / "server.log"
    server = Server("micromdm", _spawn(command, log, cwd=root), port, "/scep", log, root)
    _wait_ready(server, "/scep?operation=GetCACaps")
    return server


def start_bare(
    root: Path, caps: bytes, cacert: bytes, cacert_type: str, *, workers: int = 1
) -> Server:
    root.mkdir(parents=True, exist_ok=True)
    (root / "caps.txt").write_bytes(caps)
    (root / "cacert.der").write_bytes(cacert)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "benchmarks.bare_app",
        "--bind",
        f"{HOST}:{port}",
        "--caps",
        str(root / "caps.txt"),
        "--cacert",
        str(root / "cacert.der"),
        "--cacert-type",
        cacert_type,
        "--workers",
        str(workers),
    ]
    repo = Path(__file__).resolve().parents[1]
    log = root / "server.log"
    server = Server(
        "bare-quart", _spawn(command, log, cwd=repo), port, "/scep/bench/pkiclient.exe", log, root
    )
    _wait_ready(server, "/healthz")
    return server


async def create_database() -> tuple[str, str]:
    """A fresh PostgreSQL database on the local server; returns (name, SQLAlchemy URL)."""
    import asyncpg

    name = f"scepgw_bench_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(**PG_ADMIN, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def drop_database(name: str) -> None:
    import asyncpg

    if not name.startswith("scepgw_bench_"):
        raise ValueError(f"refusing to drop {name!r}")
    conn = await asyncpg.connect(**PG_ADMIN, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def register_entities(database: str, names: list[str], code: str) -> None:
    """Development only (CA mode): register end entities ``names`` with enrollment ``code``.

    One salted hash serves every entity (scrypt per entity would take minutes)."""
    from datetime import UTC, datetime

    from gateway.policy.codes import hash_code
    from gateway.store import EndEntity, EntityStatus, Store

    code_hash = hash_code(code)
    now = datetime.now(UTC)
    store = await Store.open(database)
    try:
        for name in names[:100_000]:
            await store.add_end_entity(
                EndEntity(
                    username=name,
                    code_hash=code_hash,
                    subject_dn=f"CN={name}",
                    ca="BenchCA",
                    status=EntityStatus.NEW,
                    created_at=now,
                    updated_at=now,
                )
            )
    finally:
        await store.close()
