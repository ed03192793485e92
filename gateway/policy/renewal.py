"""``renewal.signer_certificate``: client certificate renewal (draft-nourse-scep-23 App. D,
RFC 8894 RenewalReq, EJBCA's checks REQ-08).

A PKCSReq or RenewalReq signed with a certificate this CA issued is a renewal when the alias
allows it: the old certificate vouches for the requester instead of a challenge.
"""

from __future__ import annotations

from dataclasses import replace

from cryptography import x509

from gateway.config.model import Renewal
from gateway.errors import FailInfo, ScepFailure
from gateway.policy.authenticate import username_of
from gateway.policy.context import EnrollmentContext, Pending, PolicyEnv


class SignerCertificateRenewal:
    def __init__(self, settings: Renewal) -> None:
        self._settings = settings

    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        old = ctx.signer_record
        if old is None:
            return ctx
        if not self._settings.enabled:
            if ctx.authenticated:
                return ctx  # a challenge vouched for it: an ordinary enrollment
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                "renewal is not enabled here",
                detail=f"signed by serial {old.serial:x} on an alias without renewal",
            )
        csr = ctx.request.csr
        assert csr is not None  # PKCSReq and RenewalReq carry one
        cert = x509.load_der_x509_certificate(old.der)
        detail = f"renewal of serial {old.serial:x} ({old.username})"
        if old.ca != ctx.ca:
            raise ScepFailure(
                FailInfo.BAD_CERT_ID, "the signing certificate is not from this CA", detail=detail
            )
        if old.alias is not None and old.alias != ctx.alias:
            # An alias's secret, profiles and approvals guard its certificates; one from
            # another alias of the same CA does not vouch for a device here.
            raise ScepFailure(
                FailInfo.BAD_CERT_ID,
                "the signing certificate was issued on another alias",
                detail=f"{detail}; issued on {old.alias!r}",
            )
        if old.revoked_at is not None:
            raise ScepFailure(
                FailInfo.BAD_CERT_ID, "the signing certificate is revoked", detail=detail
            )
        if not old.not_before <= ctx.now <= old.not_after:
            raise ScepFailure(
                FailInfo.BAD_TIME, "the signing certificate is not valid now", detail=detail
            )
        if old.username is None:
            raise ScepFailure(
                FailInfo.BAD_CERT_ID, "the signing certificate has no end entity", detail=detail
            )
        latest = await env.store.latest_certificate(old.username, old.ca)
        if latest is not None and latest.serial != old.serial:
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                "a newer certificate exists; renew with that one",
                detail=f"{detail}; latest is {latest.serial:x}",
            )
        if username_of(csr.subject) != username_of(cert.subject):
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                "a renewal must keep the subject of the certificate it renews",
                detail=f"{detail}; requested {csr.subject.rfc4514_string()}",
            )
        # EJBCA: only once the latest certificate has passed half its validity.
        earliest = old.not_before + (old.not_after - old.not_before) * self._settings.after_fraction
        if ctx.now < earliest:
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                f"renewal is allowed from {earliest:%Y-%m-%d %H:%M} UTC",
                detail=f"{detail}; too early",
            )
        if not self._settings.allow_same_key and csr.public_key == cert.public_key():
            raise ScepFailure(
                FailInfo.BAD_REQUEST, "a renewal must use a new key", detail=f"{detail}; same key"
            )
        return replace(ctx, authenticated=True, renewal_of=old, username=old.username)
