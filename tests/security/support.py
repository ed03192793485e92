"""What the security tests share: a client's view of a real server's answers."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from asn1crypto import cms
from cryptography import x509

from gateway.scep import client
from gateway.scep.messages import PkiStatus
from tests.interop.conftest import Server
from tests.support import Device


def get(server: Server, alias: str, operation: str) -> bytes:
    url = f"{server.url(alias)}?operation={operation}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


def recipient_of(server: Server, alias: str) -> x509.Certificate:
    """The certificate a client encrypts to: the RA encrypter if GetCACert sends the RA pair."""
    body = get(server, alias, "GetCACert")
    try:
        return x509.load_der_x509_certificate(body)
    except ValueError:
        certs = cms.ContentInfo.load(body)["content"]["certificates"]
        loaded = [x509.load_der_x509_certificate(c.chosen.dump()) for c in certs]
        # The encrypter is the certificate with keyEncipherment that is not a CA.
        return next(
            c
            for c in loaded
            if not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            and c.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
        )


@dataclass(frozen=True)
class Answer:
    http_status: int
    content_type: str
    pki_status: PkiStatus
    fail_info: int | None
    fail_info_text: str | None


def ask(server: Server, alias: str, body: bytes, attacker: Device) -> Answer:
    request = urllib.request.Request(
        f"{server.url(alias)}?operation=PKIOperation", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        data = response.read()
        status, content_type = response.status, response.headers["Content-Type"]
    rep = client.read_cert_rep(data, recipient=attacker.identity)
    return Answer(status, content_type, rep.status, rep.fail_info, rep.fail_info_text)
