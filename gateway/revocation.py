"""Revocation and CRL publication (RFC 5280): one CRL per CA key, numbered by the database.

Every replica may publish: the store allocates CRL numbers, so two replicas refreshing at
once get consecutive numbers instead of a clash.

Serving costs O(1) in the number of revoked certificates: each request asks the store one
indexed question (:meth:`Store.crl_state`: the newest CRL's number and the revocation count it
lists against the CA's count now) and answers with the DER this worker already holds. Only a
stale CRL (none yet, near its nextUpdate, or a revocation it does not list, made on any
replica) is signed anew, once per worker at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.ca.crl import Revoked, build_crl, issued_by
from gateway.registry import CaRuntime, Snapshot
from gateway.store import CertificateRecord, CrlRecord, Store
from gateway.store.models import CrlState

log = logging.getLogger(__name__)

REFRESH_INTERVAL_SECONDS = 60

HTTP_MAX_AGE_SECONDS = 300
"""Longest Cache-Control max-age of a CRL served over HTTP. A new CRL is signed at every
revocation, and a shared cache should not hide it for long; revalidation is a cheap 304."""


def crl_key(ca: CaRuntime) -> str:
    """The store's name for this CA key's CRL series (a rollover keeps the CA name)."""
    return f"{ca.name}#{ca.key_id}"


@dataclass(frozen=True)
class ServedCrl:
    """A CRL as the HTTP endpoints serve it."""

    record: CrlRecord
    etag: str  # a strong entity tag (RFC 9110 8.8.3): a hash of the DER
    refresh_at: datetime  # when this worker signs a new one at the latest

    @property
    def der(self) -> bytes:
        return self.record.der

    def max_age(self, now: datetime) -> int:
        """Seconds a cache may keep it: never past the refresh point (so never past
        nextUpdate, RFC 5019 6.2 practice), at most HTTP_MAX_AGE_SECONDS."""
        left = int((self.refresh_at - now).total_seconds())
        return max(0, min(HTTP_MAX_AGE_SECONDS, left))


def _served(record: CrlRecord, refresh: timedelta) -> ServedCrl:
    digest = hashlib.sha256(record.der).hexdigest()[:32]
    return ServedCrl(record, f'"{digest}"', record.next_update - refresh)


class CrlPublisher:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock
        # Per series: the newest CRL this worker has seen, and the lock that makes one
        # request publish while the others wait for its result.
        self._held: dict[str, ServedCrl] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def _revoked(self, ca: CaRuntime) -> list[Revoked]:
        return [
            Revoked(r.serial, r.revoked_at, r.revocation_reason or "unspecified")
            for r in await self._store.revoked_certificates(ca.name)
            if r.revoked_at is not None and issued_by(r.der, ca.issuer)
        ]

    async def publish(self, ca: CaRuntime) -> CrlRecord:
        """Sign and store a new CRL with every revoked certificate of this CA key."""
        now = self._clock()
        # Read the count first: a revocation committed after it is either listed anyway or
        # makes the CRL count as stale; it is never left out unnoticed.
        covers = await self._store.revocation_count(ca.name)
        revoked = await self._revoked(ca)
        next_update = now + timedelta(hours=ca.crl.validity_hours)

        def sign(number: int) -> bytes:
            return build_crl(
                ca.issuer, revoked, number=number, this_update=now, next_update=next_update
            )

        record = await self._store.publish_crl(
            crl_key(ca), this_update=now, next_update=next_update, sign=sign, covers=covers
        )
        self._held[crl_key(ca)] = _served(record, self._refresh(ca))
        log.info("published CRL %d of %s with %d entries", record.number, ca.name, len(revoked))
        return record

    @staticmethod
    def _refresh(ca: CaRuntime) -> timedelta:
        return timedelta(hours=ca.crl.refresh_before_hours)

    def _fresh(self, ca: CaRuntime, state: CrlState | None) -> bool:
        # A revocation the CRL does not list, made by any replica, counts as stale (another
        # replica may have numbered its CRL after a revocation it had not seen). The CA name
        # is shared by the key generations of a rollover: a revocation under one key makes
        # the other key's CRL be signed once more, and then it lists that count too.
        return (
            state is not None
            and state.lists_every_revocation
            and self._clock() < state.next_update - self._refresh(ca)
        )

    async def serve(self, ca: CaRuntime) -> ServedCrl:
        """The newest CRL, signed anew first if there is none, it is about to expire, or a
        revocation is missing from it. One store query when it is fresh."""
        key = crl_key(ca)
        state = await self._store.crl_state(key, ca.name)
        if not self._fresh(ca, state):
            lock = self._locks.setdefault(key, asyncio.Lock())
            async with lock:
                # Whoever held the lock may have published meanwhile.
                state = await self._store.crl_state(key, ca.name)
                if not self._fresh(ca, state):
                    await self.publish(ca)
                    return self._held[key]
        assert state is not None  # fresh
        held = self._held.get(key)
        if held is None or held.record.number < state.number:
            # Published by another replica (or before this worker started): fetch it once.
            latest = await self._store.latest_crl(key)
            if latest is None:  # CRLs are never deleted; but do not trust that here
                await self.publish(ca)
                return self._held[key]
            held = self._held[key] = _served(latest, self._refresh(ca))
        return held

    async def current(self, ca: CaRuntime) -> bytes:
        """The DER of :meth:`serve`."""
        return (await self.serve(ca)).der

    async def revoke(
        self, ca: CaRuntime, serial: int, reason: str
    ) -> tuple[CertificateRecord, CrlRecord]:
        """Revoke and publish the CRL that lists it, at once."""
        record = await self._store.revoke_certificate(ca.name, serial, reason, self._clock())
        # The CRL of the key that issued it: after a rollover that need not be ``ca`` itself.
        issuer = next((g for g in ca.generations if issued_by(record.der, g.issuer)), ca)
        return record, await self.publish(issuer)

    async def refresh_forever(self, snapshot: Callable[[], Snapshot], stop: asyncio.Event) -> None:
        """Keep every CA's CRL from expiring (each replica may do it; numbers never clash)."""
        while not stop.is_set():
            for base in snapshot().cas.values():
                for ca in base.generations:
                    try:
                        await self.current(ca)
                    except Exception:  # a bad round must not end the task
                        log.exception("CRL refresh of %s failed", ca.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_INTERVAL_SECONDS)
