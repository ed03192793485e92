"""CA rollover (draft-nourse-scep App. E, RFC 8894 4.7): GetNextCACert, activation, renewal.

The clock is the test's: activation happens when the test moves it, not after a sleep.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.cli import main
from gateway.scep import client
from gateway.scep.messages import PkiStatus
from tests.conftest import Gateway, body_of, running_gateway
from tests.support import Clock, Device, fresh_key, register

pytestmark = pytest.mark.asyncio

RENEW_ALIAS = {
    "aliases/renew.yaml": "ca: ManagementCA\nrenewal: {enabled: true, after_fraction: 0}\n",
}


@pytest.fixture
async def rolling(tmp_path: Path) -> AsyncIterator[tuple[Gateway, Clock]]:
    clock = Clock()
    async with running_gateway(
        tmp_path, tmp_path / "data", RENEW_ALIAS, watch=True, clock=clock
    ) as gw:
        yield gw, clock


def _openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["openssl", *args], input=data, capture_output=True, timeout=30, check=False
    )


async def _get(gw: Gateway, operation: str) -> tuple[int, str, bytes]:
    response = await gw.client.get(f"/scep/scep/pkiclient.exe?operation={operation}")
    return response.status_code, response.headers["Content-Type"], await body_of(response)


async def _roll(gw: Gateway, *args: str) -> None:
    generation = gw.services.reloader.state.generation
    settings = gw.settings
    code = main(
        [
            "ca",
            "rollover",
            "ManagementCA",
            *args,
            "--config",
            str(settings.config_dir),
            "--data-dir",
            str(settings.data_dir),
        ]
    )
    assert code == 0
    await gw.services.reloader.wait_for(lambda s: s.generation > generation)


async def _enroll(
    gw: Gateway, name: str, recipient: x509.Certificate, alias: str = "scep"
) -> tuple[Device, client.CertRep]:
    await register(gw.services.store, name, "code")
    device = Device(name)
    return device, device.read(await gw.pki(device.pkcsreq("code", [recipient]), alias))


async def test_rollover_lifecycle(rolling: tuple[Gateway, Clock], tmp_path: Path) -> None:
    gw, clock = rolling
    old_ca = await gw.ca_certificate()
    status, _, body = await _get(gw, "GetCACaps")
    assert b"GetNextCACert" not in body
    assert (await _get(gw, "GetNextCACert"))[0] == 403

    holder, before = await _enroll(gw, "before", old_ca, "renew")  # renews there later
    assert before.status is PkiStatus.SUCCESS
    await _roll(gw, "--in-hours", "1")

    # Waiting for activation: advertised and served, signed by the current CA.
    assert b"GetNextCACert\n" in (await _get(gw, "GetCACaps"))[2]
    status, content_type, body = await _get(gw, "GetNextCACert")
    assert (status, content_type) == (200, "application/x-x509-next-ca-cert")
    old_pem = tmp_path / "old-ca.pem"
    old_pem.write_bytes(old_ca.public_bytes(serialization.Encoding.PEM))
    # NEXT-02: the current CA is not in the set (a client could take it for "next"); the
    # client verifies with the CA certificate it already holds.
    verified = _openssl(
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-certfile",
        str(old_pem),
        "-CAfile",
        str(old_pem),
        "-purpose",
        "any",
        data=body,
    )
    assert verified.returncode == 0, verified.stderr
    next_ca = gw.services.snapshot().cas["ManagementCA"].next
    assert next_ca is not None
    assert next_ca.certificate != old_ca
    # NEXT-02: exactly the new CA in the outer set (where sscep and jscep read it), never
    # the current one.
    assert _outer_certificates(body) == [next_ca.certificate]
    # An alias with an RA pair also gets the next RA pair, signed by the current RA signer.
    ndes = await gw.client.get("/scep/ndes/pkiclient.exe?operation=GetNextCACert")
    assert ndes.status_code == 200
    ndes_body = await body_of(ndes)
    next_ra = gw.services.snapshot().alias("ndes").keys_for(next_ca)
    assert _outer_certificates(ndes_body) == [
        next_ra.decrypter.certificate,
        next_ra.signer.certificate,
        next_ca.certificate,
    ]
    ra_signer = gw.settings.data_dir / "ca/ManagementCA/ra-signer.pem"
    verified = _openssl(
        "cms",
        "-verify",
        "-inform",
        "DER",
        "-certfile",
        str(ra_signer),
        "-CAfile",
        str(old_pem),
        "-purpose",
        "any",
        data=ndes_body,
    )
    assert verified.returncode == 0, verified.stderr
    assert (await gw.ca_certificate()) == old_ca

    # A request encrypted to the next CA before activation is issued by the next key.
    _, early = await _enroll(gw, "early", next_ca.certificate)
    assert early.status is PkiStatus.SUCCESS
    early.certificates[0].verify_directly_issued_by(next_ca.certificate)

    # Activation: no restart, the clock moves.
    clock.now += timedelta(hours=2)
    assert (await gw.ca_certificate()) == next_ca.certificate
    assert b"GetNextCACert" not in (await _get(gw, "GetCACaps"))[2]
    assert (await _get(gw, "GetNextCACert"))[0] == 403
    _, late = await _enroll(gw, "late", old_ca)  # a client still encrypting to the old CA
    assert late.status is PkiStatus.SUCCESS
    late.certificates[0].verify_directly_issued_by(next_ca.certificate)

    # A certificate of the old CA still renews (no challenge), now from the new CA.
    old_cert = before.certificates[0]
    renewer = Device("before", key=fresh_key())
    renewer.signer = client.Identity(old_cert, holder.key)
    reply = renewer.read(await gw.pki(renewer.pkcsreq(None, gw.recipients("renew")), "renew"))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    reply.certificates[0].verify_directly_issued_by(next_ca.certificate)

    # CRLs: the active key's at the stable URL, each generation's at its key id.
    current = await gw.client.get("/crl/ManagementCA.crl")
    crl = x509.load_der_x509_crl(await body_of(current))
    assert crl.is_signature_valid(next_ca.certificate.public_key())  # type: ignore[arg-type]
    old_id = gw.services.snapshot().cas["ManagementCA"].key_id
    previous = await gw.client.get(f"/crl/ManagementCA/{old_id}.crl")
    old_crl = x509.load_der_x509_crl(await body_of(previous))
    assert old_crl.is_signature_valid(old_ca.public_key())  # type: ignore[arg-type]

    # Revoking a certificate of the new key after activation lists it in the new key's CRL.
    settings = gw.settings
    revoked = await asyncio.to_thread(
        main,
        [
            "cert",
            "revoke",
            f"{late.certificates[0].serial_number:x}",
            "--reason",
            "keyCompromise",
            "--config",
            str(settings.config_dir),
            "--data-dir",
            str(settings.data_dir),
            "--database",
            str(settings.database_url),
        ],
    )
    assert revoked == 0
    active_crl = await body_of(await gw.client.get("/crl/ManagementCA.crl"))
    serial = late.certificates[0].serial_number
    assert x509.load_der_x509_crl(active_crl).get_revoked_certificate_by_serial_number(serial)


async def test_no_second_rollover_over_the_active_key(rolling: tuple[Gateway, Clock]) -> None:
    gw, _ = rolling
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    await _roll(gw, "--activate-at", past)
    next_key = gw.settings.data_dir / "ca/ManagementCA/next/ca.key"
    active = next_key.read_bytes()
    settings = gw.settings
    code = main(
        [
            "ca",
            "rollover",
            "ManagementCA",
            "--in-hours",
            "24",
            "--force",
            "--config",
            str(settings.config_dir),
            "--data-dir",
            str(settings.data_dir),
        ]
    )
    assert code == 1
    assert next_key.read_bytes() == active


async def test_the_next_generation_keeps_the_issuers_in_its_file(
    rolling: tuple[Gateway, Clock],
) -> None:
    """An intermediate CA's next certificate comes from its parent, with the parent after it
    in the file: after activation GetCACertChain must still carry the parent."""
    gw, clock = rolling
    await _roll(gw, "--in-hours", "1")
    parent = await gw.ca_certificate()  # stands in for the parent that issued the next CA
    next_pem = gw.settings.data_dir / "ca/ManagementCA/next/ca.pem"
    generation = gw.services.reloader.state.generation
    next_pem.write_bytes(next_pem.read_bytes() + parent.public_bytes(serialization.Encoding.PEM))
    async with asyncio.timeout(15):  # only a hang fails
        await gw.services.reloader.wait_for(lambda s: s.generation > generation)
    next_ca = gw.services.snapshot().cas["ManagementCA"].next
    assert next_ca is not None
    clock.now += timedelta(hours=2)  # activation
    status, _, body = await _get(gw, "GetCACertChain")
    assert status == 200
    assert _outer_certificates(body) == [next_ca.certificate, parent]


def _outer_certificates(signed_data: bytes) -> list[x509.Certificate]:
    """The `certificates` of a SignedData, in the order they were sent."""
    content = cms.ContentInfo.load(signed_data)["content"]
    return [x509.load_der_x509_certificate(c.chosen.dump()) for c in content["certificates"]]
