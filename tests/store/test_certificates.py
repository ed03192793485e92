"""Certificates: recording an issuance, claiming the end entity, serial numbers, look-ups."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from gateway.store import (
    CertificateRecord,
    EntityNotEnrollable,
    EntityStatus,
    InvalidRecord,
    SerialCollision,
    Store,
    StoreError,
)

from .helpers import CA, ISSUER_DN, T0, make_certificate, make_entity, raw_engine

MAX_SERIAL = (1 << 160) - 1


def random_serial() -> int:
    return secrets.randbits(159) | (1 << 158)


async def test_recorded_certificate_comes_back_equal(store: Store) -> None:
    cert = make_certificate(random_serial())
    await store.record_issuance(cert)
    got = await store.get_certificate(CA, cert.serial)
    assert got == cert
    assert got is not None
    assert isinstance(got.der, bytes)
    assert (got.revoked_at, got.revocation_reason) == (None, None)


async def test_revocation_columns_round_trip(store: Store) -> None:
    cert = replace(
        make_certificate(7, username=None),
        revoked_at=T0 + timedelta(days=1),
        revocation_reason="keyCompromise",
    )
    await store.record_issuance(cert)
    assert await store.get_certificate(CA, 7) == cert


@pytest.mark.parametrize("serial", [1, 0xFF, 1 << 63, (1 << 159) + 12345, MAX_SERIAL])
async def test_serials_up_to_160_bits_round_trip_as_minimal_lowercase_hex(
    store: Store, database_url: str, serial: int
) -> None:
    await store.record_issuance(make_certificate(serial))
    got = await store.get_certificate(CA, serial)
    assert got is not None
    assert got.serial == serial
    async with raw_engine(database_url) as engine, engine.connect() as connection:
        stored = await connection.scalar(text("SELECT serial FROM certificates"))
    assert stored == format(serial, "x")
    assert stored == stored.lower()
    assert not stored.startswith("0")


@pytest.mark.parametrize("serial", [0, -1, 1 << 160, True])
def test_serials_outside_the_range_are_refused(serial: int) -> None:
    with pytest.raises(InvalidRecord):
        make_certificate(serial)


async def test_lookups_with_impossible_serials_find_nothing(store: Store) -> None:
    await store.record_issuance(make_certificate(1))
    for serial in (0, -1, 1 << 160):
        assert await store.get_certificate(CA, serial) is None
        assert await store.find_certificate_by_issuer_dn(ISSUER_DN, serial) is None


def test_certificates_refuse_naive_datetimes() -> None:
    naive = datetime(2025, 1, 1)
    with pytest.raises(InvalidRecord):
        replace(make_certificate(1), issued_at=naive)
    with pytest.raises(InvalidRecord):
        replace(make_certificate(1), revoked_at=naive)


async def test_datetimes_come_back_aware_and_equal(store: Store) -> None:
    minus_five = timezone(timedelta(hours=-5))
    cert = CertificateRecord(
        ca=CA,
        serial=42,
        subject_dn="CN=x",
        issuer_dn=ISSUER_DN,
        username=None,
        transaction_id="tx",
        not_before=datetime(2025, 1, 1, 19, 0, 0, 1, tzinfo=minus_five),
        not_after=datetime(2049, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        der=b"\x30\x00",
        issued_at=datetime(2025, 1, 2, 0, 0, 0, 500000, tzinfo=UTC),
        revoked_at=datetime(2025, 1, 2, 1, 0, tzinfo=minus_five),
    )
    await store.record_issuance(cert)
    got = await store.get_certificate(CA, 42)
    assert got is not None
    for name in ("not_before", "not_after", "issued_at", "revoked_at"):
        value = getattr(got, name)
        assert value == getattr(cert, name), name
        assert value.tzinfo is UTC, name
    assert got.not_before == datetime(2025, 1, 2, 0, 0, 0, 1, tzinfo=UTC)


async def test_same_serial_under_another_ca_is_allowed(store: Store) -> None:
    first = make_certificate(99, ca="ca-one")
    second = make_certificate(99, ca="ca-two", transaction_id="other")
    await store.record_issuance(first)
    await store.record_issuance(second)
    assert await store.get_certificate("ca-one", 99) == first
    assert await store.get_certificate("ca-two", 99) == second
    assert await store.get_certificate("ca-three", 99) is None
    assert await store.count_certificates() == 2


async def test_find_by_issuer_dn(store: Store) -> None:
    cert = make_certificate(0xABCDEF, issuer_dn="CN=Other CA,O=Example", ca="other")
    await store.record_issuance(make_certificate(0xABCDEF))
    await store.record_issuance(cert)
    assert await store.find_certificate_by_issuer_dn("CN=Other CA,O=Example", 0xABCDEF) == cert
    assert await store.find_certificate_by_issuer_dn("CN=Other CA,O=Example", 0xABCDEE) is None
    assert await store.find_certificate_by_issuer_dn("CN=Nobody", 0xABCDEF) is None


async def test_list_and_count(store: Store) -> None:
    assert await store.list_certificates() == []
    assert await store.count_certificates() == 0
    later = T0 + timedelta(seconds=1)
    records = [
        make_certificate(0x10, username="alice", issued_at=later),
        make_certificate(0xF, username="bob", issued_at=later),
        make_certificate(0x100, username="alice", issued_at=T0),
        make_certificate(0x2, username=None, issued_at=T0),
    ]
    for record in records:
        await store.record_issuance(record)

    listed = await store.list_certificates()
    assert [(c.issued_at, c.serial) for c in listed] == [
        (T0, 0x2),
        (T0, 0x100),
        (later, 0xF),
        (later, 0x10),
    ]
    assert [c.serial for c in await store.list_certificates(username="alice")] == [0x100, 0x10]
    assert [c.serial for c in await store.list_certificates(username="bob")] == [0xF]
    assert await store.list_certificates(username="nobody") == []
    assert await store.count_certificates() == 4


async def test_issuance_claims_the_entity_exactly_once(store: Store) -> None:
    await store.add_end_entity(make_entity("alice"))
    issued = T0 + timedelta(hours=1)
    first = make_certificate(1, username="alice", issued_at=issued)
    await store.record_issuance(first, claim_entity="alice")

    entity = await store.get_end_entity("alice")
    assert entity is not None
    assert entity.status is EntityStatus.GENERATED
    assert (entity.created_at, entity.updated_at) == (T0, issued)

    with pytest.raises(EntityNotEnrollable) as caught:
        await store.record_issuance(make_certificate(2, username="alice"), claim_entity="alice")
    assert (caught.value.username, caught.value.status) == ("alice", "generated")
    assert await store.list_certificates() == [first]


async def test_failed_entity_can_be_claimed(store: Store) -> None:
    await store.add_end_entity(make_entity("alice", status=EntityStatus.FAILED))
    await store.record_issuance(make_certificate(1, username="alice"), claim_entity="alice")
    entity = await store.get_end_entity("alice")
    assert entity is not None
    assert entity.status is EntityStatus.GENERATED


async def test_reset_entity_can_be_claimed_again(store: Store) -> None:
    await store.add_end_entity(make_entity("alice"))
    await store.record_issuance(make_certificate(1, username="alice"), claim_entity="alice")
    await store.reset_end_entity("alice", "new-hash", T0 + timedelta(days=1))
    await store.record_issuance(make_certificate(2, username="alice"), claim_entity="alice")
    assert [c.serial for c in await store.list_certificates(username="alice")] == [1, 2]


async def test_claiming_an_unknown_entity_inserts_nothing(store: Store) -> None:
    with pytest.raises(EntityNotEnrollable) as caught:
        await store.record_issuance(make_certificate(1, username="ghost"), claim_entity="ghost")
    assert caught.value.status is None
    assert await store.count_certificates() == 0


async def test_serial_collision_rolls_back_the_claim(store: Store) -> None:
    await store.add_end_entity(make_entity("alice"))
    await store.record_issuance(make_certificate(0xC0FFEE, username=None))

    with pytest.raises(SerialCollision) as caught:
        await store.record_issuance(
            make_certificate(0xC0FFEE, username="alice", issued_at=T0 + timedelta(hours=1)),
            claim_entity="alice",
        )
    assert (caught.value.ca, caught.value.serial) == (CA, 0xC0FFEE)
    assert isinstance(caught.value, StoreError)
    assert await store.get_end_entity("alice") == make_entity("alice")
    assert await store.count_certificates() == 1
    assert await store.list_certificates(username="alice") == []

    # Nothing was half-written: a fresh serial claims the entity.
    retry = make_certificate(0xC0FFEF, username="alice")
    await store.record_issuance(retry, claim_entity="alice")
    assert await store.list_certificates(username="alice") == [retry]


async def test_serial_uniqueness_is_a_database_constraint(database_url: str) -> None:
    """Two stores (two engines, as two replicas would have) cannot issue the same serial."""
    async with await Store.open(database_url) as one, await Store.open(database_url) as two:
        await one.record_issuance(make_certificate(5, transaction_id="a"))
        with pytest.raises(SerialCollision):
            await two.record_issuance(make_certificate(5, transaction_id="b"))
        assert await two.count_certificates() == 1


async def test_concurrent_claims_let_exactly_one_win(store: Store) -> None:
    await store.add_end_entity(make_entity("alice"))
    serials = [random_serial() for _ in range(10)]
    outcomes = await asyncio.gather(
        *(
            store.record_issuance(make_certificate(s, username="alice"), claim_entity="alice")
            for s in serials
        ),
        return_exceptions=True,
    )
    winners = [s for s, outcome in zip(serials, outcomes, strict=True) if outcome is None]
    losers = [outcome for outcome in outcomes if outcome is not None]
    assert len(winners) == 1
    assert len(losers) == 9
    assert all(isinstance(loser, EntityNotEnrollable) for loser in losers), losers
    assert [c.serial for c in await store.list_certificates()] == winners
    entity = await store.get_end_entity("alice")
    assert entity is not None
    assert entity.status is EntityStatus.GENERATED


async def test_concurrent_issuances_all_land(store: Store) -> None:
    serials = [random_serial() for _ in range(10)]
    await asyncio.gather(
        *(store.record_issuance(make_certificate(s, username=None)) for s in serials)
    )
    assert await store.count_certificates() == 10
    assert sorted(c.serial for c in await store.list_certificates()) == sorted(serials)
