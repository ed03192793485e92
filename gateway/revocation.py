"""Revocation and CRL publication (RFC 5280): one CRL per CA key, numbered by the database.

Every replica may publish: the store allocates CRL numbers, so two replicas refreshing at
once get consecutive numbers instead of a clash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from gateway.ca.crl import Revoked, build_crl, issued_by
from gateway.registry import CaRuntime, Snapshot
from gateway.store import CertificateRecord, CrlRecord, Store

log = logging.getLogger(__name__)

REFRESH_INTERVAL_SECONDS = 60


def crl_key(ca: CaRuntime) -> str:
    """The store's name for this CA key's CRL series (a rollover keeps the CA name)."""
    return f"{ca.name}#{ca.key_id}"


class CrlPublisher:
    def __init__(self, store: Store, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._clock = clock

    async def _revoked(self, ca: CaRuntime) -> list[Revoked]:
        return [
            Revoked(r.serial, r.revoked_at, r.revocation_reason or "unspecified")
            for r in await self._store.revoked_certificates(ca.name)
            if r.revoked_at is not None and issued_by(r.der, ca.issuer)
        ]

    async def publish(self, ca: CaRuntime, revoked: list[Revoked] | None = None) -> CrlRecord:
        """Sign and store a new CRL with every revoked certificate of this CA key."""
        now = self._clock()
        if revoked is None:
            revoked = await self._revoked(ca)
        next_update = now + timedelta(hours=ca.crl.validity_hours)

        def sign(number: int) -> bytes:
            return build_crl(
                ca.issuer, revoked, number=number, this_update=now, next_update=next_update
            )

        record = await self._store.publish_crl(
            crl_key(ca), this_update=now, next_update=next_update, sign=sign
        )
        log.info("published CRL %d of %s with %d entries", record.number, ca.name, len(revoked))
        return record

    async def current(self, ca: CaRuntime) -> bytes:
        """The newest CRL, signed anew first if there is none or it is about to expire."""
        latest = await self._store.latest_crl(crl_key(ca))
        refresh = timedelta(hours=ca.crl.refresh_before_hours)
        revoked = await self._revoked(ca)
        if (
            latest is None
            or latest.next_update - refresh <= self._clock()
            # Another replica may have numbered its CRL after a revocation it had not seen:
            # a revocation newer than the CRL means the CRL is stale.
            or any(r.revoked_at > latest.this_update for r in revoked)
        ):
            latest = await self.publish(ca, revoked)
        return latest.der

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
