"""Item 5 of docs/security.md: a poll or resend is answered only for the key of its request.

A transactionID travels in clear (and is matched without case), so it proves nothing: the
poll must be signed by the request's key, a resend must carry the request's key, and anyone
else is answered exactly as for a transactionID that was never sent. One open request per
end entity and alias, and a cap per alias, keep pending requests bounded.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from cryptography import x509

from gateway.cli import main
from gateway.errors import FailInfo
from gateway.scep import client
from gateway.scep.messages import MessageType, PkiStatus
from gateway.store import PendingStatus
from tests.conftest import Gateway, running_gateway
from tests.interop.conftest import Server, start_server, stop_server
from tests.support import Device, cn, copy_config, fresh_key

SECRET = "Poll-Binding-Secret-1"
RA = "mode: ra\nca: ManagementCA\nra:\n  secret: {env: SCEP_TEST_RA_SECRET}\n"
ALIASES = {"aliases/ra-approve.yaml": RA + "approval: {required: true}\n"}
CAPPED = {"aliases/ra-capped.yaml": RA + "approval: {required: true, max_pending: 3}\n"}


@pytest.fixture
async def gw(
    tmp_path: Path, shared_data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("SCEP_TEST_RA_SECRET", SECRET)
    async with running_gateway(
        tmp_path, shared_data_dir, ALIASES, database_url=database_url
    ) as running:
        yield running


@pytest.fixture
async def capped(
    tmp_path: Path, shared_data_dir: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Gateway]:
    monkeypatch.setenv("SCEP_TEST_RA_SECRET", SECRET)
    async with running_gateway(
        tmp_path, shared_data_dir, {**ALIASES, **CAPPED}, database_url=database_url
    ) as running:
        yield running


async def _approve_all(gw: Gateway) -> None:
    s = gw.settings
    for pending in await gw.services.store.list_pending(status=PendingStatus.PENDING):
        args = ["approvals", "approve", str(pending.id), "--config", str(s.config_dir)]
        args += ["--data-dir", str(s.data_dir), "--database", str(s.database_url)]
        assert await asyncio.to_thread(main, args) == 0


def _poll_body(
    device: Device, issuer: x509.Name, recipients: list[x509.Certificate], tid: str
) -> bytes:
    return device.message(
        client.cert_poll_content(issuer, cn(device.common_name)),
        recipients,
        message_type=MessageType.CERT_POLL,
        transaction_id=tid,
    )


async def _poll(gw: Gateway, device: Device, tid: str, alias: str = "ra-approve") -> client.CertRep:
    issuer = (await gw.ca_certificate()).subject
    return device.read(await gw.pki(_poll_body(device, issuer, gw.recipients(alias), tid), alias))


async def _send(gw: Gateway, device: Device, tid: str, alias: str = "ra-approve") -> client.CertRep:
    body = device.pkcsreq(SECRET, gw.recipients(alias), transaction_id=tid)
    return device.read(await gw.pki(body, alias))


def _same_as_unknown(reply: client.CertRep, unknown: client.CertRep) -> None:
    assert reply.status is PkiStatus.FAILURE
    assert (reply.fail_info, reply.fail_info_text) == (unknown.fail_info, unknown.fail_info_text)
    assert reply.fail_info == FailInfo.BAD_CERT_ID
    assert not reply.certificates


async def test_a_poll_signed_by_another_key_is_answered_as_an_unknown_transaction(
    gw: Gateway,
) -> None:
    victim = Device("victim-poll", key=fresh_key())
    attacker = Device("victim-poll", key=fresh_key())  # same name, its own key
    assert (await _send(gw, victim, "tx-victim-poll")).status is PkiStatus.PENDING
    unknown = await _poll(gw, attacker, "tx-never-sent")
    for tid in ("tx-victim-poll", "TX-VICTIM-POLL"):
        _same_as_unknown(await _poll(gw, attacker, tid), unknown)
    # The owner still sees its request; after approval the attacker still learns nothing.
    assert (await _poll(gw, victim, "tx-victim-poll")).status is PkiStatus.PENDING
    await _approve_all(gw)
    _same_as_unknown(await _poll(gw, attacker, "tx-victim-poll"), unknown)
    issued = await _poll(gw, victim, "tx-victim-poll")
    assert issued.status is PkiStatus.SUCCESS, issued.fail_info_text
    assert issued.certificates[0].public_key() == victim.key.public_key()
    # A rejection reason is not shown to another key either.
    other = Device("rejected-poll", key=fresh_key())
    assert (await _send(gw, other, "tx-rejected")).status is PkiStatus.PENDING
    (pending,) = await gw.services.store.list_pending(status=PendingStatus.PENDING)
    await gw.services.store.decide_pending(
        pending.id or 0, approve=False, reason="stolen laptop", now=pending.created_at
    )
    _same_as_unknown(await _poll(gw, attacker, "tx-rejected"), unknown)


async def test_a_presend_of_the_victims_transaction_never_hands_out_the_wrong_certificate(
    gw: Gateway,
) -> None:
    # The attacker holds the RA secret and sends the victim's transactionID first.
    attacker = Device("attacker-x", key=fresh_key())
    victim = Device("victim-x", key=fresh_key())
    assert (await _send(gw, attacker, "tx-shared")).status is PkiStatus.PENDING
    # The victim's PKCSReq is not a resend of the attacker's: it is a request of its own.
    assert (await _send(gw, victim, "tx-shared")).status is PkiStatus.PENDING
    assert len(await gw.services.store.list_pending(status=PendingStatus.PENDING)) == 2
    await _approve_all(gw)
    mine = await _poll(gw, victim, "tx-shared")
    assert mine.status is PkiStatus.SUCCESS, mine.fail_info_text
    assert mine.certificates[0].public_key() == victim.key.public_key()
    theirs = await _poll(gw, attacker, "tx-shared")
    assert theirs.status is PkiStatus.SUCCESS, theirs.fail_info_text
    assert theirs.certificates[0].public_key() == attacker.key.public_key()


async def test_a_resend_with_another_key_is_not_the_pending_request(gw: Gateway) -> None:
    owner = Device("resent-1", key=fresh_key())
    intruder = Device("resent-1", key=fresh_key())
    assert (await _send(gw, owner, "tx-resent")).status is PkiStatus.PENDING
    # The same key again (a resync, RFC 8894 5.2): the same request.
    assert (await _send(gw, owner, "tx-resent")).status is PkiStatus.PENDING
    refused = await _send(gw, intruder, "tx-resent")
    assert refused.fail_info == FailInfo.BAD_REQUEST
    assert refused.fail_info_text == "another request for this end entity is waiting for approval"
    (pending,) = await gw.services.store.list_pending(status=PendingStatus.PENDING)
    await _approve_all(gw)
    issued = await _poll(gw, owner, "tx-resent")
    assert issued.certificates[0].public_key() == owner.key.public_key()
    assert pending.transaction_id == "tx-resent"


async def test_thirty_transactions_for_one_name_give_one_pending_request(gw: Gateway) -> None:
    device = Device("many-tids", key=fresh_key())
    replies = [await _send(gw, device, f"tx-many-{i}") for i in range(30)]
    assert all(r.status is PkiStatus.PENDING for r in replies)
    (pending,) = await gw.services.store.list_pending(status=PendingStatus.PENDING)
    assert pending.transaction_id == "tx-many-0"
    # Thirty other keys under that name are refused, not queued.
    others = await asyncio.gather(
        *(_send(gw, Device("many-tids", key=fresh_key()), f"tx-other-{i}") for i in range(3))
    )
    assert {(r.fail_info, r.fail_info_text) for r in others} == {
        (FailInfo.BAD_REQUEST, "another request for this end entity is waiting for approval")
    }
    assert len(await gw.services.store.list_pending()) == 1
    # Each of the thirty was answered PENDING, so the device may poll under any of them: the
    # key finds its request (before and after the decision), not the transactionID.
    assert (await _poll(gw, device, "tx-many-29")).status is PkiStatus.PENDING
    await _approve_all(gw)
    for tid in ("tx-many-29", "tx-many-0"):
        issued = await _poll(gw, device, tid)
        assert issued.status is PkiStatus.SUCCESS, issued.fail_info_text
        assert issued.certificates[0].public_key() == device.key.public_key()


async def test_an_alias_holds_at_most_max_pending_open_requests(capped: Gateway) -> None:
    gw = capped
    devices = [Device(f"capped-{i}", key=fresh_key()) for i in range(5)]
    replies = await asyncio.gather(
        *(_send(gw, d, f"tx-cap-{i}", "ra-capped") for i, d in enumerate(devices))
    )
    statuses = [r.status for r in replies]
    assert statuses.count(PkiStatus.PENDING) == 3, [r.fail_info_text for r in replies]
    refused = [r for r in replies if r.status is not PkiStatus.PENDING]
    assert {(r.fail_info, r.fail_info_text) for r in refused} == {
        (FailInfo.BAD_REQUEST, "too many pending requests")
    }
    assert len(await gw.services.store.list_pending(status=PendingStatus.PENDING)) == 3
    # Another alias has its own cap.
    assert (await _send(gw, Device("uncapped", key=fresh_key()), "tx-u")).status is (
        PkiStatus.PENDING
    )
    # A decision frees a place.
    first = (await gw.services.store.list_pending(status=PendingStatus.PENDING))[0]
    await gw.services.store.decide_pending(
        first.id or 0, approve=False, reason=None, now=first.created_at
    )
    late = devices[[r.status for r in replies].index(PkiStatus.FAILURE)]
    assert (await _send(gw, late, "tx-cap-late", "ra-capped")).status is PkiStatus.PENDING


# One end-to-end case against a real `scep-gateway serve`.


@pytest.fixture(scope="module")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("poll-binding")
    config = copy_config(tmp)
    (config / "aliases" / "ra-approve.yaml").write_text(
        "mode: ra\nca: ManagementCA\nra: {secret: {file: ra-demo.secret, generate: true}}\n"
        "approval: {required: true}\n"
    )
    process, server = start_server(tmp, config_dir=config)
    try:
        yield server
    finally:
        stop_server(process)


def _post(server: Server, body: bytes) -> bytes:
    request = urllib.request.Request(
        server.url("ra-approve") + "?operation=PKIOperation", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        data: bytes = response.read()
        return data


def _ca(server: Server) -> x509.Certificate:
    url = server.url("ra-approve") + "?operation=GetCACert"
    with urllib.request.urlopen(url, timeout=30) as response:
        return x509.load_der_x509_certificate(response.read())


@pytest.mark.interop
def test_a_real_server_answers_a_foreign_poll_as_an_unknown_transaction(
    real_server: Server,
) -> None:
    secret = (real_server.data_dir / "ra-demo.secret").read_text().strip()
    ca = _ca(real_server)
    victim = Device("real-victim", key=fresh_key())
    attacker = Device("real-victim", key=fresh_key())
    sent = victim.read(
        _post(real_server, victim.pkcsreq(secret, [ca], transaction_id="tx-real-victim"))
    )
    assert sent.status is PkiStatus.PENDING, sent.fail_info_text
    unknown = attacker.read(
        _post(real_server, _poll_body(attacker, ca.subject, [ca], "tx-real-never"))
    )
    foreign = attacker.read(
        _post(real_server, _poll_body(attacker, ca.subject, [ca], "tx-real-victim"))
    )
    _same_as_unknown(foreign, unknown)
    own = victim.read(_post(real_server, _poll_body(victim, ca.subject, [ca], "tx-real-victim")))
    assert own.status is PkiStatus.PENDING
