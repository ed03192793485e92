"""The immutable snapshot of what is being served, swapped as a whole on reload."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.ca.local import LocalCA
from gateway.config.model import AliasConfig, CertificateProfile, CrlSettings
from gateway.errors import NotFound, UnknownAlias
from gateway.keys.files import KeyPair
from gateway.logs import clip
from gateway.policy.pipeline import Pipeline
from gateway.scep import caps, cms

CA_CERT = "application/x-x509-ca-cert"
CA_RA_CERT = "application/x-x509-ca-ra-cert"
CA_RA_CERT_CHAIN = "application/x-x509-ca-ra-cert-chain"
NEXT_CA_CERT = "application/x-x509-next-ca-cert"


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class CaRuntime:
    """One CA key generation; ``next`` is the rollover generation (same name), if any."""

    name: str
    issuer: LocalCA
    chain: tuple[x509.Certificate, ...]  # the CA's issuers, nearest first (may be empty)
    ra_signer: KeyPair | None = None
    ra_encrypter: KeyPair | None = None
    crl: CrlSettings = field(default_factory=CrlSettings)
    next: CaRuntime | None = None

    @property
    def certificate(self) -> x509.Certificate:
        return self.issuer.certificate

    @property
    def subject(self) -> x509.Name:
        return self.issuer.certificate.subject

    @cached_property
    def certificate_der(self) -> bytes:
        """What GetCACert answers most often, encoded once."""
        return der(self.certificate)

    @cached_property
    def key_id(self) -> str:
        """Short hex of the key identifier: names this generation's CRL series and URL."""
        ski = x509.SubjectKeyIdentifier.from_public_key(self.certificate.public_key())
        return ski.digest.hex()[:16]

    @property
    def generations(self) -> tuple[CaRuntime, ...]:
        return (self,) if self.next is None else (self, self.next)

    def at(self, now: datetime) -> CaRuntime:
        """The generation that issues now (RFC 8894 2.2 / draft App. E: switch at activation)."""
        upcoming = self.next
        if upcoming is not None and now >= upcoming.certificate.not_valid_before_utc:
            return upcoming
        return self

    def upcoming(self, now: datetime) -> CaRuntime | None:
        """The rollover generation while it is not active yet (what GetNextCACert returns)."""
        upcoming = self.next
        if upcoming is not None and now < upcoming.certificate.not_valid_before_utc:
            return upcoming
        return None


@dataclass(frozen=True)
class ScepKeys:
    """The keys that answer for one CA generation on one alias: the CA pair or the RA pair."""

    ca: CaRuntime
    signer: KeyPair
    decrypter: KeyPair


@dataclass(frozen=True)
class AliasRuntime:
    config: AliasConfig
    own_ca: CaRuntime | None
    cas: dict[str, CaRuntime]  # every CA this alias serves, by name
    keys: tuple[ScepKeys, ...]  # one per served CA generation, own CA first
    pipeline: Pipeline
    certificate_profile: CertificateProfile

    @property
    def name(self) -> str:
        return self.config.name

    def select_ca(self, message: str | None) -> CaRuntime:
        """GetCACert/GetCACaps CA selection by the `message` parameter.

        A CA name the alias serves selects that CA. Anything else gets the alias's own CA:
        clients send placeholders by default (certmonger `0`, sscep `CAIdentifier`), unless
        the alias rejects unknown identifiers. Only an alias without a CA of its own follows
        EJBCA (alias name as CA name, else 404).
        """
        if message and message in self.cas:
            return self.cas[message]
        if self.own_ca is not None:
            if (
                message
                and self.config.unknown_ca_identifier == "reject"
                and message not in self.config.ca_identifiers
            ):
                raise NotFound("unknown CA identifier", detail=f"message={message!r}")
            return self.own_ca
        if self.config.name in self.cas:
            return self.cas[self.config.name]
        raise NotFound("no CA for this request", detail=f"message={message!r}")

    def keys_for(self, ca: CaRuntime) -> ScepKeys:
        return next(k for k in self.keys if k.ca is ca)

    def issuer_for(self, keys: ScepKeys, now: datetime) -> ScepKeys:
        """Which generation issues a request that ``keys`` decrypted.

        A request encrypted to the rollover certificate before activation is issued by the new
        key (draft-nourse-scep App. E); anything else by the generation active now.
        """
        base = self.cas[keys.ca.name]
        if keys.ca is base.next and base.upcoming(now) is not None:
            return keys
        return self.keys_for(base.at(now))

    def capabilities(self, ca: CaRuntime, now: datetime) -> bytes:
        # CAPS-04: GetNextCACert exactly while a rollover certificate waits for activation.
        return caps.render(
            caps.capabilities(
                self.config.capabilities,
                renewal=self.config.renewal.enabled,
                next_ca_cert=ca.upcoming(now) is not None,
            )
        )

    def _chain(self, ca: CaRuntime) -> list[x509.Certificate]:
        chain = [ca.certificate, *ca.chain]
        # EJBCA sends root first ("MS likes it reverse?"); RFC 8894 issuing CA first.
        return chain[::-1] if self.config.chain_order == "root_first" else chain

    def _published(self, ca: CaRuntime) -> list[x509.Certificate]:
        if self.config.scep_keys == "ra":
            keys = self.keys_for(ca)
            # CACERT-03/05: RA certificates first, then the CA and its chain.
            return [keys.decrypter.certificate, keys.signer.certificate, *self._chain(ca)]
        return self._chain(ca)

    def ca_certificates(self, ca: CaRuntime) -> tuple[bytes, str]:
        """GetCACert body and content type (RFC 8894 4.2.1)."""
        if self.config.scep_keys == "ra" or self.config.return_ca_chain:
            return cms.certs_only([der(c) for c in self._published(ca)]), CA_RA_CERT
        return ca.certificate_der, CA_CERT

    def ca_chain(self, ca: CaRuntime) -> bytes:
        """GetCACertChain (draft-nourse-scep <= 18, still served by EJBCA)."""
        return cms.certs_only([der(c) for c in self._chain(ca)])

    def next_ca_certificates(self, ca: CaRuntime, now: datetime) -> bytes:
        """GetNextCACert (RFC 8894 4.7.1): the rollover certificates, signed by the current key.

        NEXT-02: the new certificates are both the signed content (RFC) and the outer
        `certificates` (where sscep and jscep read them); the current CA is not in the outer
        set, so no client takes it for the next one.
        """
        upcoming = ca.upcoming(now)
        if upcoming is None:
            # NEXT-03: no rollover certificate, so the request is refused.
            raise NotFound("no rollover CA certificate", status=403)
        published = [der(c) for c in self._published(upcoming)]
        signer = self.keys_for(ca.at(now)).signer
        return cms.sign(cms.certs_only(published), signer, "sha256", [], published)


@dataclass(frozen=True)
class Snapshot:
    aliases: dict[str, AliasRuntime] = field(default_factory=dict)
    cas: dict[str, CaRuntime] = field(default_factory=dict)

    def alias(self, name: str) -> AliasRuntime:
        try:
            return self.aliases[name]
        except KeyError:
            raise UnknownAlias("unknown SCEP alias", detail=f"unknown alias {clip(name)}") from None
