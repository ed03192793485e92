"""``challenge.end_entity``: CA mode authentication against pre-registered end entities.

EJBCA semantics: username = CN of the request (REQ-05), challengePassword = enrollment code;
the certificate gets the DN registered for the entity, and an entity enrolls once until an
operator resets it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.errors import FailInfo, ScepFailure
from gateway.policy.codes import DUMMY_HASH, verify_code
from gateway.policy.context import EnrollmentContext, Pending
from gateway.store import EndEntity, EntityStatus

_AUTH_FAILED = "authentication failed"


class EndEntityLookup(Protocol):
    async def get_end_entity(self, username: str) -> EndEntity | None: ...


def username_of(subject: x509.Name) -> str | None:
    """CN, else the serialNumber RDN up to its first space (Cisco IOS, REQ-05)."""
    for oid in (NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER):
        values = subject.get_attributes_for_oid(oid)
        if values:
            value = str(values[0].value).strip()
            return value.split(" ", 1)[0] if oid == NameOID.SERIAL_NUMBER else value
    return None


class EndEntityChallenge:
    def __init__(self, entities: EndEntityLookup) -> None:
        self._entities = entities

    async def apply(self, ctx: EnrollmentContext) -> EnrollmentContext | Pending:
        csr = ctx.request.csr
        if csr is None:
            raise ScepFailure(FailInfo.BAD_REQUEST, "no certificate request")
        username = username_of(csr.subject)
        entity = await self._entities.get_end_entity(username) if username else None
        code = csr.challenge_password or ""
        # Check the code before anything else, and spend the same time for an unknown user,
        # so that only a holder of the code learns anything about the entity.
        ok = await asyncio.to_thread(verify_code, code, entity.code_hash if entity else DUMMY_HASH)
        if entity is None or not ok or not code:
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                _AUTH_FAILED,
                detail=f"username={username!r} known={entity is not None}",
            )
        if entity.status not in (EntityStatus.NEW, EntityStatus.FAILED):
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                "the enrollment code has already been used; ask an operator to reset it",
                detail=f"username={username!r} status={entity.status}",
            )
        if entity.ca != ctx.ca:
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                "the end entity is not registered for this CA",
                detail=f"username={username!r} entity CA={entity.ca} request CA={ctx.ca}",
            )
        return replace(
            ctx,
            subject=x509.Name.from_rfc4514_string(entity.subject_dn),
            username=entity.username,
            claim_entity=entity.username,
        )
