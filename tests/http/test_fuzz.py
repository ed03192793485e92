"""Bad input: arbitrary and mutated messages end in our own answers, never in a 500.

Every outcome is an HTTP 4xx or a signed CertRep FAILURE; nothing is ever stored.
"""

from __future__ import annotations

import base64
import os
from functools import cache
from urllib.parse import quote

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import MalformedRequest, ScepFailure
from gateway.keys.files import KeyPair
from gateway.scep import client, decode
from gateway.scep.messages import MessageType, PkiStatus
from tests import shapes
from tests.conftest import Gateway, body_of
from tests.shapes import resigned_certificate
from tests.support import Device

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HTTP_REFUSALS = {400, 403, 404, 405, 413, 414}  # 403: GetNextCACert, no rollover


@cache
def _ca() -> KeyPair:
    from datetime import UTC, datetime, timedelta

    from gateway.ca.local import create_root, generate_key

    key = generate_key()
    cert = create_root(
        x509.Name.from_rfc4514_string("CN=Fuzz CA"),
        key,
        serial=1,
        now=datetime.now(UTC),
        validity=timedelta(days=1),
    )
    return KeyPair(cert, key)


@cache
def _valid_message() -> bytes:
    return Device("fuzz").pkcsreq("challenge", [_ca().certificate])


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    if kind == "delete":
        return data[:at] + data[at + draw(st.integers(1, 64)) :]
    other = draw(st.integers(0, len(data) - 1))
    return data[:at] + data[other : other + draw(st.integers(1, 64))] + data[at:]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = _valid_message()
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        data = _mutate(data, draw)
    return data


@cache
def _device() -> Device:
    return Device("fuzz-inner")


def _sign(enveloped: bytes) -> bytes:
    return client.sign_pki_message(
        enveloped, "19", signer=_device().identity, transaction_id="fuzz", sender_nonce=b"n" * 16
    )


@st.composite
def mutated_envelope(
    draw: st.DrawFn, recipient: x509.Certificate | None = None, challenge: str = "challenge"
) -> bytes:
    """A correctly signed message around a mutated EnvelopedData: fuzzes decryption."""
    enveloped = client.envelope_for(
        _device().csr(challenge), [recipient or _ca().certificate], random=b"k" * 64
    )
    return _sign(_mutate(enveloped, draw))


@st.composite
def mutated_csr(
    draw: st.DrawFn, recipient: x509.Certificate | None = None, challenge: str = "challenge"
) -> bytes:
    """Signed and correctly encrypted, but the CSR inside is mutated: fuzzes PKCS#10 parsing."""
    csr = _mutate(_device().csr(challenge), draw)
    return _sign(client.envelope_for(csr, [recipient or _ca().certificate], random=b"k" * 64))


def _decode(data: bytes) -> None:
    try:
        message = decode.read_signed_message(data)
    except MalformedRequest:
        return
    try:
        kind = decode.check(message)
        decode.open_request(message, kind, [_ca()], fallback_key=os.urandom)
    except ScepFailure:
        return


@FUZZ
@given(st.binary(max_size=2048))
def test_decoder_arbitrary_bytes_raise_only_our_errors(data: bytes) -> None:
    _decode(data)


@FUZZ
@given(st.one_of(mutated(), mutated_envelope(), mutated_csr()))
def test_decoder_mutated_messages_raise_only_our_errors(data: bytes) -> None:
    _decode(data)


def test_the_unmutated_message_decodes() -> None:
    """The fuzz seed is valid, so mutations start from a message that gets deep."""
    message = decode.read_signed_message(_valid_message())
    request = decode.open_request(message, decode.check(message), [_ca()], fallback_key=os.urandom)
    assert request.csr is not None
    assert request.csr.challenge_password == "challenge"


async def _assert_refused(gateway: Gateway, response_status: int, body: bytes) -> None:
    if response_status == 200:
        reply = client.read_cert_rep(body)
        assert reply.status is PkiStatus.FAILURE
    else:
        assert response_status in HTTP_REFUSALS, (response_status, body[:200])
    assert await gateway.services.store.count_certificates() == 0


@pytest.mark.asyncio
@FUZZ
@given(body=st.one_of(st.binary(max_size=2048), mutated(), mutated_envelope(), mutated_csr()))
async def test_http_post_never_500(gateway: Gateway, body: bytes) -> None:
    response = await gateway.client.post("/scep/scep/pkiclient.exe", data=body)
    await _assert_refused(gateway, response.status_code, await body_of(response))


@pytest.mark.asyncio
@FUZZ
@given(
    operation=st.sampled_from(
        ["PKIOperation", "GetCACert", "GetCACaps", "GetNextCACert", "GetCACertChain", "x", ""]
    ),
    message=st.one_of(
        # What can stand in a request line: printable ASCII, and any bytes percent-encoded.
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200),
        st.binary(max_size=200).map(quote),
        mutated().map(lambda d: quote(base64.b64encode(d).decode(), safe="")),
    ),
    alias=st.sampled_from(["scep", "ndes", "unknown", "a" * 40]),
    method=st.sampled_from(["GET", "POST"]),
)
async def test_http_queries_never_500(
    gateway: Gateway, operation: str, message: str, alias: str, method: str
) -> None:
    query = f"operation={quote(operation)}&message={message}"
    url = f"/scep/{alias}/pkiclient.exe?{query}"
    if method == "GET":
        response = await gateway.client.get(url)
    else:
        response = await gateway.client.post(url, data=message.encode())
    status = response.status_code
    body = await body_of(response)
    if status == 200 and operation != "PKIOperation":
        return  # a valid GetCACert/GetCACaps answer
    await _assert_refused(gateway, status, body)


@pytest.mark.asyncio
@FUZZ
@given(data=st.data())
async def test_http_post_to_our_own_keys_never_500(gateway: Gateway, data: st.DataObject) -> None:
    """Encrypted to the gateway's own CA with the RA secret, so that mutations reach key
    transport, the CSR, the policies and issuance: every answer is a CertRep or a refusal."""
    recipient = await gateway.ca_certificate("ra")
    secret = (gateway.settings.data_dir / "ra-demo.secret").read_text().strip()
    body = data.draw(st.one_of(mutated_envelope(recipient, secret), mutated_csr(recipient, secret)))
    response = await gateway.client.post("/scep/ra/pkiclient.exe", data=body)
    answer = await body_of(response)
    if response.status_code == 200:
        reply = client.read_cert_rep(answer, recipient=_device().identity)
        assert reply.status in (PkiStatus.SUCCESS, PkiStatus.FAILURE), reply
    else:
        assert response.status_code in HTTP_REFUSALS, (response.status_code, answer[:200])


@pytest.mark.asyncio
async def test_the_unmutated_message_to_our_own_keys_is_issued(gateway: Gateway) -> None:
    """The seed of the fuzz test above gets all the way to issuance."""
    recipient = await gateway.ca_certificate("ra")
    secret = (gateway.settings.data_dir / "ra-demo.secret").read_text().strip()
    body = _sign(client.envelope_for(_device().csr(secret), [recipient], random=b"k" * 64))
    response = await gateway.client.post("/scep/ra/pkiclient.exe", data=body)
    reply = client.read_cert_rep(await body_of(response), recipient=_device().identity)
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text


@pytest.mark.asyncio
@FUZZ
@given(data=st.data())
async def test_http_odd_shapes_never_500(gateway: Gateway, data: st.DataObject) -> None:
    """Huge INTEGERs, signers named by subjectKeyIdentifier and every DN attribute type, in the
    signer certificate, the CSR and the IssuerAndSerialNumber of GetCert and GetCRL."""
    recipient = await gateway.ca_certificate("ra")
    secret = (gateway.settings.data_dir / "ra-demo.secret").read_text().strip()
    device = _device()
    ski = os.urandom(20) if data.draw(st.booleans()) else None
    signer = resigned_certificate(
        device.key,
        serial=data.draw(shapes.serials),
        issuer=data.draw(shapes.names()),
        subject=data.draw(shapes.names()),
        ski=ski,
    )
    kind = data.draw(
        st.sampled_from([MessageType.PKCS_REQ, MessageType.GET_CERT, MessageType.GET_CRL])
    )
    if kind is MessageType.PKCS_REQ:
        payload = shapes.raw_csr(device.key, data.draw(shapes.names()), secret)
    else:
        payload = cms.IssuerAndSerialNumber(
            {"issuer": data.draw(shapes.names()), "serial_number": data.draw(shapes.serials)}
        ).dump()
    enveloped = client.envelope_for(payload, [recipient], random=os.urandom(64))
    body = shapes.raw_pki_message(device.key, signer, enveloped, kind=kind, by_ski=ski)
    response = await gateway.client.post("/scep/ra/pkiclient.exe", data=body)
    answer = await body_of(response)
    if response.status_code == 200:
        reply = decode.read_signed_message(answer, [recipient.public_bytes(Encoding.DER)])
        decode.verify(reply)
        assert reply.transaction_id == "odd-shape"
    else:
        assert response.status_code in HTTP_REFUSALS, (response.status_code, answer[:200])


def test_der_of_the_ca_is_what_the_fuzzer_encrypts_to() -> None:
    der = _ca().certificate.public_bytes(serialization.Encoding.DER)
    assert x509.load_der_x509_certificate(der).subject.rfc4514_string() == "CN=Fuzz CA"
