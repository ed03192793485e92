"""The fixed phase pipeline and the registry of policy types (DESIGN.md section 4).

The gateway fixes the order of the phases; an alias only chooses which policies fill each
phase (``policies:`` in its YAML), and by default gets what its mode, renewal, approval and
profile settings imply.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from gateway.config.model import (
    PHASES,
    AliasConfig,
    CertificateProfile,
    EndEntityProfile,
    PolicyConfig,
    SecretRef,
)
from gateway.errors import ConfigError, ConfigIssue, FailInfo, ScepFailure
from gateway.policy.approval import ManualApproval
from gateway.policy.authenticate import AUTH_FAILED, EndEntityChallenge, StaticChallenge
from gateway.policy.authorize import SubjectPattern
from gateway.policy.context import EnrollmentContext, Pending, Policy, PolicyEnv
from gateway.policy.names import NameKey, NameRefused, check_subject_text, name_key
from gateway.policy.naming import EndEntityNaming, SchemeNaming
from gateway.policy.profile import CertificateProfilePolicy, EndEntityProfilePolicy
from gateway.policy.renewal import SignerCertificateRenewal


@dataclass(frozen=True)
class BuildContext:
    """What building a policy may look at: the alias, its profiles, its secrets."""

    alias: AliasConfig
    certificate_profile: CertificateProfile
    end_entity_profile: EndEntityProfile
    secret: Callable[[SecretRef, str], bytes]
    # name_key() of every CA and RA certificate subject the snapshot serves.
    reserved_subjects: frozenset[NameKey] = frozenset()


@dataclass(frozen=True)
class PolicyType:
    phase: str
    build: Callable[[Mapping[str, Any], BuildContext], Policy]


def _static_challenge(params: Mapping[str, Any], b: BuildContext) -> Policy:
    value = params["secret"]
    ref = value if isinstance(value, SecretRef) else SecretRef(**value)
    return StaticChallenge(b.secret(ref, "$.secret"), renewal_enabled=b.alias.renewal.enabled)


def _subject_pattern(params: Mapping[str, Any], b: BuildContext) -> Policy:
    try:
        pattern = re.compile(params["pattern"])
    except re.error as exc:
        # The pattern is config, not a secret; the message names where it fails.
        raise ConfigError(
            [ConfigIssue(b.alias.source, "$.pattern", f"invalid regular expression: {exc}")]
        ) from None
    return SubjectPattern(params["field"], pattern)


TYPES: dict[str, PolicyType] = {
    "challenge.end_entity": PolicyType(
        "authenticate",
        lambda p, b: EndEntityChallenge(
            renewal_enabled=b.alias.renewal.enabled,
            max_failed_attempts=b.end_entity_profile.max_failed_attempts,
        ),
    ),
    "challenge.static": PolicyType("authenticate", _static_challenge),
    "authorize.subject_pattern": PolicyType("authorize", _subject_pattern),
    "renewal.signer_certificate": PolicyType(
        "renewal", lambda p, b: SignerCertificateRenewal(b.alias.renewal)
    ),
    "naming.end_entity": PolicyType("naming", lambda p, b: EndEntityNaming()),
    "naming.scheme": PolicyType("naming", lambda p, b: SchemeNaming(b.alias.ra.name)),
    "approval.manual": PolicyType(
        "approval",
        lambda p, b: ManualApproval(
            b.alias.name, b.alias.approval.expire_hours, b.alias.approval.max_pending
        ),
    ),
    "profile.end_entity": PolicyType(
        "profile", lambda p, b: EndEntityProfilePolicy(b.end_entity_profile)
    ),
    "profile.certificate": PolicyType(
        "profile", lambda p, b: CertificateProfilePolicy(b.certificate_profile)
    ),
}


def default_policies(
    alias: AliasConfig, end_entity_profile: EndEntityProfile
) -> dict[str, tuple[PolicyConfig, ...]]:
    """What an alias gets for each phase it does not configure itself."""
    naming = "naming.scheme" if alias.mode == "ra" else "naming.end_entity"
    if alias.mode == "ra" and alias.ra.secret is not None:
        authenticate = (PolicyConfig("challenge.static", {"secret": alias.ra.secret}, "$.ra"),)
    else:
        authenticate = (PolicyConfig("challenge.end_entity", {}, "$.mode"),)
    defaults: dict[str, tuple[PolicyConfig, ...]] = {
        "authenticate": authenticate,
        "authorize": (),
        # Always present: without renewal enabled it refuses requests that only an issued
        # certificate vouches for.
        "renewal": (PolicyConfig("renewal.signer_certificate", {}, "$.renewal"),),
        "naming": (PolicyConfig(naming, {}, "$.mode"),),
        "profile": (
            PolicyConfig("profile.end_entity", {}, "$.end_entity_profile"),
            PolicyConfig("profile.certificate", {}, "$.certificate_profile"),
        ),
        "approval": (PolicyConfig("approval.manual", {}, "$.approval"),)
        if alias.approval.required or end_entity_profile.approval_required
        else (),
    }
    return {phase: alias.policies.get(phase, defaults[phase]) for phase in PHASES}


@dataclass(frozen=True)
class Pipeline:
    phases: tuple[tuple[str, tuple[Policy, ...]], ...]
    names: tuple[tuple[str, tuple[str, ...]], ...]  # for --explain and logs
    reserved_subjects: frozenset[NameKey] = frozenset()

    def _check_subject(self, subject: x509.Name) -> None:
        """Whatever policies an alias has, the subject it is given passes these checks."""
        try:
            check_subject_text(subject)
        except NameRefused as exc:
            raise ScepFailure(
                FailInfo.BAD_REQUEST, "the subject is malformed", detail=str(exc)
            ) from None
        if name_key(subject) in self.reserved_subjects:
            # A leaf named like a CA or RA certificate would be taken for it by path
            # building that goes by name (RFC 5280 6.1: names chain certificates).
            raise ScepFailure(
                FailInfo.BAD_REQUEST,
                "the subject is the name of a CA or RA certificate",
                detail=f"subject {subject.rfc4514_string()!r} is reserved",
            )

    async def run(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        checked: x509.Name | None = None
        for _phase, policies in self.phases:
            for policy in policies:
                outcome = await policy.apply(ctx, env)
                if isinstance(outcome, Pending):
                    return outcome
                ctx = outcome
            # After each phase that set or changed it, so a subject waiting for approval was
            # checked too.
            if ctx.subject is not None and ctx.subject is not checked:
                self._check_subject(ctx.subject)
                checked = ctx.subject
        if not ctx.authenticated:
            # Nothing vouched for the requester (e.g. signed by an issued certificate on an
            # alias without renewal, and no challenge).
            raise ScepFailure(FailInfo.BAD_REQUEST, AUTH_FAILED, detail="no policy authenticated")
        return ctx


def build(b: BuildContext) -> Pipeline:
    """Build every policy of an alias, or raise ConfigError naming each bad one."""
    issues: list[ConfigIssue] = []
    phases = []
    for phase, configs in default_policies(b.alias, b.end_entity_profile).items():
        built: list[Policy] = []
        for cfg in configs:
            kind = TYPES.get(cfg.type)
            if kind is None:
                issues.append(
                    ConfigIssue(b.alias.source, cfg.where, f"unknown policy type {cfg.type!r}")
                )
            elif kind.phase != phase:
                issues.append(
                    ConfigIssue(
                        b.alias.source,
                        cfg.where,
                        f"{cfg.type} belongs in phase {kind.phase}, not {phase}",
                    )
                )
            else:
                try:
                    built.append(kind.build(cfg.parameters, b))
                except ConfigError as exc:
                    issues.extend(
                        ConfigIssue(i.file, cfg.where + i.path.removeprefix("$"), i.message)
                        for i in exc.issues
                    )
        phases.append((phase, tuple(built)))
    if issues:
        raise ConfigError(issues)
    phase_names = tuple(
        (phase, tuple(c.type for c in configs))
        for phase, configs in default_policies(b.alias, b.end_entity_profile).items()
    )
    return Pipeline(phases=tuple(phases), names=phase_names, reserved_subjects=b.reserved_subjects)
