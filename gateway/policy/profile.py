"""Profile phase: the subject and the requested key and SANs must fit the profiles.

Every refusal is FAILURE badRequest with a reason for the client and a precise one for the
operator's log.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.config.model import CertificateProfile, EndEntityProfile
from gateway.errors import FailInfo, ScepFailure
from gateway.policy import dn, names
from gateway.policy.context import EnrollmentContext, Pending, PolicyEnv


def _refuse(text: str, detail: str) -> ScepFailure:
    return ScepFailure(FailInfo.BAD_REQUEST, text, detail=detail)


def with_defaults(subject: x509.Name, defaults: dict[str, str]) -> x509.Name:
    missing = [
        x509.RelativeDistinguishedName([x509.NameAttribute(dn.FIELDS[name], value)])
        for name, value in defaults.items()
        if not dn.values(subject, name)
    ]
    # RFC 4514 strings list the most specific RDN first; defaults (O, C, ...) are less
    # specific, so they go in front of the encoded sequence.
    return x509.Name([*missing, *subject.rdns]) if missing else subject


class EndEntityProfilePolicy:
    """``profile.end_entity``: required, allowed and default subject DN fields."""

    def __init__(self, profile: EndEntityProfile) -> None:
        self._profile = profile

    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        if ctx.subject is None:
            raise _refuse("no subject", "profile.end_entity ran before naming")
        subject = with_defaults(ctx.subject, dict(self._profile.defaults))
        for name in self._profile.required:
            if not dn.values(subject, name):
                raise _refuse(
                    f"the subject lacks the required field {name}",
                    f"profile {self._profile.name}: {subject.rfc4514_string()} lacks {name}",
                )
        allowed = self._profile.allowed
        if allowed is not None:
            for attr in subject:
                name = dn.field_name(attr.oid)
                if name not in allowed:
                    raise _refuse(
                        f"the subject field {name} is not allowed",
                        f"profile {self._profile.name}: {name} not in {list(allowed)}",
                    )
        return replace(ctx, subject=subject)


class _SanMatcher:
    """The allow-list of ``subject_alt_names``, parsed once (the loader validated it)."""

    def __init__(self, profile: CertificateProfile) -> None:
        rules = profile.subject_alt_names
        self.wildcards = rules.allow_wildcards
        self.dns = tuple(names.parse_dns_pattern(p) for p in rules.dns)
        self.email = tuple(names.parse_email_pattern(p) for p in rules.email)
        self.uri = tuple(names.parse_uri_pattern(p) for p in rules.uri)
        self.ip = tuple(names.parse_network(p) for p in rules.ip)

    def check(self, name: x509.GeneralName) -> bool:
        """Whether ``name`` matches the allow-list; NameRefused unless it is well-formed
        (every mode that issues SANs). Each name is parsed once, for both."""
        names.check_value_text(name)
        if isinstance(name, x509.DNSName):
            labels = names.check_dns_name(name.value, allow_wildcard=self.wildcards)
            return names.dns_matches(labels, self.dns)
        if isinstance(name, x509.RFC822Name):
            email = names.check_email(name.value)
            return any(p.matches(email) for p in self.email)
        if isinstance(name, x509.UniformResourceIdentifier):
            uri = names.check_uri(name.value)
            return any(p.matches(uri) for p in self.uri)
        if isinstance(name, x509.IPAddress) and isinstance(
            name.value, ipaddress.IPv4Address | ipaddress.IPv6Address
        ):
            return names.ip_allowed(name.value, self.ip)
        return False


class CertificateProfilePolicy:
    """``profile.certificate``: key type and size, and what happens to requested SANs."""

    def __init__(self, profile: CertificateProfile) -> None:
        self._profile = profile
        self._sans = _SanMatcher(profile)

    def _check_key(self, ctx: EnrollmentContext) -> None:
        csr = ctx.request.csr
        assert csr is not None  # PKCSReq/RenewalReq always carry one
        key, allowed, name = csr.public_key, self._profile.key_algorithms, self._profile.name
        if isinstance(key, rsa.RSAPublicKey):
            if allowed.rsa_min_bits is None:
                raise _refuse("RSA keys are not allowed", f"profile {name}: no rsa")
            if not allowed.rsa_min_bits <= key.key_size <= allowed.rsa_max_bits:
                raise _refuse(
                    f"RSA key size {key.key_size} is not allowed",
                    f"profile {name}: RSA {key.key_size} outside "
                    f"{allowed.rsa_min_bits}..{allowed.rsa_max_bits}",
                )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in allowed.ec_curves:
                raise _refuse(
                    f"EC curve {key.curve.name} is not allowed",
                    f"profile {name}: curve {key.curve.name} not in {list(allowed.ec_curves)}",
                )
        elif isinstance(key, ed25519.Ed25519PublicKey):
            if not allowed.ed25519:
                raise _refuse("Ed25519 keys are not allowed", f"profile {name}: no ed25519")
        else:
            raise _refuse("this key type is not allowed", f"profile {name}: {type(key).__name__}")

    async def apply(self, ctx: EnrollmentContext, env: PolicyEnv) -> EnrollmentContext | Pending:
        self._check_key(ctx)
        csr = ctx.request.csr
        requested = csr.subject_alt_names if csr else ()
        mode = self._profile.subject_alt_names.mode
        if mode == "drop" or not requested:
            return replace(ctx, subject_alt_names=())
        for name in requested:
            try:
                allowed = self._sans.check(name)
            except names.NameRefused as exc:
                raise _refuse(
                    "a requested subject alternative name is not allowed",
                    f"profile {self._profile.name}: SAN {name!r}: {exc}",
                ) from None
            if mode == "allow_list" and not allowed:
                raise _refuse(
                    "a requested subject alternative name is not allowed",
                    f"profile {self._profile.name}: SAN {name!r} not in the allow-list",
                )
        return replace(ctx, subject_alt_names=tuple(requested))
