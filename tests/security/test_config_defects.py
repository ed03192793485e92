"""Item 9: configuration defects stay configuration errors; first-start keys are made once.

9a: a regular expression that does not compile, and other values the schema admits but the
code could not use (an RFC 4514 subject, an EKU OID, an IP network), are ordinary
``file:path: message`` issues at check-config and at reload time: no traceback, and the
watcher keeps running and applies the next valid edit.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.conftest import running_gateway
from tests.interop.conftest import GATEWAY, start_server, stop_server
from tests.support import copy_config

WAIT_SECONDS = 10

BAD_REGEX = """\
ca: ManagementCA
policies:
  authorize:
    - {type: authorize.subject_pattern, field: CN, pattern: "("}
"""
GOOD_REGEX = BAD_REGEX.replace('pattern: "("', 'pattern: "dev-[0-9]+"')
REGEX_ISSUE = (
    "aliases/guarded.yaml:$.policies.authorize[0].pattern: invalid regular expression: "
    "missing ), unterminated subpattern at position 0"
)


def _check_config(config_dir: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAY, "check-config", str(config_dir), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_reports_values_the_code_cannot_use(tmp_path: Path) -> None:
    config_dir = copy_config(tmp_path)
    (config_dir / "aliases/guarded.yaml").write_text(BAD_REGEX)
    ca = config_dir / "cas/ManagementCA.yaml"
    ca.write_text(ca.read_text().replace('"CN=ManagementCA,O=scep-gateway demo"', '"CN=a+"'))
    profile = config_dir / "profiles/certificate/odd.yaml"
    profile.write_text(
        "extended_key_usage: [client_auth, 0.40.1]\n"
        "subject_alt_names: {mode: allow_list, allow: {ip: [10.0.0.0/8, 10.0.0.1/33]}}\n"
    )
    result = _check_config(config_dir, tmp_path / "var")
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert sorted(result.stdout.splitlines()) == [
        "cas/ManagementCA.yaml:$.create.subject: not an RFC 4514 distinguished name",
        "profiles/certificate/odd.yaml:$.extended_key_usage[1]: not a valid OID",
        "profiles/certificate/odd.yaml:$.subject_alt_names.allow.ip[1]: "
        "not a valid pattern: not an IP network in CIDR notation",
    ]
    # With those fixed, the regular expression is the one problem left.
    ca.write_text(ca.read_text().replace('"CN=a+"', '"CN=ManagementCA,O=scep-gateway demo"'))
    profile.unlink()
    result = _check_config(config_dir, tmp_path / "var")
    assert (result.returncode, result.stdout, result.stderr) == (1, REGEX_ISSUE + "\n", "")


@pytest.mark.asyncio
async def test_bad_regex_on_reload_is_an_issue_and_the_next_edit_applies(
    tmp_path: Path, shared_data_dir: Path
) -> None:
    async with running_gateway(tmp_path, shared_data_dir, watch=True) as gateway:
        reloader = gateway.services.reloader
        generation = reloader.state.generation
        alias = gateway.settings.config_dir / "aliases/guarded.yaml"
        alias.write_text(BAD_REGEX)
        async with asyncio.timeout(WAIT_SECONDS):
            state = await reloader.wait_for(lambda s: bool(s.errors))
        assert [str(e) for e in state.errors] == [REGEX_ISSUE]
        assert state.generation == generation
        assert "guarded" not in reloader.current().aliases

        alias.write_text(GOOD_REGEX)
        async with asyncio.timeout(WAIT_SECONDS):
            state = await reloader.wait_for(lambda s: s.generation > generation)
        assert state.errors == ()
        response = await gateway.client.get("/scep/guarded/pkiclient.exe?operation=GetCACaps")
        assert response.status_code == 200


# 9b: a CA added with `create:` while `serve --workers 2` runs is created once: each worker
# reloads by itself, and all of them must end up with the one key that was written.
NEW_CA = """\
certificate: ca/AddedCA/ca.pem
key: {file: ca/AddedCA/ca.key}
# RSA-4096 generation takes long enough that both workers' reloads surely overlap it.
create: {subject: "CN=AddedCA,O=scep-gateway test", key_size: 4096}
"""
SAMPLES = 40


def _ca_certificate(url: str) -> bytes | None:
    # urlopen makes a new connection each time: SO_REUSEPORT spreads them over the workers.
    try:
        with urllib.request.urlopen(f"{url}?operation=GetCACert", timeout=10) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError:
        return None


def test_ca_added_while_serving_with_workers_is_created_once(tmp_path: Path) -> None:
    process, server = start_server(tmp_path, workers=2)
    try:
        deadline = time.monotonic() + 30
        # Ready means one worker answers; edit once both watch the config directory.
        while server.log.read_text().count("gateway.app: serving aliases") < 2:
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.1)
        (server.config_dir / "cas/AddedCA.yaml").write_text(NEW_CA)
        (server.config_dir / "aliases/added.yaml").write_text("ca: AddedCA\n")
        url = server.url("added")
        deadline = time.monotonic() + 60
        answers: list[bytes | None] = []
        # Until SAMPLES answers in a row are certificates: every worker serves the new CA.
        while len(answers) < SAMPLES or None in answers[-SAMPLES:]:
            assert time.monotonic() < deadline, server.log.read_text()
            answers.append(_ca_certificate(url))
        served = set(answers[-SAMPLES:])
        assert len(served) == 1
        on_disk = x509.load_pem_x509_certificate(
            (server.data_dir / "ca/AddedCA/ca.pem").read_bytes()
        )
        key = serialization.load_pem_private_key(
            (server.data_dir / "ca/AddedCA/ca.key").read_bytes(), password=None
        )
        assert served == {on_disk.public_bytes(serialization.Encoding.DER)}
        assert key.public_key() == on_disk.public_key()
        assert sorted(p.name for p in (server.data_dir / "ca/AddedCA").iterdir()) == [
            "ca.key",
            "ca.pem",
        ]
    finally:
        stop_server(process)
    assert server.log.read_text().count("created CA AddedCA") == 1


def test_a_key_without_its_certificate_is_never_replaced(tmp_path: Path) -> None:
    config_dir = copy_config(tmp_path)
    key = tmp_path / "var/ca/ManagementCA/ca.key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"left over by a crash between the key and the certificate\n")
    result = subprocess.run(
        [
            GATEWAY,
            "ca",
            "issue-ra",
            "ManagementCA",
            "--config",
            str(config_dir),
            "--data-dir",
            str(tmp_path / "var"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"cas/ManagementCA.yaml:$: key file {key} exists without its certificate: supply the "
        "certificate, or remove the key to have a new one created"
    )
    assert key.read_bytes() == b"left over by a crash between the key and the certificate\n"
