"""CA mode semantics beyond the checklist: one enrollment per code, also under concurrency."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import FailInfo
from gateway.scep.messages import PkiStatus
from tests.conftest import Gateway, body_of
from tests.support import Device, register

pytestmark = pytest.mark.asyncio


async def test_concurrent_requests_with_one_code_issue_once(gateway: Gateway) -> None:
    await register(gateway.services.store, "racer", "one-code")
    devices = [Device("racer") for _ in range(6)]
    bodies = [
        d.pkcsreq("one-code", gateway.recipients(), transaction_id=f"t{i}")
        for i, d in enumerate(devices)
    ]
    answers = await asyncio.gather(*(gateway.pki(b) for b in bodies))
    replies = [d.read(a) for d, a in zip(devices, answers, strict=True)]
    assert [r.status for r in replies].count(PkiStatus.SUCCESS) == 1
    refused = [r for r in replies if r.status is PkiStatus.FAILURE]
    assert len(refused) == 5
    assert {r.fail_info for r in refused} == {FailInfo.BAD_REQUEST}
    assert await gateway.services.store.count_certificates() == 1


async def test_unknown_user_and_wrong_code_look_the_same(gateway: Gateway) -> None:
    await register(gateway.services.store, "known", "the-code")
    known = Device("known").pkcsreq("wrong", gateway.recipients())
    unknown = Device("unknown").pkcsreq("wrong", gateway.recipients())
    a = Device("known").read(await gateway.pki(known))
    b = Device("unknown").read(await gateway.pki(unknown))
    assert (a.fail_info, a.fail_info_text) == (b.fail_info, b.fail_info_text)
    assert a.fail_info_text == "authentication failed"


async def test_empty_challenge_never_authenticates(gateway: Gateway) -> None:
    await register(gateway.services.store, "empty", "")
    device = Device("empty")
    reply = device.read(await gateway.pki(device.pkcsreq("", gateway.recipients())))
    assert reply.fail_info == FailInfo.BAD_REQUEST


async def test_entity_of_another_ca_is_refused(gateway: Gateway) -> None:
    await register(gateway.services.store, "elsewhere-ca", "code", ca="OtherCA")
    device = Device("elsewhere-ca")
    reply = device.read(await gateway.pki(device.pkcsreq("code", gateway.recipients())))
    assert reply.fail_info == FailInfo.BAD_REQUEST
    assert reply.fail_info_text == "the end entity is not registered for this CA"


async def test_database_down_is_503_not_500(gateway: Gateway) -> None:
    await gateway.services.store.close()
    device = Device("down")
    response = await gateway.client.post(
        "/scep/scep/pkiclient.exe", data=device.pkcsreq("x", gateway.recipients())
    )
    assert response.status_code == 503
    assert await body_of(response) == b"service unavailable\n"
    ready = await gateway.client.get("/readyz")
    assert ready.status_code == 503
