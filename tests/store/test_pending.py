"""Pending requests: add, find (transactionID without case), decide, expire, find approved."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.store import (
    InvalidRecord,
    NoSuchPending,
    PendingExists,
    PendingNotDecidable,
    PendingRequest,
    PendingStatus,
    Store,
    StoreError,
)

from .helpers import ALIAS, T0, make_certificate, make_pending

HOUR = timedelta(hours=1)


async def add(store: Store, request: PendingRequest) -> PendingRequest:
    added = await store.add_pending(request)
    assert added.id is not None
    return added


def id_of(request: PendingRequest) -> int:
    assert request.id is not None
    return request.id


async def test_add_returns_it_with_an_id_and_get_returns_it(store: Store) -> None:
    request = make_pending("tx-1")
    added = await store.add_pending(request)
    assert added == replace(request, id=added.id)
    assert isinstance(added.id, int)
    assert await store.get_pending(id_of(added)) == added

    second = await store.add_pending(make_pending("tx-2"))
    assert id_of(second) != id_of(added)
    assert await store.get_pending(id_of(second)) == second
    assert await store.get_pending(id_of(second) + 1000) is None
    for impossible in (0, -1, 1 << 70):
        assert await store.get_pending(impossible) is None


async def test_every_field_round_trips(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    request = PendingRequest(
        alias="ra",
        ca="other-ca",
        transaction_id="3F2A9C" * 10,
        username=None,
        subject_dn="CN=Zoë,O=Ex\\,ample",
        csr_der=bytes(range(256)),
        decision='{"subject": "CN=Zo\\u00eb", "sans": []}',
        status=PendingStatus.APPROVED,
        created_at=datetime(2025, 6, 1, 14, 0, 0, 123456, tzinfo=plus_two),
        expires_at=datetime(2025, 6, 2, 14, 0, 0, 654321, tzinfo=UTC),
        reason="looked fine",
        decided_at=datetime(2025, 6, 1, 13, 0, 0, 1, tzinfo=UTC),
        issued_serial=(1 << 159) + 5,
    )
    added = await store.add_pending(request)
    got = await store.get_pending(id_of(added))
    assert got == added
    assert got is not None
    assert got.status is PendingStatus.APPROVED
    assert got.created_at.tzinfo is UTC
    assert got.created_at.hour == 12
    assert isinstance(got.csr_der, bytes)


async def test_a_new_request_must_not_carry_an_id(store: Store) -> None:
    with pytest.raises(InvalidRecord):
        await store.add_pending(replace(make_pending(), id=5))
    assert await store.list_pending() == []


async def test_duplicate_transaction_on_an_alias_raises_pending_exists(store: Store) -> None:
    first = await add(store, make_pending("tx-1", username="first"))
    with pytest.raises(PendingExists) as caught:
        await store.add_pending(make_pending("tx-1", username="second"))
    assert (caught.value.alias, caught.value.transaction_id) == (ALIAS, "tx-1")
    assert isinstance(caught.value, StoreError)
    assert "tx-1" in caught.value.detail
    assert await store.list_pending() == [first]

    # The same transactionID on another alias is another request.
    other = await add(store, make_pending("tx-1", alias="other-alias"))
    assert await store.list_pending() == [first, other]


async def test_find_pending_ignores_the_case_of_the_transaction_id(store: Store) -> None:
    added = await add(store, make_pending("AbCdEf0123"))
    for asked in ("AbCdEf0123", "abcdef0123", "ABCDEF0123", "aBcDeF0123"):
        assert await store.find_pending(ALIAS, asked) == added, asked
    assert await store.find_pending(ALIAS, "abcdef012") is None
    assert await store.find_pending("other-alias", "abcdef0123") is None


async def test_find_pending_prefers_the_exact_case(store: Store) -> None:
    # The uniqueness is exact: two transactionIDs may differ only in case.
    upper = await add(store, make_pending("TX-CASE", username="upper"))
    lower = await add(store, make_pending("tx-case", username="lower"))
    assert await store.find_pending(ALIAS, "TX-CASE") == upper
    assert await store.find_pending(ALIAS, "tx-case") == lower
    # Neither matches exactly: the older one.
    assert await store.find_pending(ALIAS, "Tx-Case") == upper


async def test_approve_sets_status_reason_and_time(store: Store) -> None:
    added = await add(store, make_pending())
    now = T0 + HOUR
    decided = await store.decide_pending(id_of(added), approve=True, reason="known device", now=now)
    assert decided == replace(
        added, status=PendingStatus.APPROVED, reason="known device", decided_at=now
    )
    assert await store.get_pending(id_of(added)) == decided


async def test_reject_without_a_reason(store: Store) -> None:
    added = await add(store, make_pending())
    now = (T0 + HOUR).astimezone(timezone(timedelta(hours=-7)))
    decided = await store.decide_pending(id_of(added), approve=False, reason=None, now=now)
    assert (decided.status, decided.reason, decided.decided_at) == (
        PendingStatus.REJECTED,
        None,
        T0 + HOUR,
    )
    assert decided.decided_at is not None
    assert decided.decided_at.tzinfo is UTC
    assert await store.get_pending(id_of(added)) == decided


async def test_a_decided_request_cannot_be_decided_again(store: Store) -> None:
    added = await add(store, make_pending())
    decided = await store.decide_pending(id_of(added), approve=False, reason="no", now=T0)
    for approve in (True, False):
        with pytest.raises(PendingNotDecidable) as caught:
            await store.decide_pending(id_of(added), approve=approve, reason="yes", now=T0 + HOUR)
        assert (caught.value.id, caught.value.status) == (added.id, "rejected")
        assert isinstance(caught.value, StoreError)
    assert await store.get_pending(id_of(added)) == decided


async def test_issued_requests_cannot_be_decided(store: Store) -> None:
    added = await add(store, make_pending())
    await store.decide_pending(id_of(added), approve=True, reason=None, now=T0)
    await store.record_issuance(make_certificate(9), complete_pending=id_of(added))
    with pytest.raises(PendingNotDecidable) as caught:
        await store.decide_pending(id_of(added), approve=False, reason=None, now=T0)
    assert caught.value.status == "issued"


async def test_deciding_an_unknown_request_raises_no_such_pending(store: Store) -> None:
    await add(store, make_pending())
    for unknown in (12345, 0, -3):
        with pytest.raises(NoSuchPending) as caught:
            await store.decide_pending(unknown, approve=True, reason=None, now=T0)
        assert caught.value.id == unknown
        assert isinstance(caught.value, StoreError)


@pytest.mark.parametrize("after", [timedelta(0), timedelta(microseconds=1), timedelta(days=9)])
async def test_past_expiry_a_request_expires_instead_of_being_decided(
    store: Store, after: timedelta
) -> None:
    added = await add(store, make_pending(lifetime=HOUR))
    now = added.expires_at + after
    with pytest.raises(PendingNotDecidable) as caught:
        await store.decide_pending(id_of(added), approve=True, reason="late", now=now)
    assert (caught.value.id, caught.value.status) == (added.id, "expired")
    # The expiry was committed though the call raised.
    expired = replace(added, status=PendingStatus.EXPIRED)
    assert await store.get_pending(id_of(added)) == expired
    with pytest.raises(PendingNotDecidable) as caught:
        await store.decide_pending(id_of(added), approve=False, reason=None, now=added.created_at)
    assert caught.value.status == "expired"
    assert await store.get_pending(id_of(added)) == expired


async def test_just_before_expiry_a_request_can_be_decided(store: Store) -> None:
    added = await add(store, make_pending(lifetime=HOUR))
    now = added.expires_at - timedelta(microseconds=1)
    decided = await store.decide_pending(id_of(added), approve=True, reason=None, now=now)
    assert decided.status is PendingStatus.APPROVED


async def test_decide_refuses_naive_times_and_bad_reasons(store: Store) -> None:
    added = await add(store, make_pending())
    with pytest.raises(InvalidRecord):
        await store.decide_pending(
            id_of(added), approve=True, reason=None, now=datetime(2025, 1, 1)
        )
    with pytest.raises(InvalidRecord):
        await store.decide_pending(id_of(added), approve=True, reason=b"x", now=T0)  # type: ignore[arg-type]
    assert await store.get_pending(id_of(added)) == added


async def test_concurrent_decisions_let_exactly_one_win(database_url: str) -> None:
    async with await Store.open(database_url) as one, await Store.open(database_url) as two:
        added = await add(one, make_pending())
        outcomes = await asyncio.gather(
            *(
                (one, two)[i % 2].decide_pending(
                    id_of(added), approve=i % 3 != 0, reason=f"operator {i}", now=T0 + HOUR
                )
                for i in range(10)
            ),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if isinstance(o, PendingRequest)]
        losers = [o for o in outcomes if not isinstance(o, PendingRequest)]
        assert len(winners) == 1
        assert len(losers) == 9
        assert all(isinstance(loser, PendingNotDecidable) for loser in losers), losers
        (winner,) = winners
        assert {loser.status for loser in losers if isinstance(loser, PendingNotDecidable)} == {
            winner.status.value
        }
        assert await two.get_pending(id_of(added)) == winner


async def test_expire_pending_marks_only_pending_requests_past_expiry(store: Store) -> None:
    now = T0 + 10 * HOUR
    due = await add(store, make_pending("due", lifetime=9 * HOUR))
    at_now = await add(store, make_pending("at-now", lifetime=10 * HOUR))
    not_yet = await add(store, make_pending("not-yet", lifetime=10 * HOUR + timedelta(seconds=1)))
    approved = await add(store, make_pending("approved", lifetime=HOUR))
    approved = await store.decide_pending(id_of(approved), approve=True, reason=None, now=T0)
    rejected = await add(store, make_pending("rejected", lifetime=HOUR))
    rejected = await store.decide_pending(id_of(rejected), approve=False, reason=None, now=T0)

    assert await store.expire_pending(now) == 2
    assert await store.get_pending(id_of(due)) == replace(due, status=PendingStatus.EXPIRED)
    assert await store.get_pending(id_of(at_now)) == replace(at_now, status=PendingStatus.EXPIRED)
    assert await store.get_pending(id_of(not_yet)) == not_yet
    assert await store.get_pending(id_of(approved)) == approved
    assert await store.get_pending(id_of(rejected)) == rejected

    assert await store.expire_pending(now) == 0
    assert await store.expire_pending(now + HOUR) == 1
    with pytest.raises(InvalidRecord):
        await store.expire_pending(datetime(2025, 1, 1))


async def test_list_pending_is_ordered_and_filtered_by_status(store: Store) -> None:
    assert await store.list_pending() == []
    late = await add(store, make_pending("late", created_at=T0 + HOUR))
    early = await add(store, make_pending("early", created_at=T0 - HOUR))
    same_a = await add(store, make_pending("same-a"))
    same_b = await add(store, make_pending("same-b"))
    rejected = await store.decide_pending(id_of(same_a), approve=False, reason=None, now=T0)

    assert await store.list_pending() == [early, rejected, same_b, late]
    assert await store.list_pending(status=PendingStatus.PENDING) == [early, same_b, late]
    assert await store.list_pending(status=PendingStatus.REJECTED) == [rejected]
    assert await store.list_pending(status=PendingStatus.ISSUED) == []
    assert await store.list_pending(status="rejected") == [rejected]  # type: ignore[arg-type]
    with pytest.raises(InvalidRecord):
        await store.list_pending(status="waiting")  # type: ignore[arg-type]


async def test_find_approved_is_the_newest_approved_not_issued(store: Store) -> None:
    assert await store.find_approved(ALIAS, "device-1") is None

    async def approved(
        tx: str, created: datetime, *, alias: str = ALIAS, username: str = "device-1"
    ) -> PendingRequest:
        request = make_pending(tx, created_at=created, alias=alias, username=username)
        added = await add(store, request)
        return await store.decide_pending(id_of(added), approve=True, reason=None, now=created)

    older = await approved("older", T0)
    newer = await approved("newer", T0 + HOUR)
    await approved("other-alias", T0 + 2 * HOUR, alias="other")
    await approved("other-entity", T0 + 2 * HOUR, username="device-2")
    still_pending = await add(store, make_pending("pending", created_at=T0 + 3 * HOUR))
    rejected = await add(store, make_pending("rejected", created_at=T0 + 3 * HOUR))
    await store.decide_pending(id_of(rejected), approve=False, reason=None, now=T0)

    assert await store.find_approved(ALIAS, "device-1") == newer
    await store.record_issuance(make_certificate(1), complete_pending=id_of(newer))
    assert await store.find_approved(ALIAS, "device-1") == older
    await store.record_issuance(make_certificate(2), complete_pending=id_of(older))
    assert await store.find_approved(ALIAS, "device-1") is None
    stored = await store.get_pending(id_of(still_pending))
    assert stored is not None
    assert stored.status is PendingStatus.PENDING
    assert await store.find_approved(ALIAS, "device-3") is None
    other = await store.find_approved("other", "device-1")
    assert other is not None
    assert other.transaction_id == "other-alias"


def test_pending_requests_check_themselves() -> None:
    good = make_pending()
    assert replace(good, status="approved").status is PendingStatus.APPROVED  # type: ignore[arg-type]
    bad_changes: list[dict[str, object]] = [
        {"status": "waiting"},
        {"created_at": datetime(2025, 1, 1)},
        {"expires_at": datetime(2025, 1, 1)},
        {"decided_at": datetime(2025, 1, 1)},
        {"issued_serial": 0},
        {"issued_serial": 1 << 160},
        {"id": 0},
        {"id": True},
        {"csr_der": "text"},
        {"decision": None},
        {"username": 5},
        {"reason": b"bytes"},
    ]
    for change in bad_changes:
        with pytest.raises(InvalidRecord):
            replace(good, **change)  # type: ignore[arg-type]
