"""Naming phase: the subject (and end entity) a certificate is issued to."""

from __future__ import annotations

from dataclasses import replace

from cryptography import x509

from gateway.errors import FailInfo, ScepFailure
from gateway.policy.context import EnrollmentContext, Pending, PolicyEnv


class EndEntityNaming:
    """``naming.end_entity``: CA mode; the DN registered for the end entity, not the request's."""

    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        if ctx.end_entity is None:
            raise ScepFailure(FailInfo.BAD_REQUEST, "no end entity for this request")
        return replace(ctx, subject=x509.Name.from_rfc4514_string(ctx.end_entity.subject_dn))
