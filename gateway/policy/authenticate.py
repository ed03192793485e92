"""Authenticate phase: who is asking (``challenge.end_entity``, ``challenge.static``)."""

from __future__ import annotations

import hmac
from dataclasses import replace

from cryptography import x509
from cryptography.x509.oid import NameOID

from gateway.errors import FailInfo, ScepFailure
from gateway.policy.codes import is_generated_shape, verify_code
from gateway.policy.context import EnrollmentContext, Pending, PolicyEnv
from gateway.store import EntityStatus

AUTH_FAILED = "authentication failed"


def username_of(subject: x509.Name) -> str | None:
    """CN, else the serialNumber RDN up to its first space (Cisco IOS, REQ-05)."""
    for oid in (NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER):
        values = subject.get_attributes_for_oid(oid)
        if values:
            value = str(values[0].value).strip()
            return value.split(" ", 1)[0] if oid == NameOID.SERIAL_NUMBER else value
    return None


def _challenge(ctx: EnrollmentContext) -> str:
    csr = ctx.request.csr
    return (csr.challenge_password or "") if csr else ""


def defer_to_renewal(ctx: EnrollmentContext, renewal_enabled: bool) -> bool:
    """Signed with a certificate we issued: the renewal phase decides when renewal is on.

    EJBCA: an entity that already enrolled renews through the renewal path whatever the
    challenge (macOS and sscep still send one). Without renewal, a request with no challenge
    is left for the renewal phase to refuse; one with a challenge is checked as usual.
    draft-nourse-scep-23 App. D sends an empty challenge, RFC 8894 RenewalReq omits it.
    """
    return ctx.signer_record is not None and (renewal_enabled or not _challenge(ctx))


class EndEntityChallenge:
    """``challenge.end_entity``: CA mode; CN = username, challengePassword = enrollment code.

    Every way a code can be wrong answers alike, after the same hash work (codes.verify_code
    compares with a dummy hash where there is nothing real to compare with) and the same
    one-statement write (the failed-attempt counter): an unknown username, an RA-created
    entity (no code), a wrong code, a locked entity (``max_failed_attempts`` wrong codes in
    a row, until an operator resets it) and an expired code.
    """

    def __init__(
        self, *, renewal_enabled: bool = False, max_failed_attempts: int | None = None
    ) -> None:
        self._renewal_enabled = renewal_enabled
        self._max_failed_attempts = max_failed_attempts

    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        if defer_to_renewal(ctx, self._renewal_enabled):
            return ctx
        csr = ctx.request.csr
        if csr is None:
            raise ScepFailure(FailInfo.BAD_REQUEST, "no certificate request")
        username = username_of(csr.subject)
        if username and not username.isprintable():
            # No registered name holds a control character (and PostgreSQL text cannot hold
            # NUL): such a name is unknown, without asking the store, and counts no attempt.
            username = None
        entity = await env.store.get_end_entity(username) if username else None
        code = _challenge(ctx)
        # Check the code before anything else, and spend the same time for an unknown user,
        # so that only a holder of the code learns anything about the entity.
        stored = entity.code_hash if entity else None
        if is_generated_shape(code):
            # SHA-256, microseconds: a thread hand-off would cost more than the check.
            ok = verify_code(code, stored)
        else:
            # scrypt releases the GIL: in a thread, behind a bounded gate (docs/security.md).
            ok = await env.hashing.run(verify_code, code, stored)
        locked = entity is not None and entity.locked_at is not None
        expired = (
            entity is not None
            and entity.code_expires_at is not None
            and ctx.now >= entity.code_expires_at
        )
        if entity is None or not ok or not code or locked or expired:
            if username:
                await env.store.record_failed_attempt(username, self._max_failed_attempts, ctx.now)
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                AUTH_FAILED,
                detail=f"username={username!r} known={entity is not None} "
                f"locked={locked} expired={expired}",
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
            authenticated=True,
            end_entity=entity,
            username=entity.username,
            claim_entity=entity.username,
        )


class StaticChallenge:
    """``challenge.static``: RA mode; the challenge equals a shared secret."""

    def __init__(self, secret: bytes, *, renewal_enabled: bool = False) -> None:
        self._secret = secret
        self._renewal_enabled = renewal_enabled

    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        if defer_to_renewal(ctx, self._renewal_enabled):
            return ctx
        # RFC 8894 7.3: constant-time comparison; the secret is never logged.
        if not hmac.compare_digest(_challenge(ctx).encode("utf-8"), self._secret):
            raise ScepFailure(FailInfo.BAD_REQUEST, AUTH_FAILED, detail="RA secret mismatch")
        return replace(ctx, authenticated=True)
