"""Naming phase: the subject (and end entity) a certificate is issued to."""

from __future__ import annotations

from dataclasses import replace

from asn1crypto import x509 as asn1_x509
from cryptography import x509

from gateway.config.model import NameScheme
from gateway.errors import FailInfo, ScepFailure
from gateway.policy import dn
from gateway.policy.authenticate import username_of
from gateway.policy.codes import random_text
from gateway.policy.context import EnrollmentContext, Pending, PolicyEnv
from gateway.scep.csr import load_name
from gateway.store import EndEntity, EntityStatus


class EndEntityNaming:
    """``naming.end_entity``: CA mode; the DN registered for the end entity, not the request's."""

    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        entity = ctx.end_entity
        if entity is None and ctx.renewal_of is not None and ctx.renewal_of.username:
            entity = await env.store.get_end_entity(ctx.renewal_of.username)
        if entity is None:
            raise ScepFailure(FailInfo.BAD_REQUEST, "no end entity for this request")
        return replace(
            ctx,
            end_entity=entity,
            username=entity.username,
            subject=x509.Name.from_rfc4514_string(entity.subject_dn),
        )


RA_CODE_HASH = "!ra-mode"  # never verifies: RA-mode entities cannot enroll with a code


class SchemeNaming:
    """``naming.scheme``: RA mode; EJBCA's username generation, then prefix and postfix.

    The subject is the requested DN (the end entity profile then checks it); the end entity
    is created or updated together with the issuance. An end entity that already holds a
    valid certificate gets a new one only by renewing with it.
    """

    def __init__(self, scheme: NameScheme) -> None:
        self._scheme = scheme

    def _name(self, subject: x509.Name, env: PolicyEnv) -> str | None:
        scheme = self._scheme
        if scheme.scheme == "DN":
            for field in scheme.parameters.split(";"):
                found = dn.values(subject, field.strip()) if field.strip() in dn.FIELDS else []
                if found:
                    return found[0]
            return None
        if scheme.scheme == "RANDOM":
            return random_text(env.random)
        if scheme.scheme == "FIXED":
            return scheme.parameters
        return username_of(subject)

    def _affix(self, text: str, env: PolicyEnv) -> str:
        while "${RANDOM}" in text:
            text = text.replace("${RANDOM}", random_text(env.random), 1)
        return text

    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        csr = ctx.request.csr
        if csr is None:
            raise ScepFailure(FailInfo.BAD_REQUEST, "no certificate request")
        subject = csr.subject
        if ctx.renewal_of is not None and ctx.renewal_of.username:
            username = ctx.renewal_of.username
            # EJBCA: a renewal gets the end entity's DN, not whatever the new CSR asks for.
            subject = load_name(asn1_x509.Certificate.load(ctx.renewal_of.der).subject)
        else:
            base = self._name(csr.subject, env)
            if not base:
                raise ScepFailure(
                    FailInfo.BAD_REQUEST,
                    "the request has no subject field to name the end entity by",
                    detail=f"scheme {self._scheme.scheme}({self._scheme.parameters})",
                )
            username = self._affix(self._scheme.prefix, env) + base
            username += self._affix(self._scheme.postfix, env)
            # An entity that already holds a valid certificate must renew instead: the
            # issuance checks that atomically (Store.record_issuance expect_latest).
        entity = EndEntity(
            username=username,
            code_hash=RA_CODE_HASH,
            subject_dn=subject.rfc4514_string(),
            ca=ctx.ca,
            status=EntityStatus.GENERATED,
            created_at=ctx.now,  # the store's upsert keeps an existing entity's created_at
            updated_at=ctx.now,
        )
        return replace(
            ctx, username=username, subject=subject, upsert_entity=entity, end_entity=entity
        )
