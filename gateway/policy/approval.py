"""``approval.manual``: enrollments wait for an operator; clients poll (RFC 8894 3.3.3).

The request and every decision the earlier phases made are stored, so that the issuance
after approval (on a CertPoll, on any replica, after a restart) issues exactly what was
approved. If that issuance fails, the end entity's next PKCSReq is issued without a second
approval (EJBCA).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

from asn1crypto import x509 as asn1_x509
from cryptography import x509

from gateway.errors import FailInfo, ScepFailure
from gateway.policy.context import EnrollmentContext, Pending, PolicyEnv
from gateway.policy.naming import RA_CODE_HASH
from gateway.scep import csr as scep_csr
from gateway.scep.csr import load_name
from gateway.scep.messages import PkiRequest
from gateway.store import (
    EndEntity,
    EntityPending,
    EntityStatus,
    PendingExists,
    PendingRequest,
    PendingStatus,
    Store,
    TooManyPending,
)

DEFAULT_MAX_PENDING = 1000
"""Open pending requests an alias holds at most, unless its ``approval.max_pending`` says."""


def _san(name: x509.GeneralName) -> list[str]:
    if isinstance(name, x509.DNSName):
        return ["dns", name.value]
    if isinstance(name, x509.RFC822Name):
        return ["email", name.value]
    if isinstance(name, x509.UniformResourceIdentifier):
        return ["uri", name.value]
    if isinstance(name, x509.IPAddress):
        return ["ip", str(name.value)]
    raise ScepFailure(
        FailInfo.BAD_REQUEST,
        "a request with this kind of subject alternative name cannot wait for approval",
        detail=f"cannot store SAN {name!r}",
    )


def _from_san(kind: str, value: str) -> x509.GeneralName:
    if kind == "dns":
        return x509.DNSName(value)
    if kind == "email":
        return x509.RFC822Name(value)
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    return x509.IPAddress(ipaddress.ip_address(value))


def encode_decision(ctx: EnrollmentContext) -> str:
    """What the earlier phases decided, as JSON stored with the pending request."""
    entity = ctx.upsert_entity
    return json.dumps(
        {
            # DER, not RFC 4514 text: not every name a CSR carries parses back from text.
            "subject_der": ctx.subject.public_bytes().hex() if ctx.subject else None,
            "sans": [_san(n) for n in ctx.subject_alt_names],
            "username": ctx.username,
            "claim_entity": ctx.claim_entity,
            "upsert_subject": entity.subject_dn if entity else None,
        }
    )


def decode_decision(ctx: EnrollmentContext, decision: str) -> EnrollmentContext:
    """The context of a CertPoll, carrying what was decided (and approved) for the request."""
    try:
        return _decoded(ctx, json.loads(decision))
    except (ValueError, KeyError, TypeError) as exc:
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            "the approved request cannot be issued; enroll again",
            detail=f"stored decision unreadable: {exc}",
        ) from None


def _subject(data: dict[str, Any]) -> x509.Name:
    if "subject_der" in data:
        return load_name(asn1_x509.Name.load(bytes.fromhex(data["subject_der"])))
    return x509.Name.from_rfc4514_string(data["subject"])  # stored before DER was


def _decoded(ctx: EnrollmentContext, data: dict[str, Any]) -> EnrollmentContext:
    upsert = None
    if data["upsert_subject"] is not None:
        upsert = EndEntity(
            username=data["username"],
            code_hash=RA_CODE_HASH,
            subject_dn=data["upsert_subject"],
            ca=ctx.ca,
            status=EntityStatus.GENERATED,
            created_at=ctx.now,
            updated_at=ctx.now,
        )
    return replace(
        ctx,
        authenticated=True,
        approved=True,
        subject=_subject(data),
        subject_alt_names=tuple(_from_san(k, v) for k, v in data["sans"]),
        username=data["username"],
        claim_entity=data["claim_entity"],
        upsert_entity=upsert,
    )


def _same_key(stored: PendingRequest, key_id: str) -> bool:
    """The approval belongs to the key of the request that was approved, not to a name:
    anyone else who can produce the name must not collect it."""
    return stored.key_id is not None and stored.key_id == key_id


async def find_own_pending(store: Store, alias: str, request: PkiRequest) -> PendingRequest | None:
    """The pending request a CertPoll asks for, if the poll comes from its requester.

    A transactionID travels in clear and is matched without case (EJBCA), so it proves
    nothing: the poll must be signed by the request's CSR key, or by the key that signed its
    PKCSReq (Apple's MDM signer is not the CSR key, REP-06). Anyone else gets None, and with
    it exactly the answer of an unknown transactionID.
    """
    # any_transaction: a PKCSReq of the same key under a new transactionID was answered PENDING
    # for the request already stored (one open request per end entity), so its polls carry the
    # new transactionID. The key, not the transactionID, binds a poll to its request.
    return await store.find_pending_for_key(
        alias,
        request.transaction_id,
        scep_csr.key_id(request.signer.public_key),
        or_signer=True,
        any_transaction=True,
    )


def stored_csr(pending: PendingRequest) -> scep_csr.CertificationRequest:
    """The CSR of a pending request as stored (no challengePassword, no signature)."""
    try:
        return scep_csr.parse(pending.csr_der)
    except ValueError:
        raise ScepFailure(
            FailInfo.BAD_REQUEST,
            "the approved request cannot be issued; enroll again",
            detail=f"pending request {pending.id}: stored CSR unreadable",
        ) from None


class ManualApproval:
    def __init__(self, alias: str, expire_hours: int, max_pending: int = DEFAULT_MAX_PENDING):
        self._alias = alias
        self._lifetime = timedelta(hours=expire_hours)
        self._max_pending = max_pending

    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        if ctx.approved or ctx.renewal_of is not None:
            return ctx  # renewals of an approved device are not approved again
        store = env.store
        csr = ctx.request.csr
        assert csr is not None  # PKCSReq and RenewalReq carry one
        if ctx.username is not None and ctx.upsert_entity is not None:
            # RA mode: a request that could never be issued must not wait for an operator.
            held = await store.valid_certificate(ctx.username, ctx.ca, ctx.now)
            if held is not None:
                raise ScepFailure(
                    FailInfo.BAD_REQUEST,
                    "the end entity already holds a valid certificate; renew with it",
                    detail=f"username={ctx.username!r} serial={held.serial:x}",
                )
        key_id = scep_csr.key_id(csr.public_key)
        if ctx.username is not None:
            approved = await store.find_approved(self._alias, ctx.username)
            if approved is not None and _same_key(approved, key_id):
                # Approved before, but its issuance failed: issue now, no second approval;
                # exactly what was approved (the new request only proves the same key).
                base = replace(
                    ctx,
                    request=replace(ctx.request, csr=stored_csr(approved)),
                    pending_id=approved.id,
                )
                return decode_decision(base, approved.decision)
        request = PendingRequest(
            alias=self._alias,
            ca=ctx.ca,
            transaction_id=ctx.request.transaction_id,
            username=ctx.username,
            subject_dn=ctx.subject.rfc4514_string() if ctx.subject else "",
            # RFC 8894 7.3: the challengePassword (RA secret or enrollment code) is not kept.
            csr_der=scep_csr.without_challenge(csr.der),
            decision=encode_decision(ctx),
            status=PendingStatus.PENDING,
            created_at=ctx.now,
            expires_at=ctx.now + self._lifetime,
            key_id=key_id,
            signer_key_id=scep_csr.key_id(ctx.request.signer.public_key),
        )
        try:
            await store.add_pending(request, limit=self._max_pending)
        except PendingExists:
            # A resent PKCSReq (resync, RFC 8894 5.2) of the same key: answer with the stored
            # request's state. Another key reusing the transactionID never gets here: its
            # request is its own (the transactionID is unique per key).
            existing = await store.find_pending_for_key(
                self._alias, ctx.request.transaction_id, key_id
            )
            if existing is None or existing.status is not PendingStatus.PENDING:
                raise ScepFailure(
                    FailInfo.BAD_REQUEST,
                    "this transaction is already closed; poll it or start a new one",
                    detail=f"transaction {ctx.request.transaction_id!r}",
                ) from None
        except EntityPending as exc:
            if exc.existing.key_id != key_id:
                raise ScepFailure(
                    FailInfo.BAD_REQUEST,
                    "another request for this end entity is waiting for approval",
                    detail=exc.detail,
                ) from None
            # The same key again under another transactionID: the same request (a resend).
        except TooManyPending as exc:
            raise ScepFailure(
                FailInfo.BAD_REQUEST, "too many pending requests", detail=exc.detail
            ) from None
        return Pending(reason=f"waiting for approval of {request.subject_dn}")
