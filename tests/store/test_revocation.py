"""Revoking certificates, the revoked list of a CA, and certificate look-ups for the CLI."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from gateway.store import (
    REVOCATION_REASONS,
    AlreadyRevoked,
    CertificateRecord,
    InvalidRecord,
    NoSuchCertificate,
    Store,
    StoreError,
)

from .helpers import CA, T0, make_certificate, raw_engine

REVOKED_AT = T0 + timedelta(days=10, microseconds=42)


async def test_revoke_returns_and_stores_the_revoked_record(store: Store) -> None:
    cert = make_certificate(0xABC)
    other = make_certificate(0xABD)
    await store.record_issuance(cert)
    await store.record_issuance(other)
    plus_one = timezone(timedelta(hours=1))
    at = REVOKED_AT.astimezone(plus_one)

    revoked = await store.revoke_certificate(CA, 0xABC, "keyCompromise", at)

    assert revoked == replace(cert, revoked_at=REVOKED_AT, revocation_reason="keyCompromise")
    assert revoked.revoked_at is not None
    assert revoked.revoked_at.tzinfo is UTC
    assert await store.get_certificate(CA, 0xABC) == revoked
    assert await store.get_certificate(CA, 0xABD) == other


@pytest.mark.parametrize("reason", sorted(REVOCATION_REASONS))
async def test_every_rfc5280_reason_is_accepted(store: Store, reason: str) -> None:
    await store.record_issuance(make_certificate(5))
    revoked = await store.revoke_certificate(CA, 5, reason, REVOKED_AT)
    assert revoked.revocation_reason == reason


def test_the_reasons_are_the_rfc5280_names() -> None:
    assert len(REVOCATION_REASONS) == 10
    assert {"keyCompromise", "cACompromise", "aACompromise", "removeFromCRL"} <= REVOCATION_REASONS


@pytest.mark.parametrize(
    "reason", ["keycompromise", "KeyCompromise", "", "revoked", "1", " superseded"]
)
async def test_unknown_reasons_are_refused(store: Store, reason: str) -> None:
    cert = make_certificate(5)
    await store.record_issuance(cert)
    with pytest.raises(InvalidRecord):
        await store.revoke_certificate(CA, 5, reason, REVOKED_AT)
    assert await store.get_certificate(CA, 5) == cert


async def test_revoke_with_a_naive_time_is_refused(store: Store) -> None:
    cert = make_certificate(5)
    await store.record_issuance(cert)
    with pytest.raises(InvalidRecord):
        await store.revoke_certificate(CA, 5, "superseded", datetime(2025, 1, 1))
    assert await store.get_certificate(CA, 5) == cert


async def test_revoking_twice_raises_already_revoked_and_keeps_the_first(store: Store) -> None:
    await store.record_issuance(make_certificate(0x10))
    first = await store.revoke_certificate(CA, 0x10, "superseded", REVOKED_AT)

    with pytest.raises(AlreadyRevoked) as caught:
        await store.revoke_certificate(CA, 0x10, "keyCompromise", REVOKED_AT + timedelta(days=1))
    assert (caught.value.ca, caught.value.serial) == (CA, 0x10)
    assert isinstance(caught.value, StoreError)
    assert "0x10" in caught.value.detail
    assert await store.get_certificate(CA, 0x10) == first


async def test_recorded_as_revoked_counts_as_revoked(store: Store) -> None:
    cert = replace(make_certificate(0x11), revoked_at=T0, revocation_reason="unspecified")
    await store.record_issuance(cert)
    with pytest.raises(AlreadyRevoked):
        await store.revoke_certificate(CA, 0x11, "keyCompromise", REVOKED_AT)
    assert await store.get_certificate(CA, 0x11) == cert


async def test_unknown_certificates_raise_no_such_certificate(store: Store) -> None:
    await store.record_issuance(make_certificate(0x20, ca="ca-one"))
    for ca, serial in (("ca-one", 0x21), ("ca-two", 0x20), ("ca-one", 0), ("ca-one", 1 << 160)):
        with pytest.raises(NoSuchCertificate) as caught:
            await store.revoke_certificate(ca, serial, "superseded", REVOKED_AT)
        assert (caught.value.ca, caught.value.serial) == (ca, serial)
        assert isinstance(caught.value, StoreError)
    got = await store.get_certificate("ca-one", 0x20)
    assert got is not None
    assert got.revoked_at is None


async def test_concurrent_revocations_let_exactly_one_win(database_url: str) -> None:
    async with await Store.open(database_url) as one, await Store.open(database_url) as two:
        await one.record_issuance(make_certificate(0x30))
        reasons = sorted(REVOCATION_REASONS)
        outcomes = await asyncio.gather(
            *(
                (one, two)[i % 2].revoke_certificate(
                    CA, 0x30, reason, REVOKED_AT + timedelta(seconds=i)
                )
                for i, reason in enumerate(reasons)
            ),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if isinstance(o, CertificateRecord)]
        losers = [o for o in outcomes if not isinstance(o, CertificateRecord)]
        assert len(winners) == 1
        assert len(losers) == len(reasons) - 1
        assert all(isinstance(loser, AlreadyRevoked) for loser in losers), losers
        assert await two.get_certificate(CA, 0x30) == winners[0]
        assert await one.revoked_certificates(CA) == winners


async def test_revoked_certificates_are_ordered_by_time_then_serial(store: Store) -> None:
    assert await store.revoked_certificates(CA) == []
    for serial in (0x1, 0xF, 0x10, 0x100, 0xABC):
        await store.record_issuance(make_certificate(serial))
    await store.record_issuance(make_certificate(0x1, ca="other-ca"))
    recorded_revoked = replace(
        make_certificate(0x5), revoked_at=REVOKED_AT, revocation_reason="cessationOfOperation"
    )
    await store.record_issuance(recorded_revoked)

    later = REVOKED_AT + timedelta(hours=1)
    await store.revoke_certificate(CA, 0x100, "superseded", later)
    await store.revoke_certificate(CA, 0x10, "superseded", REVOKED_AT)
    await store.revoke_certificate(CA, 0xF, "keyCompromise", REVOKED_AT)
    await store.revoke_certificate(CA, 0x1, "affiliationChanged", REVOKED_AT - timedelta(days=1))
    await store.revoke_certificate("other-ca", 0x1, "superseded", REVOKED_AT)

    revoked = await store.revoked_certificates(CA)
    assert [(c.revoked_at, c.serial) for c in revoked] == [
        (REVOKED_AT - timedelta(days=1), 0x1),
        (REVOKED_AT, 0x5),
        (REVOKED_AT, 0xF),
        (REVOKED_AT, 0x10),
        (later, 0x100),
    ]
    assert revoked[1] == recorded_revoked
    assert [c.revocation_reason for c in revoked] == [
        "affiliationChanged",
        "cessationOfOperation",
        "keyCompromise",
        "superseded",
        "superseded",
    ]
    assert [c.serial for c in await store.revoked_certificates("other-ca")] == [0x1]
    assert await store.revoked_certificates("nobody") == []


async def test_latest_certificate_is_the_last_issued_of_entity_and_ca(store: Store) -> None:
    assert await store.latest_certificate("alice", CA) is None
    day = timedelta(days=1)
    await store.record_issuance(make_certificate(0x300, username="alice", issued_at=T0 + day))
    await store.record_issuance(make_certificate(0x200, username="alice", issued_at=T0))
    await store.record_issuance(
        make_certificate(0x400, username="alice", issued_at=T0 + 5 * day, ca="other-ca")
    )
    await store.record_issuance(make_certificate(0x500, username="bob", issued_at=T0 + 9 * day))
    await store.record_issuance(make_certificate(0x600, username=None, issued_at=T0 + 9 * day))

    latest = await store.latest_certificate("alice", CA)
    assert latest == make_certificate(0x300, username="alice", issued_at=T0 + day)

    # Revoked or not, it is the latest.
    revoked = await store.revoke_certificate(CA, 0x300, "superseded", REVOKED_AT)
    assert await store.latest_certificate("alice", CA) == revoked

    # Issued in the same instant: the one recorded last.
    await store.record_issuance(make_certificate(0x1, username="alice", issued_at=T0 + day))
    same_instant = await store.latest_certificate("alice", CA)
    assert same_instant is not None
    assert same_instant.serial == 0x1

    other = await store.latest_certificate("alice", "other-ca")
    assert other is not None
    assert other.serial == 0x400
    assert await store.latest_certificate("alice", "third-ca") is None
    assert await store.latest_certificate("carol", CA) is None


async def test_list_certificates_by_ca_and_entity(store: Store) -> None:
    records = [
        make_certificate(0x1, username="alice", ca="ca-one"),
        make_certificate(0x2, username="alice", ca="ca-two"),
        make_certificate(0x3, username="bob", ca="ca-one"),
        make_certificate(0x4, username=None, ca="ca-two"),
    ]
    for record in records:
        await store.record_issuance(record)
    assert [c.serial for c in await store.list_certificates(ca="ca-one")] == [0x1, 0x3]
    assert [c.serial for c in await store.list_certificates(ca="ca-two")] == [0x2, 0x4]
    assert await store.list_certificates(username="alice", ca="ca-two") == [records[1]]
    assert await store.list_certificates(username="bob", ca="ca-two") == []
    assert await store.list_certificates(ca="ca-three") == []
    assert len(await store.list_certificates()) == 4


async def test_find_certificate_by_serial_searches_every_ca(store: Store) -> None:
    first = make_certificate(0xABC, ca="ca-b")
    second = make_certificate(0xABC, ca="ca-a", transaction_id="other")
    await store.record_issuance(first)
    await store.record_issuance(second)
    await store.record_issuance(make_certificate(0xABD, ca="ca-a"))

    assert await store.find_certificate_by_serial(0xABC) == [second, first]
    assert await store.find_certificate_by_serial(0xABD) == [make_certificate(0xABD, ca="ca-a")]
    assert await store.find_certificate_by_serial(0xABE) == []
    for impossible in (0, -1, 1 << 160):
        assert await store.find_certificate_by_serial(impossible) == []


async def test_revocation_is_visible_to_another_store(database_url: str) -> None:
    async with await Store.open(database_url) as store:
        await store.record_issuance(make_certificate(0x40))
        revoked = await store.revoke_certificate(CA, 0x40, "privilegeWithdrawn", REVOKED_AT)
    async with raw_engine(database_url) as engine, engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT serial, revocation_reason FROM certificates WHERE ca = :ca"),
                {"ca": CA},
            )
        ).one()
    assert tuple(row) == ("40", "privilegeWithdrawn")
    async with await Store.open(database_url) as store:
        assert await store.revoked_certificates(CA) == [revoked]
