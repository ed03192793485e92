"""The immutable snapshot of what is being served, swapped as a whole on reload."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.ca.local import LocalCA
from gateway.config.model import AliasConfig, CertificateProfile
from gateway.errors import NotFound, UnknownAlias
from gateway.keys.files import KeyPair
from gateway.policy.pipeline import Pipeline
from gateway.scep import caps, cms

CA_CERT = "application/x-x509-ca-cert"
CA_RA_CERT = "application/x-x509-ca-ra-cert"
CA_RA_CERT_CHAIN = "application/x-x509-ca-ra-cert-chain"


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class CaRuntime:
    name: str
    issuer: LocalCA
    chain: tuple[x509.Certificate, ...]  # the CA's issuers, nearest first (may be empty)
    ra_signer: KeyPair | None = None
    ra_encrypter: KeyPair | None = None

    @property
    def certificate(self) -> x509.Certificate:
        return self.issuer.certificate

    @property
    def subject(self) -> x509.Name:
        return self.issuer.certificate.subject


@dataclass(frozen=True)
class ScepKeys:
    """The keys that answer for one CA on one alias: the CA pair or the RA pair."""

    ca: CaRuntime
    signer: KeyPair
    decrypter: KeyPair


@dataclass(frozen=True)
class AliasRuntime:
    config: AliasConfig
    own_ca: CaRuntime | None
    cas: dict[str, CaRuntime]  # every CA this alias serves, by name
    keys: tuple[ScepKeys, ...]  # one per served CA, own CA first
    capabilities: bytes
    pipeline: Pipeline
    certificate_profile: CertificateProfile

    @property
    def name(self) -> str:
        return self.config.name

    def select_ca(self, message: str | None) -> CaRuntime:
        """GetCACert/GetCACaps CA selection by the `message` parameter.

        A CA name the alias serves selects that CA. Anything else gets the alias's own CA:
        clients send placeholders by default (certmonger `0`, sscep `CAIdentifier`). Only an
        alias without a CA of its own follows EJBCA (alias name as CA name, else 404).
        """
        if message and message in self.cas:
            return self.cas[message]
        if self.own_ca is not None:
            return self.own_ca
        if self.config.name in self.cas:
            return self.cas[self.config.name]
        raise NotFound("no CA for this request", detail=f"message={message!r}")

    def keys_for(self, ca: CaRuntime) -> ScepKeys:
        return next(k for k in self.keys if k.ca is ca)

    def _chain(self, ca: CaRuntime) -> list[x509.Certificate]:
        chain = [ca.certificate, *ca.chain]
        # EJBCA sends root first ("MS likes it reverse?"); RFC 8894 issuing CA first.
        return chain[::-1] if self.config.chain_order == "root_first" else chain

    def ca_certificates(self, ca: CaRuntime) -> tuple[bytes, str]:
        """GetCACert body and content type (RFC 8894 4.2.1)."""
        if self.config.scep_keys == "ra":
            keys = self.keys_for(ca)
            # CACERT-03/05: RA certificates first, then the CA and its chain.
            certs = [keys.decrypter.certificate, keys.signer.certificate, *self._chain(ca)]
            return cms.certs_only([_der(c) for c in certs]), CA_RA_CERT
        if self.config.return_ca_chain:
            return cms.certs_only([_der(c) for c in self._chain(ca)]), CA_RA_CERT
        return _der(ca.certificate), CA_CERT

    def ca_chain(self, ca: CaRuntime) -> bytes:
        """GetCACertChain (draft-nourse-scep <= 18, still served by EJBCA)."""
        return cms.certs_only([_der(c) for c in self._chain(ca)])


def capabilities_for(config: AliasConfig) -> bytes:
    return caps.render(
        caps.capabilities(config.capabilities, renewal=config.renewal.enabled, next_ca_cert=False)
    )


@dataclass(frozen=True)
class Snapshot:
    aliases: dict[str, AliasRuntime] = field(default_factory=dict)
    cas: dict[str, CaRuntime] = field(default_factory=dict)

    def alias(self, name: str) -> AliasRuntime:
        try:
            return self.aliases[name]
        except KeyError:
            raise UnknownAlias("unknown SCEP alias", detail=name) from None

    def ca_by_subject(self, subject: x509.Name) -> CaRuntime | None:
        return next((c for c in self.cas.values() if c.subject == subject), None)
