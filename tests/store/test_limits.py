"""Failed-attempt counter and lock of end entities; the bounds on pending requests."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from gateway.store import EntityPending, PendingExists, PendingStatus, Store, TooManyPending

from .helpers import ALIAS, T0, make_entity, make_pending

HOUR = timedelta(hours=1)


async def test_the_counter_locks_at_the_limit_and_a_reset_clears_it(store: Store) -> None:
    await store.add_end_entity(make_entity("counted"))
    for n in range(1, 4):
        await store.record_failed_attempt("counted", 3, T0 + n * HOUR)
        entity = await store.get_end_entity("counted")
        assert entity is not None
        assert entity.failed_attempts == n
        assert entity.locked_at == (T0 + 3 * HOUR if n == 3 else None)
    # Locked once: later attempts keep the first lock time.
    await store.record_failed_attempt("counted", 3, T0 + 9 * HOUR)
    entity = await store.get_end_entity("counted")
    assert entity is not None
    assert (entity.failed_attempts, entity.locked_at) == (4, T0 + 3 * HOUR)
    await store.reset_end_entity("counted", "new-hash", T0, code_expires_at=T0 + HOUR)
    entity = await store.get_end_entity("counted")
    assert entity is not None
    assert (entity.failed_attempts, entity.locked_at, entity.code_expires_at) == (
        0,
        None,
        T0 + HOUR,
    )
    # No limit: it counts, never locks; an unknown username changes nothing.
    await store.record_failed_attempt("counted", None, T0)
    await store.record_failed_attempt("nobody", 3, T0)
    entity = await store.get_end_entity("counted")
    assert entity is not None
    assert (entity.failed_attempts, entity.locked_at) == (1, None)
    assert await store.get_end_entity("nobody") is None


async def test_one_open_request_per_end_entity_and_alias(store: Store) -> None:
    first = await store.add_pending(make_pending("tx-1", username="dev"))
    with pytest.raises(EntityPending) as caught:
        await store.add_pending(make_pending("tx-2", username="dev", key_id="other-key"))
    assert caught.value.existing == first
    # Another alias, or another end entity, is not held up.
    await store.add_pending(make_pending("tx-2", username="dev", alias="other"))
    await store.add_pending(make_pending("tx-3", username="dev-2"))
    # Once decided, or past its expiry, it no longer blocks.
    await store.decide_pending(first.id or 0, approve=False, reason=None, now=T0)
    second = await store.add_pending(make_pending("tx-4", username="dev"))
    late = make_pending("tx-5", username="dev", created_at=T0 + 9 * HOUR)
    third = await store.add_pending(late)
    stale = await store.get_pending(second.id or 0)
    assert stale is not None
    assert stale.status is PendingStatus.EXPIRED
    assert third.status is PendingStatus.PENDING


async def test_a_transaction_id_is_unique_per_key(store: Store) -> None:
    await store.add_pending(make_pending("tx-1", username="a", key_id="key-a"))
    other = await store.add_pending(make_pending("tx-1", username="b", key_id="key-b"))
    with pytest.raises(PendingExists):
        await store.add_pending(make_pending("tx-1", username="c", key_id="key-b"))
    assert await store.find_pending_for_key(ALIAS, "TX-1", "key-b") == other
    assert await store.find_pending_for_key(ALIAS, "tx-1", "key-c") is None
    signed = replace(make_pending("tx-s", username="s", key_id="csr"), signer_key_id="signer")
    added = await store.add_pending(signed)
    assert await store.find_pending_for_key(ALIAS, "tx-s", "signer") is None
    assert await store.find_pending_for_key(ALIAS, "tx-s", "signer", or_signer=True) == added


async def test_the_alias_cap_holds_under_concurrent_requests(store: Store) -> None:
    requests = [make_pending(f"tx-{i}", username=f"dev-{i}") for i in range(8)]
    results = await asyncio.gather(
        *(store.add_pending(r, limit=3) for r in requests), return_exceptions=True
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert all(isinstance(r, TooManyPending) for r in results if isinstance(r, BaseException))
    assert len(await store.list_pending(status=PendingStatus.PENDING)) == 3
    # Expired requests do not count.
    later = make_pending("tx-later", username="dev-later", created_at=T0 + 9 * HOUR)
    assert (await store.add_pending(later, limit=3)).id is not None
