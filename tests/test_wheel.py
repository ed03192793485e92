"""The wheel works wherever it is installed (issue 11: "A package that works wherever it is
installed").

The wheel is built from a copy holding only what the build reads, installed with its declared
dependencies into a fresh virtual environment, and run from a directory outside the repository
with ``python -I`` semantics (no PYTHONPATH, no current directory on ``sys.path``): anything the
gateway reads at run time that is not package data, or a dependency missing from the wheel's
metadata, fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509

from gateway.scep import client
from gateway.scep.messages import PkiStatus
from tests.interop.conftest import Server, _free_port, stop_server
from tests.security.support import get, recipient_of
from tests.support import CONFIG_EXAMPLE, REPO, Device

# What the build reads; nothing else of the repository is copied.
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "gateway")
STARTUP_SECONDS = 60
INSTALL_SECONDS = 600


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path
    work: Path  # the working directory of every command: outside the repository

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def run(self, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command,
            cwd=self.work,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(sys.executable).parent != Path(p)
    )
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    dist = tmp / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), "."],
        cwd=source,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=INSTALL_SECONDS,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    # PEP 639: an SPDX expression, not the deprecated license table.
    assert "project.license` as a TOML table is deprecated" not in build.stderr
    (wheel,) = dist.glob("scep_gateway-*.whl")

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    work = tmp / "work"
    work.mkdir()
    target = Installed(wheel=wheel, venv=venv, work=work)
    # Dependencies come from the index as for any user: the wheel's metadata must be complete.
    install = target.run(
        target.bin("python"), "-m", "pip", "install", "--quiet", str(wheel), timeout=INSTALL_SECONDS
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return target


def test_the_installed_package_is_the_wheel_not_the_source_tree(installed: Installed) -> None:
    result = installed.run(
        installed.bin("python"),
        "-I",
        "-c",
        "import gateway, gateway.config.resources as r, gateway.store.migrate as m; "
        "print(gateway.__file__); print(len(r.schemas())); print(m.migrations_dir())",
    )
    assert result.returncode == 0, result.stderr
    module, schemas, migrations = result.stdout.splitlines()
    site_packages = next((installed.venv / "lib").glob("python3*/site-packages")).resolve()
    assert Path(module).resolve().is_relative_to(site_packages)
    assert Path(migrations).resolve().is_relative_to(site_packages)
    assert int(schemas) == len(list((REPO / "gateway/config/schemas").glob("*.schema.json")))
    assert not Path(module).resolve().is_relative_to(REPO)


# Run by the fresh venv's interpreter with the wheel file itself first on sys.path: a zip import.
ZIP_IMPORT = """
import asyncio, sqlite3, sys
sys.path.insert(0, sys.argv[1])
import gateway
from gateway.cli import main
from gateway.store import Store
from gateway.store.migrate import head_revision

async def migrate(path):
    async with await Store.open(f"sqlite+aiosqlite:///{path}"):
        pass

asyncio.run(migrate(sys.argv[2]))
with sqlite3.connect(sys.argv[2]) as db:
    (migrated,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
print(gateway.__file__)
print(head_revision(), migrated)
sys.exit(main(["check-config", sys.argv[3], "--data-dir", sys.argv[4]]))
"""


def test_a_zip_import_of_the_wheel_finds_schemas_and_migrations(installed: Installed) -> None:
    config = installed.work / "zip-config"
    shutil.copytree(CONFIG_EXAMPLE, config)
    result = installed.run(
        installed.bin("python"),
        "-I",
        "-c",
        ZIP_IMPORT,
        str(installed.wheel),
        str(installed.work / "zip.db"),
        str(config),
        str(installed.work / "zip-data"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    module, revisions = result.stdout.splitlines()[:2]
    assert module == str(installed.wheel / "gateway" / "__init__.py")
    head, migrated = revisions.split()
    assert head == migrated


def test_version_is_the_distribution_version(installed: Installed) -> None:
    result = installed.run(installed.bin("scep-gateway"), "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"scep-gateway {metadata.version('scep-gateway')}"


def test_check_config_accepts_config_example(installed: Installed) -> None:
    config = installed.work / "check-config"
    shutil.copytree(CONFIG_EXAMPLE, config)
    result = installed.run(
        installed.bin("scep-gateway"),
        "check-config",
        str(config),
        "--data-dir",
        str(installed.work / "check-data"),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schemas_writes_the_packaged_schemas_for_editors(installed: Installed) -> None:
    target = installed.work / "editor-schemas"
    result = installed.run(installed.bin("scep-gateway"), "schemas", str(target))
    assert result.returncode == 0, result.stdout + result.stderr
    shipped = sorted((REPO / "gateway/config/schemas").glob("*.schema.json"))
    assert sorted(p.name for p in target.iterdir()) == [p.name for p in shipped]
    for path in shipped:
        assert (target / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.fixture(scope="module")
def served(installed: Installed) -> Iterator[Server]:
    port = _free_port()
    server = Server(
        base=f"http://127.0.0.1:{port}",
        config_dir=installed.work / "config",
        data_dir=installed.work / "var",
        database=None,
        log=installed.work / "server.log",
    )
    shutil.copytree(CONFIG_EXAMPLE, server.config_dir)
    command = [
        installed.bin("scep-gateway"),
        "serve",
        "--config",
        str(server.config_dir),
        "--data-dir",
        str(server.data_dir),
        "--bind",
        f"127.0.0.1:{port}",
    ]
    with server.log.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=installed.work,
            env=_clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert process.poll() is None, f"server exited: {server.log.read_text()}"
            assert time.monotonic() < deadline, f"not ready: {server.log.read_text()}"
            try:
                with urllib.request.urlopen(f"{server.base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield server
    finally:
        stop_server(process)


def test_serve_enrolls_a_device_through_the_ra_alias(served: Server) -> None:
    secret = (served.data_dir / "ra-demo.secret").read_text().strip()
    device = Device("wheel-installed-device")
    body = device.pkcsreq(secret, [recipient_of(served, "ra")], transaction_id="wheel-1")
    request = urllib.request.Request(
        f"{served.url('ra')}?operation=PKIOperation", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        rep = client.read_cert_rep(response.read(), recipient=device.identity)
    assert rep.status is PkiStatus.SUCCESS, rep.fail_info_text

    issued = rep.certificates[0]
    assert issued.public_key() == device.key.public_key()
    (ca,) = [
        c
        for c in _ca_certificates(get(served, "ra", "GetCACert"))
        if c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ]
    issued.verify_directly_issued_by(ca)


def _ca_certificates(body: bytes) -> list[x509.Certificate]:
    """GetCACert: one DER certificate, or a degenerate PKCS#7 (RFC 8894 section 4.2.1.1/2)."""
    try:
        return [x509.load_der_x509_certificate(body)]
    except ValueError:
        certs = cms.ContentInfo.load(body)["content"]["certificates"]
        return [x509.load_der_x509_certificate(c.chosen.dump()) for c in certs]
