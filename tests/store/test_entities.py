"""End entities: add, get, list, reset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from gateway.store import (
    EndEntity,
    EntityExists,
    EntityStatus,
    InvalidRecord,
    NoSuchEntity,
    Store,
    StoreError,
)

from .helpers import T0, make_entity


async def test_add_then_get_returns_the_same_entity(store: Store) -> None:
    entity = make_entity("alice")
    await store.add_end_entity(entity)
    got = await store.get_end_entity("alice")
    assert got == entity
    assert got is not None
    assert got.status is EntityStatus.NEW


async def test_get_unknown_entity_is_none(store: Store) -> None:
    assert await store.get_end_entity("nobody") is None


async def test_list_is_ordered_by_username(store: Store) -> None:
    assert await store.list_end_entities() == []
    for name in ("carol", "alice", "bob"):
        await store.add_end_entity(make_entity(name))
    assert [e.username for e in await store.list_end_entities()] == ["alice", "bob", "carol"]


async def test_duplicate_username_raises_entity_exists(store: Store) -> None:
    first = make_entity("alice", code_hash="first")
    await store.add_end_entity(first)
    with pytest.raises(EntityExists) as caught:
        await store.add_end_entity(make_entity("alice", code_hash="second"))
    assert isinstance(caught.value, StoreError)
    assert caught.value.username == "alice"
    assert await store.get_end_entity("alice") == first
    assert len(await store.list_end_entities()) == 1


async def test_reset_sets_new_with_the_new_hash(store: Store) -> None:
    await store.add_end_entity(make_entity("alice", status=EntityStatus.GENERATED))
    later = T0 + timedelta(days=3, microseconds=7)
    await store.reset_end_entity("alice", "scrypt$new$hash", later)
    got = await store.get_end_entity("alice")
    assert got is not None
    assert (got.status, got.code_hash) == (EntityStatus.NEW, "scrypt$new$hash")
    assert (got.created_at, got.updated_at) == (T0, later)


async def test_reset_unknown_entity_raises_no_such_entity(store: Store) -> None:
    with pytest.raises(NoSuchEntity) as caught:
        await store.reset_end_entity("nobody", "hash", T0)
    assert caught.value.username == "nobody"
    assert await store.list_end_entities() == []


async def test_reset_with_naive_time_is_refused(store: Store) -> None:
    await store.add_end_entity(make_entity("alice"))
    with pytest.raises(InvalidRecord):
        await store.reset_end_entity("alice", "hash", datetime(2025, 1, 1))


async def test_datetimes_come_back_aware_in_utc(store: Store) -> None:
    plus_two = timezone(timedelta(hours=2))
    created = datetime(2025, 6, 1, 14, 0, 0, 123456, tzinfo=plus_two)
    updated = datetime(2025, 6, 1, 23, 30, 0, 654321, tzinfo=UTC)
    await store.add_end_entity(
        EndEntity("alice", "h", "CN=alice", "ca", EntityStatus.FAILED, created, updated)
    )
    got = await store.get_end_entity("alice")
    assert got is not None
    assert got.created_at == created
    assert got.created_at.tzinfo is UTC
    assert got.created_at.hour == 12
    assert got.updated_at == updated
    assert got.updated_at.tzinfo is UTC
    assert got.status is EntityStatus.FAILED


def test_entities_refuse_bad_values() -> None:
    with pytest.raises(InvalidRecord):
        make_entity(at=datetime(2025, 1, 1))
    with pytest.raises(InvalidRecord):
        EndEntity("a", "h", "CN=a", "ca", "revoked", T0, T0)  # type: ignore[arg-type]
    assert EndEntity("a", "h", "CN=a", "ca", "new", T0, T0).status is EntityStatus.NEW  # type: ignore[arg-type]
