"""Real clients enroll in CA mode, under both key arrangements (DESIGN.md section 8)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.interop.clients import Certmonger, scepclient_enroll
from tests.interop.conftest import Server

pytestmark = pytest.mark.interop

ALIASES = ["scep", "ndes"]  # CA key (EJBCA default) and RA pair (NDES style)


def _openssl_verify(ca_pem: Path, cert_pem: bytes, tmp: Path) -> None:
    leaf = tmp / "leaf.pem"
    leaf.write_bytes(cert_pem)
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca_pem), str(leaf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")


def _key_of(path: Path) -> bytes:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _public(cert_pem: bytes) -> bytes:
    return (
        x509.load_pem_x509_certificate(cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize("alias", ALIASES)
def test_scepclient_enrolls(server: Server, tmp_path: Path, alias: str) -> None:
    user = f"sc-{alias}"
    server.cli(
        "entity",
        "add",
        "--username",
        user,
        "--password",
        "Sc3p-code",
        "--dn",
        f"CN={user},O=Interop",
        "--ca",
        "ManagementCA",
    )
    run = scepclient_enroll(server.url(alias), tmp_path, common_name=user, challenge="Sc3p-code")
    assert run.ok, run.stdout + run.stderr
    assert run.certificate_pem is not None
    assert run.key_file is not None
    _openssl_verify(server.ca_pem(tmp_path), run.certificate_pem, tmp_path)
    assert _public(run.certificate_pem) == _key_of(run.key_file)
    cert = x509.load_pem_x509_certificate(run.certificate_pem)
    assert cert.subject.rfc4514_string() == f"CN={user},O=Interop"
    shown = server.cli("entity", "show", user).stdout
    assert "status: generated" in shown


@pytest.mark.parametrize("alias", ALIASES)
def test_scepclient_refusals_are_badrequest(server: Server, tmp_path: Path, alias: str) -> None:
    user = f"sc-refuse-{alias}"
    server.cli(
        "entity", "add", "--username", user, "--password", "right-code", "--ca", "ManagementCA"
    )
    wrong = scepclient_enroll(
        server.url(alias), tmp_path / "wrong", common_name=user, challenge="wrong-code"
    )
    assert wrong.fail_info == "badRequest", wrong.stdout + wrong.stderr
    unknown = scepclient_enroll(
        server.url(alias), tmp_path / "unknown", common_name=f"{user}-nobody", challenge="x"
    )
    assert unknown.fail_info == "badRequest", unknown.stdout + unknown.stderr
    first = scepclient_enroll(
        server.url(alias), tmp_path / "first", common_name=user, challenge="right-code"
    )
    assert first.ok, first.stdout + first.stderr
    reused = scepclient_enroll(
        server.url(alias), tmp_path / "reused", common_name=user, challenge="right-code"
    )
    assert reused.fail_info == "badRequest", reused.stdout + reused.stderr
    # After an operator reset, the entity enrolls once more.
    server.cli("entity", "reset", user, "--password", "new-code")
    again = scepclient_enroll(
        server.url(alias), tmp_path / "again", common_name=user, challenge="new-code"
    )
    assert again.ok, again.stdout + again.stderr


@pytest.mark.parametrize("alias", ALIASES)
def test_certmonger_enrolls(server: Server, tmp_path: Path, alias: str) -> None:
    user = f"cm-{alias}"
    server.cli(
        "entity", "add", "--username", user, "--password", "Cm-code-1", "--ca", "ManagementCA"
    )
    with Certmonger(tmp_path / "cm") as cm:
        cm.add_scep_ca("gw", server.url(alias), ca_cert_pem_file=server.ca_pem(tmp_path, alias))
        request_id = cm.request(
            "gw",
            key_file=tmp_path / "key.pem",
            cert_file=tmp_path / "cert.pem",
            subject=f"CN={user}",
            challenge="Cm-code-1",
        )
        status = cm.wait(request_id)
        assert status.status == "MONITORING", f"{status}\n{cm.log_tail()}"
    cert_pem = (tmp_path / "cert.pem").read_bytes()
    _openssl_verify(server.ca_pem(tmp_path), cert_pem, tmp_path)
    assert _public(cert_pem) == _key_of(tmp_path / "key.pem")


@pytest.mark.parametrize("alias", ALIASES)
def test_certmonger_wrong_challenge_is_rejected(server: Server, tmp_path: Path, alias: str) -> None:
    user = f"cm-wrong-{alias}"
    server.cli(
        "entity", "add", "--username", user, "--password", "Cm-code-2", "--ca", "ManagementCA"
    )
    with Certmonger(tmp_path / "cm") as cm:
        cm.add_scep_ca("gw", server.url(alias), ca_cert_pem_file=server.ca_pem(tmp_path, alias))
        request_id = cm.request(
            "gw",
            key_file=tmp_path / "key.pem",
            cert_file=tmp_path / "cert.pem",
            subject=f"CN={user}",
            challenge="not-the-code",
        )
        status = cm.wait(request_id)
    assert status.status == "CA_REJECTED", str(status)
    # certmonger's text for failInfo badRequest (2).
    assert status.ca_error == "Transaction either is not permitted or is not supported by server."
