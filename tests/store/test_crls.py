"""CRLs: numbered by the database, one series per CA, concurrent publishers never clash."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from gateway.store import (
    CRL_NUMBER_ATTEMPTS,
    CrlRecord,
    InvalidRecord,
    Store,
    StoreError,
)

from .helpers import CA, T0, raw_engine

NEXT = T0 + timedelta(hours=24)


def der_of(ca: str, number: int) -> bytes:
    """A stand-in for a signed CRL that shows which number it was signed with."""
    return b"\x30\x82" + f"{ca}/{number}".encode() + b"\x00\xff"


def signer(ca: str = CA, calls: list[int] | None = None) -> Callable[[int], bytes]:
    def sign(number: int) -> bytes:
        if calls is not None:
            calls.append(number)
        return der_of(ca, number)

    return sign


async def publish(store: Store, ca: str = CA, calls: list[int] | None = None) -> CrlRecord:
    return await store.publish_crl(ca, this_update=T0, next_update=NEXT, sign=signer(ca, calls))


async def test_first_crl_is_number_one_and_comes_back(store: Store) -> None:
    assert await store.latest_crl(CA) is None
    calls: list[int] = []
    before = datetime.now(UTC)
    record = await publish(store, calls=calls)
    after = datetime.now(UTC)

    assert calls == [1]
    assert (record.ca, record.number, record.der) == (CA, 1, der_of(CA, 1))
    assert (record.this_update, record.next_update) == (T0, NEXT)
    assert before <= record.created_at <= after
    latest = await store.latest_crl(CA)
    assert latest == record
    assert latest is not None
    for value in (latest.this_update, latest.next_update, latest.created_at):
        assert value.tzinfo is UTC


async def test_numbers_count_up_per_ca(store: Store) -> None:
    numbers = [(await publish(store)).number for _ in range(3)]
    assert numbers == [1, 2, 3]
    assert (await publish(store, "other-ca")).number == 1
    assert (await publish(store)).number == 4

    latest = await store.latest_crl(CA)
    assert latest is not None
    assert (latest.number, latest.der) == (4, der_of(CA, 4))
    other = await store.latest_crl("other-ca")
    assert other is not None
    assert (other.number, other.der) == (1, der_of("other-ca", 1))
    assert await store.latest_crl("third-ca") is None


async def test_latest_is_the_highest_number_not_the_latest_time(store: Store) -> None:
    first = await store.publish_crl(
        CA, this_update=NEXT, next_update=NEXT + timedelta(days=1), sign=signer()
    )
    second = await store.publish_crl(CA, this_update=T0, next_update=NEXT, sign=signer())
    assert (first.number, second.number) == (1, 2)
    assert await store.latest_crl(CA) == second


async def test_datetimes_are_normalised_to_utc(store: Store) -> None:
    minus_three = timezone(timedelta(hours=-3))
    record = await store.publish_crl(
        CA,
        this_update=T0.astimezone(minus_three),
        next_update=NEXT.astimezone(minus_three),
        sign=signer(),
    )
    assert (record.this_update, record.next_update) == (T0, NEXT)
    assert record.this_update.tzinfo is UTC
    assert await store.latest_crl(CA) == record


@pytest.mark.parametrize("concurrent_stores", [1, 2])
async def test_concurrent_publishes_get_every_number_once(
    database_url: str, concurrent_stores: int
) -> None:
    stores = [await Store.open(database_url) for _ in range(concurrent_stores)]
    try:
        records = await asyncio.gather(*(publish(stores[i % concurrent_stores]) for i in range(10)))
        assert sorted(r.number for r in records) == list(range(1, 11))
        for record in records:
            assert record.der == der_of(CA, record.number)
        latest = await stores[-1].latest_crl(CA)
        assert latest is not None
        assert latest.number == 10
    finally:
        for store in stores:
            await store.close()
    async with raw_engine(database_url) as engine, engine.connect() as connection:
        rows = (
            await connection.execute(text("SELECT number, der FROM crls ORDER BY number"))
        ).all()
    assert [(n, bytes(d)) for n, d in rows] == [(n, der_of(CA, n)) for n in range(1, 11)]


async def test_concurrent_publishes_of_two_cas_do_not_mix(store: Store) -> None:
    records = await asyncio.gather(*(publish(store, ("ca-a", "ca-b")[i % 2]) for i in range(10)))
    for ca in ("ca-a", "ca-b"):
        assert sorted(r.number for r in records if r.ca == ca) == [1, 2, 3, 4, 5]


async def test_sign_failure_stores_nothing_and_uses_up_no_number(store: Store) -> None:
    def broken(number: int) -> bytes:
        raise RuntimeError(f"HSM unavailable for CRL {number}")

    with pytest.raises(RuntimeError, match="CRL 1"):
        await store.publish_crl(CA, this_update=T0, next_update=NEXT, sign=broken)
    assert await store.latest_crl(CA) is None
    assert (await publish(store)).number == 1


async def test_bad_values_are_refused_before_anything_is_stored(store: Store) -> None:
    calls: list[int] = []
    with pytest.raises(InvalidRecord):
        await store.publish_crl(
            CA, this_update=datetime(2025, 1, 1), next_update=NEXT, sign=signer(calls=calls)
        )
    with pytest.raises(InvalidRecord):
        await store.publish_crl(CA, this_update=NEXT, next_update=T0, sign=signer(calls=calls))
    assert calls == []
    with pytest.raises(InvalidRecord):
        await store.publish_crl(
            CA,
            this_update=T0,
            next_update=NEXT,
            sign=lambda number: f"not bytes {number}",  # type: ignore[arg-type,return-value]
        )
    assert await store.latest_crl(CA) is None


def test_crl_records_check_themselves() -> None:
    good = CrlRecord(CA, 1, T0, NEXT, b"\x30", T0)
    assert good.number == 1
    for number in (0, -1, True):
        with pytest.raises(InvalidRecord):
            CrlRecord(CA, number, T0, NEXT, b"\x30", T0)
    with pytest.raises(InvalidRecord):
        CrlRecord(CA, 1, T0, NEXT, "text", T0)  # type: ignore[arg-type]
    with pytest.raises(InvalidRecord):
        CrlRecord(CA, 1, T0, datetime(2030, 1, 1), b"\x30", T0)
    with pytest.raises(InvalidRecord):
        CrlRecord(CA, 1, NEXT, T0, b"\x30", T0)


# A number taken by another replica between reading the highest number and inserting: on
# SQLite BEGIN IMMEDIATE shuts every other writer out of that window, so only PostgreSQL (where
# the other replica might run a version without the advisory lock) can show it.


def _take_number(url: str, ca: str, number: int) -> None:
    """Commit CRL ``number`` of ``ca`` from another connection, as another replica would."""

    async def insert() -> None:
        async with raw_engine(url) as engine, engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO crls (ca, number, this_update, next_update, der, created_at) "
                    "VALUES (:ca, :number, :t, :n, :der, :t)"
                ),
                {"ca": ca, "number": number, "t": T0, "n": NEXT, "der": b"taken"},
            )

    # sign() is synchronous and runs inside the store's transaction: insert from a thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, insert()).result()


@pytest.mark.postgres
async def test_a_number_taken_concurrently_is_retried_with_the_next(postgres_url: str) -> None:
    calls: list[int] = []

    def sign(number: int) -> bytes:
        calls.append(number)
        if len(calls) <= 2:
            _take_number(postgres_url, CA, number)
        return der_of(CA, number)

    async with await Store.open(postgres_url) as store:
        record = await store.publish_crl(CA, this_update=T0, next_update=NEXT, sign=sign)
        assert calls == [1, 2, 3]
        assert (record.number, record.der) == (3, der_of(CA, 3))
        assert await store.latest_crl(CA) == record
        assert (await publish(store)).number == 4


@pytest.mark.postgres
async def test_publishing_gives_up_after_the_attempts(postgres_url: str) -> None:
    calls: list[int] = []

    def sign(number: int) -> bytes:
        calls.append(number)
        _take_number(postgres_url, CA, number)
        return der_of(CA, number)

    async with await Store.open(postgres_url) as store:
        with pytest.raises(StoreError) as caught:
            await store.publish_crl(CA, this_update=T0, next_update=NEXT, sign=sign)
        assert caught.value.client_text == "could not allocate a CRL number"
        assert CA in caught.value.detail
        assert calls == list(range(1, CRL_NUMBER_ATTEMPTS + 1))
        latest = await store.latest_crl(CA)
        assert latest is not None
        assert (latest.number, latest.der) == (CRL_NUMBER_ATTEMPTS, b"taken")
