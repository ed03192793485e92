"""The conformance checklist (shared reference scep-conformance.md), one test per item.

Every test speaks HTTP to the app and reads answers as a client would.
"""

from __future__ import annotations

import base64
import os
from urllib.parse import quote

import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.errors import FailInfo, ScepFailure
from gateway.scep import caps, client
from gateway.scep import cms as scep_cms
from gateway.scep.messages import MessageType, PkiStatus
from tests.conftest import Gateway, body_of
from tests.support import Device, cn, fresh_key, register

pytestmark = pytest.mark.asyncio

PATHS = (
    "/scep/scep/pkiclient.exe",
    "/scep/scep",
    "/scep/pkiclient.exe",
    "/cgi-bin/pkiclient.exe",
    "/ejbca/publicweb/apply/scep/scep/pkiclient.exe",
    "/ejbca/publicweb/apply/scep/pkiclient.exe",
)


async def _caps(gw: Gateway, path: str = "/scep/scep/pkiclient.exe", query: str = "") -> bytes:
    response = await gw.client.get(f"{path}?operation=GetCACaps{query}")
    assert response.status_code == 200
    data: bytes = await body_of(response)
    return data


# 1. HTTP transport -------------------------------------------------------------------------


async def test_http_01_every_path_form_answers_the_same(gateway: Gateway) -> None:
    bodies = {await _caps(gateway, path) for path in PATHS}
    assert len(bodies) == 1
    assert b"POSTPKIOperation" in bodies.pop()


async def test_http_01_unknown_alias_is_404(gateway: Gateway) -> None:
    response = await gateway.client.get("/scep/nope/pkiclient.exe?operation=GetCACaps")
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "text/plain"


@pytest.mark.parametrize("query", ["operation=foo", "", "message=x", "operation="])
async def test_http_02_unknown_or_missing_operation_is_400(gateway: Gateway, query: str) -> None:
    response = await gateway.client.get(f"/scep/scep/pkiclient.exe?{query}")
    assert response.status_code == 400


@pytest.mark.parametrize("operation", ["GetCACaps", "GetCACert", "GetNextCACert"])
async def test_http_03_get_only_operations_refuse_post(gateway: Gateway, operation: str) -> None:
    response = await gateway.client.post(
        f"/scep/scep/pkiclient.exe?operation={operation}", data=b"x"
    )
    assert response.status_code == 405


async def test_http_03_post_without_operation_is_pkioperation(gateway: Gateway) -> None:
    await register(gateway.services.store, "post-noop", "code-1")
    device = Device("post-noop")
    body = device.pkcsreq("code-1", gateway.recipients())
    response = await gateway.client.post("/scep/scep/pkiclient.exe", data=body)
    assert response.status_code == 200
    assert device.read(await body_of(response)).status is PkiStatus.SUCCESS


@pytest.mark.parametrize(
    "content_type", [None, "application/octet-stream", "application/x-pki-message", "text/plain"]
)
async def test_http_04_post_accepts_any_content_type(
    gateway: Gateway, content_type: str | None
) -> None:
    device = Device("ctype")
    headers = {"Content-Type": content_type} if content_type else {}
    response = await gateway.client.post(
        "/scep/scep/pkiclient.exe?operation=PKIOperation",
        data=device.pkcsreq("wrong", gateway.recipients()),
        headers=headers,
    )
    assert response.status_code == 200
    reply = device.read(await body_of(response))
    assert reply.status is PkiStatus.FAILURE  # unknown user, but the body was read


async def test_http_04_body_over_the_bound_is_413(gateway: Gateway) -> None:
    big = b"\x30" * (gateway.settings.max_body_bytes + 1)
    response = await gateway.client.post(
        "/scep/scep/pkiclient.exe?operation=PKIOperation", data=big
    )
    assert response.status_code == 413


def _encodings(der: bytes) -> dict[str, str]:
    b64 = base64.b64encode(der).decode()
    wrapped = "%0A".join(quote(b64[i : i + 64], safe="") for i in range(0, len(b64), 64))
    return {
        "rfc": quote(b64, safe=""),
        "raw-plus-slash": b64.replace("=", "%3D"),  # macOS
        "newlines": wrapped,  # sscep, Cisco IOS
        "no-padding": quote(b64.rstrip("="), safe=""),
    }


@pytest.mark.parametrize("form", ["rfc", "raw-plus-slash", "newlines", "no-padding"])
async def test_http_05_get_message_encodings(gateway: Gateway, form: str) -> None:
    await register(gateway.services.store, f"get-{form}", "code-get")
    device = Device(f"get-{form}")
    body = device.pkcsreq("code-get", gateway.recipients())
    # Make sure the base64 has both + and / so the quirks are exercised.
    message = _encodings(body)[form]
    response = await gateway.client.get(
        f"/scep/scep/pkiclient.exe?operation=PKIOperation&message={message}"
    )
    assert response.status_code == 200
    reply = device.read(await body_of(response))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text


async def test_http_05_bad_base64_is_400(gateway: Gateway) -> None:
    response = await gateway.client.get(
        "/scep/scep/pkiclient.exe?operation=PKIOperation&message=%%%%"
    )
    assert response.status_code == 400


async def test_http_06_url_over_the_bound_is_414(gateway: Gateway) -> None:
    message = "A" * (gateway.settings.max_url_bytes + 10)
    response = await gateway.client.get(
        f"/scep/scep/pkiclient.exe?operation=PKIOperation&message={message}"
    )
    assert response.status_code == 414


async def test_http_08_exact_content_types(gateway: Gateway) -> None:
    expected = {
        "/scep/scep/pkiclient.exe?operation=GetCACaps": "text/plain",
        "/scep/scep/pkiclient.exe?operation=GetCACert": "application/x-x509-ca-cert",
        "/scep/ndes/pkiclient.exe?operation=GetCACert": "application/x-x509-ca-ra-cert",
        "/scep/scep/pkiclient.exe?operation=GetCACertChain": "application/x-x509-ca-ra-cert-chain",
    }
    for url, content_type in expected.items():
        response = await gateway.client.get(url)
        assert response.status_code == 200
        assert response.headers.getlist("Content-Type") == [content_type]
    device = Device("ctype-pki")
    response = await gateway.client.post(
        "/scep/scep/pkiclient.exe", data=device.pkcsreq("x", gateway.recipients())
    )
    assert response.headers.getlist("Content-Type") == ["application/x-pki-message"]


async def test_http_09_refusals_are_signed_certrep_not_http_errors(gateway: Gateway) -> None:
    device = Device("nobody")
    response = await gateway.client.post(
        "/scep/scep/pkiclient.exe", data=device.pkcsreq("whatever", gateway.recipients())
    )
    assert response.status_code == 200
    reply = device.read(await body_of(response))
    assert reply.status is PkiStatus.FAILURE
    assert reply.fail_info == FailInfo.BAD_REQUEST


async def test_http_09_garbage_is_400_not_500(gateway: Gateway) -> None:
    response = await gateway.client.post("/scep/scep/pkiclient.exe", data=b"\x30\x03\x02\x01\x01")
    assert response.status_code == 400
    assert b"Traceback" not in await body_of(response)


# 2. GetCACaps -------------------------------------------------------------------------------


async def test_caps_01_keywords_spelled_as_the_rfc(gateway: Gateway) -> None:
    lines = (await _caps(gateway)).decode().split("\n")
    assert lines[-1] == ""
    for keyword in lines[:-1]:
        assert keyword in caps.KNOWN


async def test_caps_02_one_keyword_per_line_no_duplicates(gateway: Gateway) -> None:
    lines = [line.rstrip("\r") for line in (await _caps(gateway)).decode().splitlines()]
    assert all(lines)
    assert len(lines) == len(set(lines))
    assert not any("<" in line for line in lines)


async def test_caps_03_scepstandard_comes_with_its_implied_keywords(gateway: Gateway) -> None:
    lines = set((await _caps(gateway)).decode().split())
    assert "SCEPStandard" in lines
    assert {"AES", "POSTPKIOperation", "SHA-256"} <= lines


async def test_caps_04_no_getnextcacert_without_rollover(gateway: Gateway) -> None:
    assert b"GetNextCACert" not in await _caps(gateway)
    response = await gateway.client.get("/scep/scep/pkiclient.exe?operation=GetNextCACert")
    assert response.status_code == 403


async def test_caps_05_renewal_not_advertised_when_not_enabled(gateway: Gateway) -> None:
    assert b"Renewal" not in await _caps(gateway)


async def test_caps_06_never_single_des_or_md5(gateway: Gateway) -> None:
    lines = set((await _caps(gateway)).decode().split())
    assert not lines & {"DES", "MD5", "des", "md5"}


@pytest.mark.parametrize("message", ["", "0", "CAIdentifier", "ManagementCA", "MobileIronSCEP"])
async def test_caps_07_message_parameter_tolerated(gateway: Gateway, message: str) -> None:
    assert await _caps(gateway, query=f"&message={message}") == await _caps(gateway)


# 3. GetCACert -------------------------------------------------------------------------------


async def test_cacert_01_single_ca_is_bare_der(gateway: Gateway) -> None:
    response = await gateway.client.get("/scep/scep/pkiclient.exe?operation=GetCACert")
    cert = x509.load_der_x509_certificate(await body_of(response))
    assert cert.subject.rfc4514_string() == "CN=ManagementCA,O=scep-gateway demo"


def _certs_only(body: bytes) -> list[x509.Certificate]:
    info = cms.ContentInfo.load(body)
    assert info["content_type"].native == "signed_data"
    signed = info["content"]
    # CACERT-02: version 1, empty digestAlgorithms, id-data without content, no signers.
    assert signed["version"].native == "v1"
    assert len(signed["digest_algorithms"]) == 0
    assert signed["encap_content_info"]["content_type"].native == "data"
    assert signed["encap_content_info"]["content"].native is None
    assert len(signed["signer_infos"]) == 0
    assert not signed["crls"]
    return [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]]


async def test_cacert_02_ra_arrangement_is_degenerate_signeddata(gateway: Gateway) -> None:
    response = await gateway.client.get("/scep/ndes/pkiclient.exe?operation=GetCACert")
    certs = _certs_only(await body_of(response))
    assert len(certs) == 3


async def test_cacert_03_order_encrypter_signer_then_ca(gateway: Gateway) -> None:
    response = await gateway.client.get("/scep/ndes/pkiclient.exe?operation=GetCACert")
    encrypter, signer, ca = _certs_only(await body_of(response))
    runtime = gateway.services.snapshot().alias("ndes")
    assert encrypter == runtime.keys[0].decrypter.certificate
    assert signer == runtime.keys[0].signer.certificate
    assert ca == runtime.keys[0].ca.certificate


async def test_cacert_05_ra_certificates_are_issued_by_the_ca(gateway: Gateway) -> None:
    response = await gateway.client.get("/scep/ndes/pkiclient.exe?operation=GetCACert")
    encrypter, signer, ca = _certs_only(await body_of(response))
    for ra in (encrypter, signer):
        ra.verify_directly_issued_by(ca)
    assert encrypter.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    assert signer.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature


async def test_cacert_06_ca_key_usage_for_scep(gateway: Gateway) -> None:
    ca = await gateway.ca_certificate()
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment
    assert usage.key_cert_sign
    assert usage.crl_sign


@pytest.mark.parametrize("message", ["0", "CAIdentifier", "", "ManagementCA", "MobileIronSCEP"])
async def test_cacert_09_placeholders_get_the_alias_ca(gateway: Gateway, message: str) -> None:
    plain = await gateway.client.get("/scep/scep/pkiclient.exe?operation=GetCACert")
    response = await gateway.client.get(
        f"/scep/scep/pkiclient.exe?operation=GetCACert&message={message}"
    )
    assert await body_of(response) == await body_of(plain)


# 4-7. PKIOperation ----------------------------------------------------------------------------


async def _enroll(gw: Gateway, name: str, **options: object) -> tuple[Device, client.CertRep]:
    await register(gw.services.store, name, "pass-" + name)
    device = Device(name)
    body = await gw.pki(device.pkcsreq("pass-" + name, gw.recipients(), **options))
    return device, device.read(body)


def _to_ber(der: bytes) -> bytes:
    """Re-encode the outer layers with indefinite lengths and a chunked eContent, like Apple."""
    info = cms.ContentInfo.load(der)
    signed = info["content"]
    content = signed["encap_content_info"]["content"].native
    chunks = b"".join(
        b"\x04" + bytes([len(content[i : i + 100])]) + content[i : i + 100]
        for i in range(0, len(content), 100)
    )
    econtent = b"\xa0\x80" + b"\x24\x80" + chunks + b"\x00\x00" + b"\x00\x00"
    eci = b"\x30\x80" + signed["encap_content_info"]["content_type"].dump() + econtent + b"\x00\x00"
    parts = [signed["version"].dump(), signed["digest_algorithms"].dump(), eci]
    parts.append(signed["certificates"].dump())
    parts.append(signed["signer_infos"].dump())
    body = b"\x30\x80" + b"".join(parts) + b"\x00\x00"
    outer: bytes = info["content_type"].dump()
    return b"\x30\x80" + outer + b"\xa0\x80" + body + b"\x00\x00\x00\x00"


async def test_pki_01_ber_indefinite_lengths_accepted(gateway: Gateway) -> None:
    await register(gateway.services.store, "ber", "pass-ber")
    device = Device("ber")
    ber = _to_ber(device.pkcsreq("pass-ber", gateway.recipients()))
    assert ber[:2] == b"\x30\x80"
    reply = device.read(await gateway.pki(ber))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text


async def test_pki_04_md5_is_refused_with_badalg(gateway: Gateway) -> None:
    device = Device("md5")
    body = device.pkcsreq("x", gateway.recipients(), digest="sha1")
    # Relabel the digest algorithm as MD5: the gateway must refuse on the algorithm first.
    info = cms.ContentInfo.load(body)
    info["content"]["signer_infos"][0]["digest_algorithm"] = {"algorithm": "md5"}
    info["content"]["digest_algorithms"] = [{"algorithm": "md5"}]
    reply = device.read(await gateway.pki(info.dump(force=True)))
    assert reply.status is PkiStatus.FAILURE
    assert reply.fail_info == FailInfo.BAD_ALG


async def test_pki_04_bad_signature_is_badmessagecheck(gateway: Gateway) -> None:
    device = Device("badsig")
    body = bytearray(device.pkcsreq("x", gateway.recipients()))
    body[-5] ^= 0xFF
    reply = device.read(await gateway.pki(bytes(body)))
    assert reply.status is PkiStatus.FAILURE
    assert reply.fail_info == FailInfo.BAD_MESSAGE_CHECK


async def test_pki_05_failinfotext_uses_the_rfc_oid(gateway: Gateway) -> None:
    device = Device("oid-check")
    body = await gateway.pki(device.pkcsreq("x", gateway.recipients()))
    oids = {
        a["type"].dotted
        for a in cms.ContentInfo.load(body)["content"]["signer_infos"][0]["signed_attrs"]
    }
    assert "1.3.6.1.5.5.7.24.1" in oids
    assert device.read(body).fail_info_text == "authentication failed"


@pytest.mark.parametrize("kind", ["18", "99", "abc", "3"])
async def test_pki_06_undefined_message_types_are_badrequest(gateway: Gateway, kind: str) -> None:
    device = Device("mtype")
    body = device.pkcsreq("x", gateway.recipients(), message_type_text=kind)
    reply = device.read(await gateway.pki(body))
    assert reply.status is PkiStatus.FAILURE
    assert reply.fail_info == FailInfo.BAD_REQUEST


@pytest.mark.parametrize("size", [8, 16, 32])
async def test_pki_07_sender_nonce_echoed_whatever_its_length(gateway: Gateway, size: int) -> None:
    nonce = os.urandom(size)
    device = Device("nonce")
    reply = device.read(await gateway.pki(device.pkcsreq("x", gateway.recipients(), nonce=nonce)))
    assert reply.recipient_nonce == nonce
    assert len(reply.sender_nonce) == 16
    assert reply.sender_nonce != nonce


@pytest.mark.parametrize(
    "tid", ["7XXEY-ERLPU-2JDR9", "A13090761A30F66664F85D37433D2065E1112BA1", "SSCEP transactionId"]
)
async def test_pki_08_transaction_id_opaque_and_echoed(gateway: Gateway, tid: str) -> None:
    device = Device("tid")
    reply = device.read(
        await gateway.pki(device.pkcsreq("x", gateway.recipients(), transaction_id=tid))
    )
    assert reply.transaction_id == tid


async def test_pki_10_signer_subject_and_key_may_differ_from_the_csr(gateway: Gateway) -> None:
    await register(gateway.services.store, "apple-like", "pass-apple")
    device = Device("apple-like")
    other = Device("MDM SCEP SIGNER")
    device.signer = other.identity  # signer key differs from the CSR key, as Apple does
    reply = device.read(await gateway.pki(device.pkcsreq("pass-apple", gateway.recipients())))
    assert reply.status is PkiStatus.SUCCESS
    # REP-06: encrypted to the signer; the issued certificate carries the CSR key.
    assert reply.certificates[0].public_key() == device.key.public_key()


@pytest.mark.parametrize(
    "cipher", ["des", "tripledes_3key", "aes128_cbc", "aes192_cbc", "aes256_cbc"]
)
async def test_env_04_content_ciphers(gateway: Gateway, cipher: str) -> None:
    _, reply = await _enroll(gateway, f"cipher-{cipher}", cipher=cipher)
    assert reply.status is PkiStatus.SUCCESS
    # The answer mirrors 3DES and AES and never uses single DES.
    assert reply.content_cipher == ("aes128_cbc" if cipher == "des" else cipher)


async def test_env_03_oaep_key_transport(gateway: Gateway) -> None:
    _, reply = await _enroll(gateway, "oaep", key_transport="oaep")
    assert reply.status is PkiStatus.SUCCESS


async def test_env_02_envelope_for_someone_else_is_badmessagecheck(gateway: Gateway) -> None:
    await register(gateway.services.store, "elsewhere", "pass")
    device = Device("elsewhere")
    stranger = Device("stranger").identity.certificate
    reply = device.read(await gateway.pki(device.pkcsreq("pass", [stranger])))
    assert reply.status is PkiStatus.FAILURE
    assert reply.fail_info == FailInfo.BAD_MESSAGE_CHECK
    assert reply.fail_info_text == scep_cms.UNREADABLE


async def test_req_01_csr_signature_must_verify(gateway: Gateway) -> None:
    await register(gateway.services.store, "pop", "pass")
    device = Device("pop")
    csr = bytearray(device.csr("pass"))
    csr[-3] ^= 0x01
    reply = device.read(await gateway.pki(device.message(bytes(csr), gateway.recipients())))
    assert reply.fail_info == FailInfo.BAD_MESSAGE_CHECK
    assert await gateway.services.store.count_certificates() == 0


async def test_req_05_cisco_serial_number_names_the_entity(gateway: Gateway) -> None:
    await register(gateway.services.store, "FTX123", "pass-cisco", dn="CN=router-1,O=Net")
    device = Device("FTX123")
    subject = x509.Name(
        [
            x509.RelativeDistinguishedName(
                [
                    x509.NameAttribute(x509.NameOID.SERIAL_NUMBER, "FTX123"),
                    x509.NameAttribute(x509.ObjectIdentifier("1.2.840.113549.1.9.8"), "10.0.0.1"),
                ]
            )
        ]
    )
    body = device.message(device.csr("pass-cisco", subject), gateway.recipients())
    reply = device.read(await gateway.pki(body))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    # CA mode: the certificate gets the registered DN, not the request's.
    assert reply.certificates[0].subject.rfc4514_string() == "CN=router-1,O=Net"


async def test_rep_02_success_attributes(gateway: Gateway) -> None:
    _, reply = await _enroll(gateway, "rep02", transaction_id="rep-02")
    assert reply.status is PkiStatus.SUCCESS
    assert reply.transaction_id == "rep-02"
    assert reply.fail_info is None
    assert reply.fail_info_text is None


@pytest.mark.parametrize(("request_digest", "answer"), [("sha1", "sha256"), ("sha512", "sha256")])
async def test_rep_03_answers_are_sha256_by_default(
    gateway: Gateway, request_digest: str, answer: str
) -> None:
    _, reply = await _enroll(gateway, f"dig-{request_digest}", digest=request_digest)
    assert reply.status is PkiStatus.SUCCESS
    assert reply.digest == answer


async def test_rep_04_issued_certificate_first_and_chains(gateway: Gateway) -> None:
    device, reply = await _enroll(gateway, "rep04")
    ca = await gateway.ca_certificate()
    issued = reply.certificates[0]
    issued.verify_directly_issued_by(ca)
    assert issued.public_key() == device.key.public_key()
    assert issued.subject == cn("rep04")


async def test_rep_05_ca_certificate_follows_the_issued_one(gateway: Gateway) -> None:
    _, reply = await _enroll(gateway, "rep05")
    ca = await gateway.ca_certificate()
    assert [c.subject for c in reply.certificates] == [cn("rep05"), ca.subject]


async def test_rep_06_success_is_encrypted_to_the_request_signer(gateway: Gateway) -> None:
    await register(gateway.services.store, "rep06", "pass-rep06")
    device = Device("rep06", key=fresh_key())
    body = await gateway.pki(device.pkcsreq("pass-rep06", gateway.recipients()))
    assert device.read(body).status is PkiStatus.SUCCESS
    envelope = cms.ContentInfo.load(
        cms.ContentInfo.load(body)["content"]["encap_content_info"]["content"].native
    )
    rid = envelope["content"]["recipient_infos"][0].chosen["rid"].chosen
    assert rid["serial_number"].native == device.identity.certificate.serial_number
    stranger = Device("rep06-stranger", key=fresh_key())
    with pytest.raises(ScepFailure) as failure:
        client.read_cert_rep(body, recipient=stranger.identity)
    assert failure.value.client_text == scep_cms.UNREADABLE


async def test_rep_07_failure_has_no_envelope(gateway: Gateway) -> None:
    device = Device("rep07")
    body = await gateway.pki(device.pkcsreq("x", gateway.recipients()))
    signed = cms.ContentInfo.load(body)["content"]
    # REP-09: a zero-length eContent keeps the signature attached.
    assert signed["encap_content_info"]["content"].native == b""
    assert device.read(body).status is PkiStatus.FAILURE


async def test_rep_01_outer_signeddata_carries_the_signer(gateway: Gateway) -> None:
    _, reply = await _enroll(gateway, "rep01")
    ca = await gateway.ca_certificate()
    assert reply.signer_der == ca.public_bytes(serialization.Encoding.DER)


async def test_getcert_01_holder_gets_its_certificate(gateway: Gateway) -> None:
    device, reply = await _enroll(gateway, "getcert")
    issued = reply.certificates[0]
    ias = cms.IssuerAndSerialNumber(
        {
            "issuer": asn1_x509.Name.load(issued.issuer.public_bytes()),
            "serial_number": issued.serial_number,
        }
    ).dump()
    body = device.message(ias, gateway.recipients(), message_type=MessageType.GET_CERT)
    answer = device.read(await gateway.pki(body))
    assert answer.status is PkiStatus.SUCCESS
    assert answer.certificates == (issued,)
    # Someone else asking for it learns nothing.
    other = Device("getcert-other", key=fresh_key())
    body = other.message(ias, gateway.recipients(), message_type=MessageType.GET_CERT)
    refused = other.read(await gateway.pki(body))
    assert refused.fail_info == FailInfo.BAD_CERT_ID
