"""RA mode over HTTP: naming, approvals with CertPoll, revocation and GetCRL."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from gateway.cli import main
from gateway.errors import FailInfo
from gateway.scep import client
from gateway.scep.messages import MessageType, PkiStatus
from gateway.store import PendingStatus
from tests.conftest import Gateway, body_of, running_gateway
from tests.support import Clock, Device, cn, fresh_key, register

pytestmark = pytest.mark.asyncio

SECRET = "Ra-Secret-123"
RA = "mode: ra\nca: ManagementCA\nra:\n  secret: {env: SCEP_TEST_RA_SECRET}\n"
ALIASES = {
    "aliases/ra-open.yaml": RA + "  name: {scheme: DN, parameters: 'UID;CN', prefix: 'dev-'}\n",
    "aliases/ra-random.yaml": RA + "  name: {scheme: RANDOM, prefix: 'r-'}\n",
    "aliases/ra-approve.yaml": RA + "approval: {required: true, expire_hours: 1}\n",
    "aliases/ra-fixed.yaml": RA
    + "  name: {scheme: FIXED, parameters: kiosk, postfix: '-${RANDOM}'}\n",
    "aliases/ra-username.yaml": RA + "  name: {scheme: USERNAME, prefix: 'u.'}\n",
    "aliases/ra-plain.yaml": RA,
}


@pytest.fixture
async def ra(
    tmp_path: Path, shared_data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[Gateway, Clock]]:
    """Every test here runs on SQLite and on PostgreSQL."""
    monkeypatch.setenv("SCEP_TEST_RA_SECRET", SECRET)
    clock = Clock()
    async with running_gateway(
        tmp_path, shared_data_dir, ALIASES, clock=clock, database_url=database_url
    ) as gw:
        yield gw, clock


async def _cli(gw: Gateway, *args: str) -> int:
    """The operator's command, run beside the serving loop as a second process would."""
    s = gw.settings
    return await asyncio.to_thread(
        main,
        [
            *args,
            "--config",
            str(s.config_dir),
            "--data-dir",
            str(s.data_dir),
            "--database",
            str(s.database_url),
        ],
    )


async def _poll(gw: Gateway, device: Device, transaction_id: str) -> bytes:
    """The device's CertPoll for its own subject (CN = its name)."""
    ca = await gw.ca_certificate()
    return device.message(
        client.cert_poll_content(ca.subject, cn(device.common_name)),
        gw.recipients("ra-approve"),
        message_type=MessageType.CERT_POLL,
        transaction_id=transaction_id,
    )


async def _send(gw: Gateway, alias: str, device: Device, **options: object) -> client.CertRep:
    return device.read(await gw.pki(device.pkcsreq(SECRET, gw.recipients(alias), **options), alias))


async def test_ra_mode_names_and_creates_the_end_entity(ra: tuple[Gateway, Clock]) -> None:
    gw, _ = ra
    reply = await _send(gw, "ra-open", Device("printer-7"))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    entity = await gw.services.store.get_end_entity("dev-printer-7")
    assert entity is not None
    assert entity.subject_dn == "CN=printer-7"
    # The requested DN is issued in RA mode.
    assert reply.certificates[0].subject == cn("printer-7")


async def test_ra_mode_random_names(ra: tuple[Gateway, Clock]) -> None:
    gw, _ = ra
    for name in ("same", "same"):
        reply = await _send(gw, "ra-random", Device(name, key=fresh_key()))
        assert reply.status is PkiStatus.SUCCESS
    names = [e.username for e in await gw.services.store.list_end_entities()]
    randoms = [n for n in names if n.startswith("r-")]
    assert len(randoms) == 2
    assert all(len(n) == 14 and n[2:].isalnum() for n in randoms)


async def test_ra_mode_dn_scheme_takes_the_first_field_present(
    ra: tuple[Gateway, Clock],
) -> None:
    gw, _ = ra
    device = Device("cn-part", key=fresh_key())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.USER_ID, "uid-part"),
            x509.NameAttribute(NameOID.COMMON_NAME, "cn-part"),
        ]
    )
    body = device.message(device.csr(SECRET, subject), gw.recipients("ra-open"))
    assert device.read(await gw.pki(body, "ra-open")).status is PkiStatus.SUCCESS
    assert await gw.services.store.get_end_entity("dev-uid-part") is not None


async def test_ra_mode_fixed_and_username_schemes(ra: tuple[Gateway, Clock]) -> None:
    gw, _ = ra
    for name in ("kiosk-a", "kiosk-b"):
        reply = await _send(gw, "ra-fixed", Device(name, key=fresh_key()))
        assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    reply = await _send(gw, "ra-username", Device("alice"))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    names = sorted(e.username for e in await gw.services.store.list_end_entities())
    fixed = [n for n in names if n.startswith("kiosk-")]
    # FIXED names every device alike; the random postfix keeps them apart.
    assert len(fixed) == 2
    assert all(len(n) == len("kiosk-") + 12 and n[6:].isalnum() for n in fixed)
    assert "u.alice" in names


async def test_ra_mode_wrong_secret(ra: tuple[Gateway, Clock]) -> None:
    gw, _ = ra
    device = Device("intruder")
    body = device.pkcsreq("guess", gw.recipients("ra-open"))
    reply = device.read(await gw.pki(body, "ra-open"))
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert await gw.services.store.get_end_entity("dev-intruder") is None


async def test_approval_pending_poll_approve_success(ra: tuple[Gateway, Clock]) -> None:
    gw, _ = ra
    device = Device("waiting-1", key=fresh_key())
    first = await _send(gw, "ra-approve", device, transaction_id="tx-approve-1")
    assert first.status is PkiStatus.PENDING
    assert first.fail_info is None
    poll = await _poll(gw, device, "tx-approve-1")
    assert device.read(await gw.pki(poll, "ra-approve")).status is PkiStatus.PENDING
    (pending,) = await gw.services.store.list_pending(status=PendingStatus.PENDING)
    assert pending.transaction_id == "tx-approve-1"
    assert await _cli(gw, "approvals", "approve", str(pending.id)) == 0
    issued = device.read(await gw.pki(poll, "ra-approve"))
    assert issued.status is PkiStatus.SUCCESS, issued.fail_info_text
    assert issued.certificates[0].public_key() == device.key.public_key()
    # A poll after issuance (lost answer) gets the same certificate again.
    again = device.read(await gw.pki(poll, "ra-approve"))
    assert again.certificates[0] == issued.certificates[0]
    assert await gw.services.store.count_certificates() == 1


async def test_pending_survives_a_restart_and_is_seen_by_every_replica(
    tmp_path: Path, shared_data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCEP_TEST_RA_SECRET", SECRET)
    device = Device("replicated-1", key=fresh_key())

    def replica(name: str) -> AbstractAsyncContextManager[Gateway]:
        return running_gateway(tmp_path / name, shared_data_dir, ALIASES, database_url=database_url)

    async with replica("a") as a, replica("b") as b:
        first = await _send(a, "ra-approve", device, transaction_id="tx-replicas")
        assert first.status is PkiStatus.PENDING
        poll = await _poll(b, device, "tx-replicas")
        assert device.read(await b.pki(poll, "ra-approve")).status is PkiStatus.PENDING
    # Both replicas are gone; the operator approves; a fresh process answers the poll.
    async with replica("c") as c:
        (pending,) = await c.services.store.list_pending(status=PendingStatus.PENDING)
        assert pending.transaction_id == "tx-replicas"
        assert await _cli(c, "approvals", "approve", str(pending.id)) == 0
        issued = device.read(await c.pki(poll, "ra-approve"))
        assert issued.status is PkiStatus.SUCCESS, issued.fail_info_text
        assert issued.certificates[0].public_key() == device.key.public_key()


async def test_approval_rejected(ra: tuple[Gateway, Clock]) -> None:
    gw, _ = ra
    device = Device("rejected-1")
    assert (
        await _send(gw, "ra-approve", device, transaction_id="tx-r")
    ).status is PkiStatus.PENDING
    (pending,) = await gw.services.store.list_pending(status=PendingStatus.PENDING)
    assert await _cli(gw, "approvals", "reject", str(pending.id), "--reason", "unknown device") == 0
    poll = await _poll(gw, device, "tx-r")
    reply = device.read(await gw.pki(poll, "ra-approve"))
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text == "the request was rejected: unknown device"


async def test_approval_expires(ra: tuple[Gateway, Clock]) -> None:
    gw, clock = ra
    device = Device("slow-1")
    assert (
        await _send(gw, "ra-approve", device, transaction_id="tx-e")
    ).status is PkiStatus.PENDING
    clock.now += timedelta(hours=2)
    poll = await _poll(gw, device, "tx-e")
    reply = device.read(await gw.pki(poll, "ra-approve"))
    assert reply.fail_info_text == "the request was expired"


async def test_approved_entity_is_issued_without_a_second_approval(
    ra: tuple[Gateway, Clock],
) -> None:
    gw, _ = ra
    device = Device("resend-1")
    assert (
        await _send(gw, "ra-approve", device, transaction_id="tx-1")
    ).status is PkiStatus.PENDING
    (pending,) = await gw.services.store.list_pending(status=PendingStatus.PENDING)
    assert await _cli(gw, "approvals", "approve", str(pending.id)) == 0
    # The client never polled (say the issuance after approval failed); its next PKCSReq
    # (a new transaction) is issued at once.
    reply = await _send(gw, "ra-approve", device, transaction_id="tx-2")
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    done = await gw.services.store.get_pending(pending.id)  # type: ignore[arg-type]
    assert done is not None
    assert done.status is PendingStatus.ISSUED


async def test_poll_for_unknown_transaction_is_badcertid(ra: tuple[Gateway, Clock]) -> None:
    gw, _ = ra
    device = Device("nobody")
    poll = await _poll(gw, device, "never-sent")
    assert device.read(await gw.pki(poll, "ra-approve")).fail_info == FailInfo.BAD_CERT_ID


async def test_revocation_and_getcrl(ra: tuple[Gateway, Clock], tmp_path: Path) -> None:
    gw, _ = ra
    device = Device("revokee", key=fresh_key())
    issued = (await _send(gw, "ra-open", device)).certificates[0]
    serial = f"{issued.serial_number:x}"
    assert await _cli(gw, "cert", "revoke", serial, "--reason", "keyCompromise") == 0
    ias = cms.IssuerAndSerialNumber(
        {
            "issuer": asn1_x509.Name.load(issued.issuer.public_bytes()),
            "serial_number": issued.serial_number,
        }
    ).dump()
    body = device.message(ias, gw.recipients("ra-open"), message_type=MessageType.GET_CRL)
    reply = device.read(await gw.pki(body, "ra-open"))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    (crl_der,) = reply.crls
    ca = await gw.ca_certificate()
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    checked = await asyncio.to_thread(
        subprocess.run,
        ["openssl", "crl", "-inform", "DER", "-CAfile", str(ca_pem), "-noout", "-text"],
        input=crl_der,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    text = checked.stdout.decode()
    assert "verify OK" in checked.stderr.decode() + text
    assert f"Serial Number: {serial.upper().zfill(len(serial) + len(serial) % 2)}" in text
    assert "Key Compromise" in text
    crl = x509.load_der_x509_crl(crl_der)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    # The same CRL is served over plain HTTP for the CDP URL.
    http = await gw.client.get("/crl/ManagementCA.crl")
    assert http.headers["Content-Type"] == "application/pkix-crl"
    assert (
        x509.load_der_x509_crl(await http.get_data(as_text=False))
        .extensions.get_extension_for_class(x509.CRLNumber)
        .value.crl_number
        == number
    )


async def test_an_approval_belongs_to_the_approved_key(ra: tuple[Gateway, Clock]) -> None:
    gw, _ = ra
    owner = Device("laptop-42", key=fresh_key())
    assert (await _send(gw, "ra-approve", owner, transaction_id="tx-owner")).status is (
        PkiStatus.PENDING
    )
    (pending,) = await gw.services.store.list_pending(status=PendingStatus.PENDING)
    assert await _cli(gw, "approvals", "approve", str(pending.id)) == 0
    # Someone else with the shared secret and the same name, before the owner polls.
    intruder = Device("laptop-42", key=fresh_key())
    reply = await _send(gw, "ra-approve", intruder, transaction_id="tx-intruder")
    assert reply.status is PkiStatus.PENDING  # waits for an approval of its own
    owner_reply = owner.read(await gw.pki(await _poll(gw, owner, "tx-owner"), "ra-approve"))
    assert owner_reply.status is PkiStatus.SUCCESS, owner_reply.fail_info_text
    assert owner_reply.certificates[0].public_key() == owner.key.public_key()


async def test_concurrent_polls_of_one_approval_get_one_certificate(
    ra: tuple[Gateway, Clock],
) -> None:
    gw, _ = ra
    device = Device("eager-1", key=fresh_key())
    await _send(gw, "ra-approve", device, transaction_id="tx-eager")
    (pending,) = await gw.services.store.list_pending(status=PendingStatus.PENDING)
    assert await _cli(gw, "approvals", "approve", str(pending.id)) == 0
    poll = await _poll(gw, device, "tx-eager")
    answers = await asyncio.gather(*(gw.pki(poll, "ra-approve") for _ in range(4)))
    replies = [device.read(a) for a in answers]
    assert all(r.status is PkiStatus.SUCCESS for r in replies), [r.fail_info_text for r in replies]
    assert len({r.certificates[0].serial_number for r in replies}) == 1
    assert await gw.services.store.count_certificates() == 1


async def test_approval_of_a_name_cryptography_cannot_parse_back(
    ra: tuple[Gateway, Clock],
) -> None:
    gw, _ = ra
    device = Device("odd-name", key=fresh_key())
    with pytest.warns(UserWarning, match="length must be"):
        country = x509.NameAttribute(NameOID.COUNTRY_NAME, "USA", _validate=False)
    subject = x509.Name([country, x509.NameAttribute(NameOID.COMMON_NAME, "odd-name")])
    body = device.message(
        device.csr(SECRET, subject), gw.recipients("ra-approve"), transaction_id="tx-odd"
    )
    assert device.read(await gw.pki(body, "ra-approve")).status is PkiStatus.PENDING
    (pending,) = await gw.services.store.list_pending(status=PendingStatus.PENDING)
    assert await _cli(gw, "approvals", "approve", str(pending.id)) == 0
    reply = device.read(await gw.pki(await _poll(gw, device, "tx-odd"), "ra-approve"))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    issued = reply.certificates[0].public_bytes(serialization.Encoding.DER)
    assert asn1_x509.Certificate.load(issued).subject.dump() == subject.public_bytes()


async def test_ra_mode_never_takes_over_a_registered_entity(ra: tuple[Gateway, Clock]) -> None:
    gw, _ = ra
    await register(gw.services.store, "router1", "Enroll-Me-1")
    before = await gw.services.store.get_end_entity("router1")
    reply = await _send(gw, "ra-plain", Device("router1", key=fresh_key()))
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text == "this name belongs to a registered end entity"
    assert await gw.services.store.get_end_entity("router1") == before
    # The device the operator registered still enrolls with its code.
    owner = Device("router1", key=fresh_key())
    ok = owner.read(await gw.pki(owner.pkcsreq("Enroll-Me-1", gw.recipients("scep")), "scep"))
    assert ok.status is PkiStatus.SUCCESS, ok.fail_info_text


async def test_a_crl_older_than_a_revocation_is_signed_anew(ra: tuple[Gateway, Clock]) -> None:
    gw, clock = ra
    issued = (await _send(gw, "ra-plain", Device("stale-crl", key=fresh_key()))).certificates[0]
    first = x509.load_der_x509_crl(await body_of(await gw.client.get("/crl/ManagementCA.crl")))
    # A revocation whose own CRL never got out (another replica numbered its CRL first, or
    # the publish after the revocation failed).
    clock.now += timedelta(seconds=1)
    await gw.services.store.revoke_certificate(
        "ManagementCA", issued.serial_number, "keyCompromise", clock.now
    )
    served = x509.load_der_x509_crl(await body_of(await gw.client.get("/crl/ManagementCA.crl")))
    assert served.get_revoked_certificate_by_serial_number(issued.serial_number) is not None
    number = served.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert number > first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


async def test_concurrent_first_enrollments_of_one_name_issue_once(
    ra: tuple[Gateway, Clock],
) -> None:
    gw, _ = ra
    devices = [Device("twin", key=fresh_key()) for _ in range(3)]
    bodies = [d.pkcsreq(SECRET, gw.recipients("ra-plain")) for d in devices]
    answers = await asyncio.gather(*(gw.pki(b, "ra-plain") for b in bodies))
    replies = [d.read(a) for d, a in zip(devices, answers, strict=True)]
    assert [r.status for r in replies].count(PkiStatus.SUCCESS) == 1
    refused = [r for r in replies if r.status is not PkiStatus.SUCCESS]
    assert all(r.fail_info == FailInfo.BAD_REQUEST for r in refused)
    assert len(await gw.services.store.list_certificates(username="twin")) == 1


async def test_a_name_that_holds_a_certificate_does_not_wait_for_approval(
    ra: tuple[Gateway, Clock],
) -> None:
    gw, _ = ra
    first = Device("approved-once", key=fresh_key())
    await _send(gw, "ra-approve", first, transaction_id="tx-first")
    (pending,) = await gw.services.store.list_pending(status=PendingStatus.PENDING)
    assert await _cli(gw, "approvals", "approve", str(pending.id)) == 0
    issued = first.read(await gw.pki(await _poll(gw, first, "tx-first"), "ra-approve"))
    assert issued.status is PkiStatus.SUCCESS, issued.fail_info_text
    again = await _send(gw, "ra-approve", Device("approved-once", key=fresh_key()))
    assert again.fail_info == FailInfo.BAD_REQUEST
    assert again.fail_info_text == "the end entity already holds a valid certificate; renew with it"
    assert await gw.services.store.list_pending(status=PendingStatus.PENDING) == []
