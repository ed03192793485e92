"""record_issuance in RA mode: the end entity upserted, the approved pending request completed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta

import pytest

from gateway.store import (
    EndEntity,
    EntityExists,
    EntityStatus,
    ExpectLatest,
    InvalidRecord,
    LatestCertificateChanged,
    PendingNotApproved,
    PendingRequest,
    PendingStatus,
    SerialCollision,
    Store,
    StoreError,
)

from .helpers import T0, make_certificate, make_entity, make_pending

LATER = T0 + timedelta(days=30, microseconds=3)


def ra_entity(
    username: str = "ra-1",
    *,
    subject_dn: str | None = None,
    ca: str = "main-ca",
    at: timedelta = timedelta(0),
) -> EndEntity:
    return EndEntity(
        username=username,
        code_hash="ra$no-code",
        subject_dn=subject_dn or f"CN={username},O=Example",
        ca=ca,
        status=EntityStatus.GENERATED,
        created_at=T0 + at,
        updated_at=T0 + at,
    )


async def approved(store: Store, transaction_id: str = "tx-1") -> PendingRequest:
    added = await store.add_pending(make_pending(transaction_id, username="ra-1"))
    assert added.id is not None
    return await store.decide_pending(added.id, approve=True, reason="ok", now=T0)


async def test_upsert_inserts_a_new_entity_with_the_certificate(store: Store) -> None:
    entity = ra_entity()
    cert = make_certificate(0x51, username="ra-1")
    await store.record_issuance(cert, upsert_entity=entity)
    assert await store.get_end_entity("ra-1") == entity
    assert await store.list_certificates(username="ra-1") == [cert]


async def test_upsert_updates_an_existing_entity_and_keeps_created_at(store: Store) -> None:
    await store.add_end_entity(make_entity("ra-1", status=EntityStatus.NEW, code_hash="ra$x"))
    await store.add_end_entity(make_entity("bystander"))
    upsert = EndEntity(
        username="ra-1",
        code_hash="ra$x",
        subject_dn="CN=ra-1,OU=Moved,O=Example",
        ca="other-ca",
        status=EntityStatus.FAILED,
        created_at=LATER,  # not taken: the entity was created at T0
        updated_at=LATER,
    )
    await store.record_issuance(
        make_certificate(0x52, username="ra-1", ca="other-ca"), upsert_entity=upsert
    )
    assert await store.get_end_entity("ra-1") == replace(upsert, created_at=T0)
    assert await store.get_end_entity("bystander") == make_entity("bystander")

    # And once more: every field but created_at follows the latest upsert.
    again = replace(upsert, subject_dn="CN=ra-1", status=EntityStatus.GENERATED)
    again = replace(again, updated_at=LATER + timedelta(days=1))
    await store.record_issuance(
        make_certificate(0x53, username="ra-1", ca="other-ca"), upsert_entity=again
    )
    assert await store.get_end_entity("ra-1") == replace(again, created_at=T0)
    assert [c.serial for c in await store.list_certificates(username="ra-1")] == [0x52, 0x53]


async def test_claim_and_upsert_together_are_refused(store: Store) -> None:
    await store.add_end_entity(make_entity("ra-1"))
    with pytest.raises(InvalidRecord):
        await store.record_issuance(
            make_certificate(1, username="ra-1"), claim_entity="ra-1", upsert_entity=ra_entity()
        )
    assert await store.get_end_entity("ra-1") == make_entity("ra-1")
    assert await store.count_certificates() == 0


async def test_upsert_never_takes_over_a_registered_entity(store: Store) -> None:
    """RA mode must not overwrite an end entity an operator registered with a code."""
    await store.add_end_entity(make_entity("router1"))
    with pytest.raises(EntityExists):
        await store.record_issuance(
            make_certificate(0x77, username="router1"),
            upsert_entity=ra_entity("router1", subject_dn="CN=router1,O=Evil"),
        )
    assert await store.get_end_entity("router1") == make_entity("router1")
    assert await store.count_certificates() == 0


async def test_serial_collision_rolls_back_the_upsert(store: Store) -> None:
    await store.record_issuance(make_certificate(0xC0FFEE, username=None))
    await store.add_end_entity(make_entity("known", code_hash="ra$no-code"))

    with pytest.raises(SerialCollision):
        await store.record_issuance(
            make_certificate(0xC0FFEE, username="ra-1"), upsert_entity=ra_entity("ra-1")
        )
    with pytest.raises(SerialCollision):
        await store.record_issuance(
            make_certificate(0xC0FFEE, username="known"),
            upsert_entity=ra_entity("known", subject_dn="CN=changed", at=timedelta(days=1)),
        )
    assert await store.get_end_entity("ra-1") is None
    assert await store.get_end_entity("known") == make_entity("known", code_hash="ra$no-code")
    assert await store.count_certificates() == 1


async def test_concurrent_upserts_of_a_new_username_make_one_entity(database_url: str) -> None:
    """Replicas issuing to the same new end entity at once: no unique violation escapes."""
    async with await Store.open(database_url) as one, await Store.open(database_url) as two:
        stores = [one, two]
        upserts = [
            ra_entity("ra-new", subject_dn=f"CN=ra-new,OU={i}", at=timedelta(seconds=i))
            for i in range(10)
        ]
        serials = list(range(0x100, 0x10A))
        await asyncio.gather(
            *(
                stores[i % 2].record_issuance(
                    make_certificate(serial, username="ra-new"), upsert_entity=upsert
                )
                for i, (serial, upsert) in enumerate(zip(serials, upserts, strict=True))
            )
        )
        entities = await one.list_end_entities()
        assert [e.username for e in entities] == ["ra-new"]
        (entity,) = entities
        # The first insert's created_at stays; the rest is the last update's (any order).
        assert entity.created_at in {u.created_at for u in upserts}
        assert any(
            (entity.subject_dn, entity.updated_at) == (u.subject_dn, u.updated_at) for u in upserts
        )
        listed = await two.list_certificates(username="ra-new")
        assert sorted(c.serial for c in listed) == serials


async def test_concurrent_first_issuances_to_one_entity_issue_once(database_url: str) -> None:
    """Two replicas, ten requests for one new end entity that expect no valid certificate:
    exactly one is recorded, the others get LatestCertificateChanged."""
    async with await Store.open(database_url) as one, await Store.open(database_url) as two:
        stores = [one, two]
        results = await asyncio.gather(
            *(
                stores[i % 2].record_issuance(
                    make_certificate(0x200 + i, username="ra-once"),
                    upsert_entity=ra_entity("ra-once"),
                    expect_latest=ExpectLatest(None, T0),
                )
                for i in range(10)
            ),
            return_exceptions=True,
        )
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, LatestCertificateChanged) for r in results if r is not None)
        assert len(await one.list_certificates(username="ra-once")) == 1


async def test_concurrent_renewals_of_one_certificate_renew_once(database_url: str) -> None:
    """CA mode's shape (a registered entity, no upsert): the entity row is the lock."""
    async with await Store.open(database_url) as one, await Store.open(database_url) as two:
        await one.add_end_entity(make_entity("renewer", status=EntityStatus.GENERATED))
        await one.record_issuance(make_certificate(0x300, username="renewer"))
        stores = [one, two]
        results = await asyncio.gather(
            *(
                stores[i % 2].record_issuance(
                    make_certificate(0x301 + i, username="renewer", issued_at=LATER),
                    expect_latest=ExpectLatest(0x300, LATER),
                )
                for i in range(6)
            ),
            return_exceptions=True,
        )
        assert sum(r is None for r in results) == 1
        assert all(isinstance(r, LatestCertificateChanged) for r in results if r is not None)
        assert len(await two.list_certificates(username="renewer")) == 2


async def test_complete_pending_marks_it_issued_with_the_serial(store: Store) -> None:
    pending = await approved(store)
    assert pending.id is not None
    cert = make_certificate(0xBEEF, username="ra-1")
    await store.record_issuance(cert, upsert_entity=ra_entity(), complete_pending=pending.id)

    done = await store.get_pending(pending.id)
    assert done == replace(pending, status=PendingStatus.ISSUED, issued_serial=0xBEEF)
    assert await store.get_certificate(cert.ca, 0xBEEF) == cert
    assert await store.get_end_entity("ra-1") == ra_entity()
    assert await store.find_approved(pending.alias, "ra-1") is None


async def test_complete_pending_works_with_a_claim_too(store: Store) -> None:
    await store.add_end_entity(make_entity("ra-1"))
    pending = await approved(store)
    assert pending.id is not None
    await store.record_issuance(
        make_certificate(7, username="ra-1"), claim_entity="ra-1", complete_pending=pending.id
    )
    entity = await store.get_end_entity("ra-1")
    assert entity is not None
    assert entity.status is EntityStatus.GENERATED
    done = await store.get_pending(pending.id)
    assert done is not None
    assert (done.status, done.issued_serial) == (PendingStatus.ISSUED, 7)


@pytest.mark.parametrize(
    ("decision", "status"),
    [(None, "pending"), (False, "rejected")],
)
async def test_completing_an_unapproved_request_writes_nothing(
    store: Store, decision: bool | None, status: str
) -> None:
    await store.add_end_entity(make_entity("claimed"))
    pending = await store.add_pending(make_pending(username="ra-1"))
    assert pending.id is not None
    pending_id = pending.id
    if decision is not None:
        pending = await store.decide_pending(pending_id, approve=decision, reason="no", now=T0)

    attempts: list[Callable[[], Awaitable[None]]] = [
        lambda: store.record_issuance(
            make_certificate(0x99, username="ra-1"),
            upsert_entity=ra_entity(),
            complete_pending=pending_id,
        ),
        lambda: store.record_issuance(
            make_certificate(0x99, username="claimed"),
            claim_entity="claimed",
            complete_pending=pending_id,
        ),
    ]
    for attempt in attempts:
        with pytest.raises(PendingNotApproved) as caught:
            await attempt()
        assert (caught.value.id, caught.value.status) == (pending_id, status)
        assert isinstance(caught.value, StoreError)
        assert str(pending_id) in caught.value.detail

    assert await store.count_certificates() == 0
    assert await store.get_end_entity("ra-1") is None
    assert await store.get_end_entity("claimed") == make_entity("claimed")
    assert await store.get_pending(pending_id) == pending


async def test_completing_twice_or_an_unknown_request_is_refused(store: Store) -> None:
    pending = await approved(store)
    assert pending.id is not None
    await store.record_issuance(make_certificate(1, username="ra-1"), complete_pending=pending.id)

    with pytest.raises(PendingNotApproved) as caught:
        await store.record_issuance(
            make_certificate(2, username="ra-1"), complete_pending=pending.id
        )
    assert caught.value.status == "issued"
    for unknown in (pending.id + 1000, 0, -1):
        with pytest.raises(PendingNotApproved) as caught:
            await store.record_issuance(
                make_certificate(3, username="ra-1"), complete_pending=unknown
            )
        assert (caught.value.id, caught.value.status) == (unknown, None)
    assert [c.serial for c in await store.list_certificates()] == [1]
    done = await store.get_pending(pending.id)
    assert done is not None
    assert done.issued_serial == 1


async def test_serial_collision_leaves_the_request_approved(store: Store) -> None:
    await store.record_issuance(make_certificate(0x77, username=None))
    pending = await approved(store)
    assert pending.id is not None
    with pytest.raises(SerialCollision):
        await store.record_issuance(
            make_certificate(0x77, username="ra-1"),
            upsert_entity=ra_entity(),
            complete_pending=pending.id,
        )
    assert await store.get_pending(pending.id) == pending
    assert await store.find_approved(pending.alias, "ra-1") == pending
    assert await store.get_end_entity("ra-1") is None

    await store.record_issuance(
        make_certificate(0x78, username="ra-1"),
        upsert_entity=ra_entity(),
        complete_pending=pending.id,
    )
    done = await store.get_pending(pending.id)
    assert done is not None
    assert (done.status, done.issued_serial) == (PendingStatus.ISSUED, 0x78)


async def test_concurrent_completions_of_one_request_let_exactly_one_win(store: Store) -> None:
    pending = await approved(store)
    assert pending.id is not None
    serials = list(range(0x200, 0x20A))
    outcomes = await asyncio.gather(
        *(
            store.record_issuance(
                make_certificate(s, username="ra-1"),
                upsert_entity=ra_entity(),
                complete_pending=pending.id,
            )
            for s in serials
        ),
        return_exceptions=True,
    )
    winners = [s for s, outcome in zip(serials, outcomes, strict=True) if outcome is None]
    losers = [outcome for outcome in outcomes if outcome is not None]
    assert len(winners) == 1
    assert all(isinstance(loser, PendingNotApproved) for loser in losers), losers
    assert [c.serial for c in await store.list_certificates()] == winners
    done = await store.get_pending(pending.id)
    assert done is not None
    assert (done.status, done.issued_serial) == (PendingStatus.ISSUED, winners[0])
