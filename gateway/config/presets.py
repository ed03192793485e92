"""Vendor presets: alias defaults that real clients need, each with its reason.

An alias names a preset with ``preset: NAME``; every value here can still be overridden in
the alias file. ``scep-gateway check-config DIR --explain ALIAS`` prints the effective values
and, for each one a preset set, the reason below. Sources are the items of the shared
conformance checklist and client-quirk notes (CISCO-05, REP-03, CAPS-05, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Value:
    value: Any
    reason: str


PRESETS: dict[str, dict[str, Value]] = {
    "jamf": {
        "include_ca_certificate": Value(
            False,
            'Jamf Pro fails with "SCEP unexpectedly returned 2 certs" when a CertRep holds '
            "more than the issued certificate",
        ),
        "return_ca_chain": Value(
            False, "Jamf expects exactly one certificate from GetCACert, like the CertRep"
        ),
    },
    "mobileiron": {
        "ca_identifiers": Value(
            ["MobileIronSCEP"],
            "MobileIron (Ivanti EPMM) always sends message=MobileIronSCEP, whatever the CA",
        ),
        "unknown_ca_identifier": Value(
            "own_ca", "the identifier MobileIron sends names no CA; answer the alias's own"
        ),
    },
    "intune": {
        "mode": Value(
            "ra",
            "Intune's third-party CA integration is RA mode: the gateway creates the end entity "
            "for each device (EJBCA: an RA-mode alias with 'Use Intune')",
        ),
        "approval": Value(
            {"required": False},
            "Intune challenges expire after about 60 minutes: a request parked for approval "
            "could never complete (INT-07)",
        ),
        "include_ca_certificate": Value(
            True,
            "Intune installs the trusted root from its own profile; the CA in the CertRep "
            "lets devices build the chain at once",
        ),
    },
    "cisco-ios": {
        "include_ca_certificate": Value(
            True,
            "Cisco IOS and the Cisco VPN client want the CA certificate in the CertRep "
            "(CISCO-05, EJBCA's includeCA)",
        ),
        "response_digest": Value(
            "mirror",
            "old IOS signs with SHA-1 and cannot verify a SHA-256 answer (CISCO-03, REP-03)",
        ),
        "unknown_ca_identifier": Value(
            "own_ca", "IOS sends its trustpoint label as the CA identifier (CISCO-01, CISCO-08)"
        ),
    },
    "cisco-ise": {
        "include_ca_certificate": Value(
            True,
            "ISE installs the CA from the CertRep for the endpoints it proxies "
            "(inferred from its NDES setup guides, unverified on hardware)",
        ),
        "scep_keys": Value(
            "ra",
            "ISE proxies to NDES-style RAs and selects the encryption and signing "
            "certificates from GetCACert (unverified on hardware)",
        ),
    },
    "windows": {
        "scep_keys": Value(
            "ra",
            "the Windows SCEP client was built against NDES and picks the RA encryption and "
            "signing certificates by key usage (NDES-03, NDES-04)",
        ),
        "response_digest": Value(
            "mirror", "Windows clients that sign with SHA-1 expect the answer in kind (NDES-04)"
        ),
    },
    "apple": {
        "scep_keys": Value(
            "ca",
            "a chain as application/x-x509-ca-ra-cert makes iOS and macOS look for RA "
            "certificates and fail ('SCEP failed to find candidate RA certificates')",
        ),
        "return_ca_chain": Value(False, "iOS and macOS want the single CA certificate"),
        "approval": Value(
            {"required": False},
            "iOS and macOS retry a PENDING answer only a few times, seconds apart, then fail "
            "the profile: an approval could not complete in time",
        ),
        "renewal": Value(
            {"enabled": True},
            "macOS renews with a PKCSReq signed by the old certificate and reports that the "
            "server cannot renew when Renewal is not advertised (CAPS-05)",
        ),
    },
}
