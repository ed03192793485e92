"""RA mode, renewal and approvals with the real clients (issue: RA mode, renewal, approvals)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.interop.clients import Certmonger, scepclient_enroll, scepclient_renew
from tests.interop.conftest import Server, start_server, stop_server
from tests.support import copy_config

pytestmark = pytest.mark.interop

EXTRA_ALIASES = {
    # Renewal allowed at once and with the same key: scepclient renews with its old key.
    "ra-renew.yaml": "mode: ra\nca: ManagementCA\nra: {secret: {file: ra-demo.secret}}\n"
    "renewal: {enabled: true, allow_same_key: true, after_fraction: 0}\n",
    # The EJBCA default: half the validity must have passed.
    "ra-early.yaml": "mode: ra\nca: ManagementCA\nra: {secret: {file: ra-demo.secret}}\n"
    "renewal: {enabled: true, allow_same_key: true}\n",
    "ra-approve.yaml": "mode: ra\nca: ManagementCA\nra: {secret: {file: ra-demo.secret}}\n"
    "approval: {required: true}\n",
}


@pytest.fixture(scope="module")
def ra_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("ra")
    config = copy_config(tmp)
    for name, text in EXTRA_ALIASES.items():
        (config / "aliases" / name).write_text(text)
    process, server = start_server(tmp, config_dir=config)
    try:
        yield server
    finally:
        stop_server(process)


def _secret(server: Server) -> str:
    return (server.data_dir / "ra-demo.secret").read_text().strip()


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def test_scepclient_enrolls_with_the_shared_secret(ra_server: Server, tmp_path: Path) -> None:
    run = scepclient_enroll(
        ra_server.url("ra"), tmp_path, common_name="ra-device-1", challenge=_secret(ra_server)
    )
    assert run.ok, run.stdout + run.stderr
    assert run.certificate_pem is not None
    # The gateway created the end entity itself, named by the CN (scheme DN, CN first).
    shown = ra_server.cli("entity", "show", "ra-device-1").stdout
    assert "status: generated" in shown
    assert "CN=ra-device-1" in shown


def test_scepclient_wrong_secret_is_badrequest(ra_server: Server, tmp_path: Path) -> None:
    run = scepclient_enroll(
        ra_server.url("ra"), tmp_path, common_name="ra-device-2", challenge="not-the-secret"
    )
    assert run.fail_info == "badRequest", run.stdout + run.stderr
    assert ra_server.cli("entity", "show", "ra-device-2", check=False).returncode == 1


def test_a_second_enrollment_of_a_named_entity_must_renew(
    ra_server: Server, tmp_path: Path
) -> None:
    first = scepclient_enroll(
        ra_server.url("ra"), tmp_path / "a", common_name="ra-twice", challenge=_secret(ra_server)
    )
    assert first.ok, first.stdout
    second = scepclient_enroll(
        ra_server.url("ra"), tmp_path / "b", common_name="ra-twice", challenge=_secret(ra_server)
    )
    assert second.fail_info == "badRequest", second.stdout


def test_scepclient_renewalreq_with_the_same_key(ra_server: Server, tmp_path: Path) -> None:
    url = ra_server.url("ra-renew")
    first = scepclient_enroll(url, tmp_path, common_name="renew-1", challenge=_secret(ra_server))
    assert first.ok, first.stdout + first.stderr
    assert first.certificate_pem is not None
    renewed = scepclient_renew(url, tmp_path, common_name="renew-1")
    assert renewed.ok, renewed.stdout + renewed.stderr
    # scepclient names its request type only on failure; the server's issuance line does.
    issued = re.search(
        r"issued serial=\w+ .*entity=renew-1 .*request=(\w+) renews=(\w+)",
        ra_server.log.read_text(),
    )
    assert issued is not None
    assert issued[1] == "RENEWAL_REQ"
    assert int(issued[2], 16) == _serial(first.certificate_pem)
    assert renewed.certificate_pem is not None
    assert _serial(renewed.certificate_pem) != _serial(first.certificate_pem)
    old = x509.load_pem_x509_certificate(first.certificate_pem)
    new = x509.load_pem_x509_certificate(renewed.certificate_pem)
    assert new.public_key() == old.public_key()
    listed = ra_server.cli("cert", "list", "--entity", "renew-1").stdout.splitlines()
    assert len(listed) == 2


def test_scepclient_renewal_too_early_is_refused(ra_server: Server, tmp_path: Path) -> None:
    url = ra_server.url("ra-early")
    first = scepclient_enroll(url, tmp_path, common_name="early-1", challenge=_secret(ra_server))
    assert first.ok, first.stdout
    renewed = scepclient_renew(url, tmp_path, common_name="early-1")
    assert renewed.fail_info == "badRequest", renewed.stdout


def test_revoked_certificate_cannot_renew(ra_server: Server, tmp_path: Path) -> None:
    url = ra_server.url("ra-renew")
    first = scepclient_enroll(url, tmp_path, common_name="revoked-1", challenge=_secret(ra_server))
    assert first.ok, first.stdout
    assert first.certificate_pem is not None
    serial = f"{_serial(first.certificate_pem):x}"
    out = ra_server.cli("cert", "revoke", serial, "--reason", "keyCompromise").stdout
    assert re.search(rf"revoked {serial} .*keyCompromise; CRL \d+ published", out), out
    renewed = scepclient_renew(url, tmp_path, common_name="revoked-1")
    assert renewed.fail_info == "badCertID", renewed.stdout


def test_certmonger_enrolls_and_rekeys(ra_server: Server, tmp_path: Path) -> None:
    with Certmonger(tmp_path / "cm") as cm:
        cm.add_scep_ca("gw", ra_server.url("ra-renew"), ca_cert_pem_file=ra_server.ca_pem(tmp_path))
        request_id = cm.request(
            "gw",
            key_file=tmp_path / "key.pem",
            cert_file=tmp_path / "cert.pem",
            subject="CN=cm-ra-1",
            challenge=_secret(ra_server),
        )
        status = cm.wait(request_id)
        assert status.status == "MONITORING", f"{status}\n{cm.log_tail()}"
        first = (tmp_path / "cert.pem").read_bytes()
        # rekey: a new key, a PKCSReq signed with the current certificate (renewal).
        cm.rekey(request_id)
        status = cm.wait(request_id)
        assert status.status == "MONITORING", f"{status}\n{cm.log_tail()}"
        second = (tmp_path / "cert.pem").read_bytes()
    assert _serial(second) != _serial(first)
    old, new = x509.load_pem_x509_certificate(first), x509.load_pem_x509_certificate(second)
    assert new.public_key() != old.public_key()
    assert new.subject == old.subject


def test_certmonger_waits_for_approval(ra_server: Server, tmp_path: Path) -> None:
    with Certmonger(tmp_path / "cm") as cm:
        cm.add_scep_ca(
            "gw", ra_server.url("ra-approve"), ca_cert_pem_file=ra_server.ca_pem(tmp_path)
        )
        request_id = cm.request(
            "gw",
            key_file=tmp_path / "key.pem",
            cert_file=tmp_path / "cert.pem",
            subject="CN=cm-approve-1",
            challenge=_secret(ra_server),
        )
        status = cm.wait(request_id, until={"CA_WORKING", "MONITORING", "CA_REJECTED"})
        assert status.status == "CA_WORKING", f"{status}\n{cm.log_tail()}"
        listed = ra_server.cli("approvals", "list").stdout
        line = next(row for row in listed.splitlines() if "CN=cm-approve-1" in row)
        pending_id = line.split("\t")[0]
        ra_server.cli("approvals", "approve", pending_id)
        cm.resubmit(request_id)  # certmonger would poll later by itself; do not wait hours
        status = cm.wait(request_id)
        assert status.status == "MONITORING", f"{status}\n{cm.log_tail()}"
    # The request was issued (not just approved), and certmonger holds that certificate.
    everything = ra_server.cli("approvals", "list", "--all").stdout.splitlines()
    row = next(r for r in everything if "CN=cm-approve-1" in r)
    assert row.split("\t")[1] == "issued"
    assert "CN=cm-approve-1" not in ra_server.cli("approvals", "list").stdout
    held = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    assert held.subject.rfc4514_string() == "CN=cm-approve-1"
