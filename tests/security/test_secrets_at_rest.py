"""Item 3: secrets at rest and in error output (the pending-request CSR is item 3's other half).

- The SQLite database and the -wal/-shm files SQLite makes beside it are 0600, and so is
  every key and secret file the gateway creates, whatever the umask.
- check-config and the server warn about key and secret files that group or others can read.
- A configuration error names the file, the JSON path and the rule, never the value: not on
  check-config's output, not in the server log, not on the unauthenticated /readyz.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.scep.messages import PkiStatus
from gateway.store import Store
from tests.conftest import body_of, running_gateway
from tests.interop.conftest import GATEWAY, start_server, stop_server
from tests.support import Device, copy_config, fresh_key

WAIT_SECONDS = 10


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def _post(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: bytes = response.read()
        return answer


def test_database_and_created_key_files_are_owner_only(tmp_path: Path) -> None:
    # The usual umask would leave new files 0644: the modes must not depend on it.
    with _umask(0o022):
        process, server = start_server(tmp_path)
    try:
        ca = x509.load_der_x509_certificate(_get(f"{server.url('ra')}?operation=GetCACert"))
        secret = (server.data_dir / "ra-demo.secret").read_text().strip()
        device = Device("at-rest-1")
        answer = _post(f"{server.url('ra')}?operation=PKIOperation", device.pkcsreq(secret, [ca]))
        assert device.read(answer).status is PkiStatus.SUCCESS
        database = server.data_dir / "gateway.sqlite3"
        files = [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
        files += [
            server.data_dir / "ca/ManagementCA" / name
            for name in ("ca.key", "ra-signer.key", "ra-encrypter.key")
        ]
        files.append(server.data_dir / "ra-demo.secret")
        # While the server runs, the WAL and shared-memory files exist: they hold the latest
        # writes (the issued certificate) until a checkpoint.
        assert {str(f): oct(_mode(f)) for f in files} == {str(f): "0o600" for f in files}
    finally:
        stop_server(process)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GATEWAY, *args], capture_output=True, text=True, timeout=60, check=False)


def test_readable_key_and_secret_files_are_warned_about(tmp_path: Path) -> None:
    config_dir = copy_config(tmp_path)
    data_dir = tmp_path / "var"
    # Any command creates the first-start files; this one writes nothing else.
    created = _cli("ca", "issue-ra", "ManagementCA", "--config", str(config_dir),
                   "--data-dir", str(data_dir))  # fmt: skip
    assert created.returncode == 0, created.stderr
    (data_dir / "ca/ManagementCA/ca.key").chmod(0o644)
    (data_dir / "ra-demo.secret").chmod(0o640)
    expected = [
        f"cas/ManagementCA.yaml:$.key: key file {data_dir}/ca/ManagementCA/ca.key is readable "
        "by group/others (mode 0644); chmod 600 it",
        f"aliases/ra.yaml:$.ra.secret: secret file {data_dir}/ra-demo.secret is readable by "
        "group/others (mode 0640); chmod 600 it",
    ]
    result = _cli("check-config", str(config_dir), "--data-dir", str(data_dir))
    # A warning, not a refusal (a Kubernetes Secret volume is 0644 by default).
    assert result.returncode == 0
    assert result.stdout.startswith("ok: ")
    assert result.stderr.splitlines() == [f"warning: {line}" for line in expected]

    process, server = start_server(tmp_path, config_dir=config_dir)
    try:
        log = server.log.read_text()
    finally:
        stop_server(process)
    for line in expected:
        assert f"WARNING gateway.app: config: {line}" in log


SECRET = "hunter2-Zq8vR3xL9mT1"
PEM = (
    fresh_key()
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
PEM_LINE = PEM.splitlines()[5]  # a line of the key's base64 body
PEM_BLOCK = "".join(f"    {line}\n" for line in PEM.splitlines())
LEAKY = {
    # A secret written inline where a {file:}/{env:} reference belongs.
    "aliases/inline.yaml": f"mode: ra\nca: ManagementCA\nra:\n  secret: {SECRET}\n",
    # ... as an unknown enum value, a too-long string, and a key of its own.
    "aliases/enum.yaml": f"ca: ManagementCA\nmode: {SECRET}\n",
    "aliases/long.yaml": f"ca: ManagementCA\nca_identifiers: [{SECRET * 10}]\n",
    "aliases/key.yaml": f"ca: ManagementCA\n{SECRET}: true\n",
    "aliases/env.yaml": f"mode: ra\nca: ManagementCA\nra:\n  secret: {{env: {SECRET}}}\n",
    "profiles/end-entity/defaults.yaml": f"subject:\n  defaults:\n    {SECRET}: ''\n",
    "aliases/yaml-alias.yaml": f"ca: ManagementCA\nmode: *{SECRET}\n",
    # A PEM key pasted into a CA file, and into an alias.
    "cas/Pasted.yaml": f"certificate: ca/pasted.pem\nkey: |\n{PEM_BLOCK}",
    "aliases/pem.yaml": f"ca: ManagementCA\nca_identifiers:\n  - |\n{PEM_BLOCK}",
}
USEFUL = [
    "aliases/inline.yaml:$.ra.secret: must be an object ({file: ...} or {env: ...}): "
    "secrets are never written inline",
    "aliases/enum.yaml:$.mode: must be one of: ca, ra",
    "aliases/long.yaml:$.ca_identifiers[0]: must be at most 128 characters",
    "aliases/key.yaml:$: unknown field (the 2nd key of this object); allowed: preset, mode,",
    "aliases/env.yaml:$.ra.secret.env: must match the regular expression ^[A-Za-z_][A-Za-z0-9_]*$",
    "profiles/end-entity/defaults.yaml:$.subject.defaults: a key here must be one of: CN, O,",
    "profiles/end-entity/defaults.yaml:$.subject.defaults.*: must not be empty",
    "aliases/yaml-alias.yaml:$: YAML syntax error at line 2, column 7: found undefined alias (...)",
    "cas/Pasted.yaml:$.key: must be an object ({file: ...} or {env: ...})",
    "aliases/pem.yaml:$.ca_identifiers[0]: must be at most 128 characters",
]


def _assert_no_value(text: str) -> None:
    for value in (SECRET, PEM_LINE, "PRIVATE KEY", "hunter2"):
        assert value not in text


def _assert_useful(lines: list[str]) -> None:
    for wanted in USEFUL:
        assert any(line.startswith(wanted) for line in lines), (wanted, lines)


def test_check_config_never_quotes_the_value(tmp_path: Path) -> None:
    config_dir = copy_config(tmp_path)
    for name, text in LEAKY.items():
        (config_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (config_dir / name).write_text(text)
    result = _cli("check-config", str(config_dir), "--data-dir", str(tmp_path / "var"))
    assert result.returncode == 1
    _assert_no_value(result.stdout + result.stderr)
    _assert_useful(result.stdout.replace(f"{config_dir}/", "").splitlines())


@pytest.mark.asyncio
async def test_readyz_and_log_never_quote_the_value(
    tmp_path: Path, shared_data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_gateway(tmp_path, shared_data_dir, watch=True) as gateway:
        config_dir = gateway.settings.config_dir
        for name, text in LEAKY.items():
            (config_dir / name).parent.mkdir(parents=True, exist_ok=True)
            (config_dir / name).write_text(text)
        reloader = gateway.services.reloader
        async with asyncio.timeout(WAIT_SECONDS):
            # All files in place: every one of them is reported.
            await reloader.wait_for(lambda s: len(s.errors) >= len(USEFUL))
        ready = await gateway.client.get("/readyz")
        body = (await body_of(ready)).decode()
        assert ready.status_code == 200
        _assert_no_value(body)
        _assert_useful(json.loads(body)["config_errors"])
        _assert_no_value(caplog.text)
        assert "config: aliases/enum.yaml:$.mode: must be one of: ca, ra" in caplog.text


@pytest.mark.asyncio
async def test_database_files_left_open_by_an_earlier_version_are_narrowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "gateway.sqlite3"
    with _umask(0o022):
        async with await Store.open(f"sqlite:///{database}") as store:
            await store.ping()
    files = [database, *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
    for file in files:
        file.touch()
        file.chmod(0o644)
    async with await Store.open(f"sqlite:///{database}") as store:
        await store.ping()
        # The migration's own engine closes last and SQLite then removes -wal and -shm: what
        # is left must be the owner's, and each open file was narrowed before any use.
        assert database.exists()
        left = {f.name: oct(_mode(f)) for f in files if f.exists()}
        assert left == dict.fromkeys(left, "0o600")
    for file in files:
        assert f"{file} was mode 0644; narrowed to 0600" in caplog.text
