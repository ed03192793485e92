"""docs/security.md section 2: client fields in logs.

The signed attributes are checked against RFC 8894 3.2.1 before anything else, and no
client-derived value reaches the log unescaped or unbounded: against a real server, whose log
file is what an operator (or a log shipper) reads.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from cryptography import x509

from gateway.logs import SafeFormatter, clip
from gateway.scep import client
from gateway.scep.messages import PkiStatus
from tests.interop.conftest import Server, start_server, stop_server
from tests.security.support import ask, recipient_of
from tests.support import Device

FORGED = "issued serial=dead subject=CN=forged entity=forged transaction=x ca=ManagementCA"
# What a forged record would look like at the start of a line of the log.
FORGED_LINE = f"2026-12-01 00:00:00 [1] INFO gateway.enrollment: {FORGED}"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    process, running = start_server(tmp_path_factory.mktemp("logs"))
    try:
        yield running
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def recipient(server: Server) -> x509.Certificate:
    return recipient_of(server, "ra")


def _secret(server: Server) -> str:
    return (server.data_dir / "ra-demo.secret").read_text().strip()


def _enroll(
    server: Server,
    recipient: x509.Certificate,
    name: str,
    *,
    transaction_id: str,
    nonce: bytes | None = None,
) -> tuple[PkiStatus, str | None]:
    device = Device(name)
    body = device.pkcsreq(_secret(server), [recipient], transaction_id=transaction_id, nonce=nonce)
    answer = ask(server, "ra", body, device)
    return answer.pki_status, answer.fail_info_text


def _log_lines(server: Server) -> list[str]:
    return server.log.read_text(errors="replace").splitlines()


@pytest.mark.parametrize(
    ("label", "transaction_id"),
    [
        ("newline and a forged record", f"tid-1\n{FORGED_LINE}"),
        ("NUL", "tid\x00hidden"),
        ("latin-1", "tid-\xe9\xff"),
        ("empty", ""),
        ("10 KB", "A" * 10_000),
        ("200 KB", "B" * 200_000),
    ],
)
def test_a_transaction_id_outside_rfc_8894_is_refused_and_never_logged_raw(
    server: Server, recipient: x509.Certificate, label: str, transaction_id: str
) -> None:
    before = server.log.stat().st_size
    status, text = _enroll(
        server, recipient, f"bad-tid-{len(transaction_id)}", transaction_id=transaction_id
    )
    assert status is PkiStatus.FAILURE, label
    assert text == "transactionID must be 1 to 128 printable ASCII characters"
    grown = server.log.read_bytes()[before:]
    # Bounded: one short record per request, whatever the client sent.
    assert len(grown) < 2_000, (label, len(grown))
    assert not any(line.startswith((FORGED_LINE, FORGED)) for line in _log_lines(server))
    assert b"\x00" not in grown


def test_a_nonce_of_a_length_no_client_sends_is_refused(
    server: Server, recipient: x509.Certificate
) -> None:
    for nonce in (os.urandom(1024), os.urandom(4)):
        status, text = _enroll(
            server, recipient, "bad-nonce", transaction_id="nonce-test", nonce=nonce
        )
        assert status is PkiStatus.FAILURE
        assert text == "senderNonce must be 8 to 32 bytes long (RFC 8894: 16)"


@pytest.mark.parametrize(
    "transaction_id",
    [
        "3" * 78,  # certmonger: a long decimal number
        "Vf4S3kHq0dr3Lxh1Kk5b1m8cGCk=",  # scepclient: base64 of a key hash, with + / =
        "a+b/c=",
        "0f8fad5b-d9cb-469f-a165-70867728950e",  # UUID
        "A13090761A30F66664F85D37433D2065E1112BA1",  # Apple: hex SHA-1
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # hex SHA-256
        "SSCEP transactionId",  # sscep's fixed GetCert/GetCRL text
    ],
)
def test_what_real_clients_send_is_issued(
    server: Server, recipient: x509.Certificate, transaction_id: str
) -> None:
    status, text = _enroll(
        server, recipient, f"real-{os.urandom(4).hex()}", transaction_id=transaction_id
    )
    assert status is PkiStatus.SUCCESS, text


def test_an_alias_with_a_line_break_in_the_url_is_escaped_in_the_log(server: Server) -> None:
    url = f"{server.base}/scep/x%0a{FORGED.replace(' ', '%20')}/pkiclient.exe?operation=GetCACaps"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 404
    refused.value.close()
    lines = _log_lines(server)
    assert not any(line.startswith((FORGED_LINE, FORGED)) for line in lines)
    assert any("unknown alias x\\x0aissued serial=dead" in line for line in lines)


def test_every_record_is_one_line_and_bounded() -> None:
    """The formatter holds for every module's records, not only the ones that clip."""
    formatter = SafeFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord(
        "any", logging.INFO, __file__, 1, "value=%s", (f"a\nb\r\x1b[2J\u2028{'z' * 9000}",), None
    )
    line = formatter.format(record)
    assert "\n" not in line
    assert "\r" not in line
    assert "\x1b" not in line
    assert "\u2028" not in line
    assert line.startswith("INFO value=a\\x0ab\\x0d\\x1b[2J\\u2028zzz")
    assert len(line) < 4200
    assert clip("x" * 500, 10) == "xxxxxxxxxx...(+490 chars)"


def test_the_answer_to_an_outsized_transaction_id_is_small(
    server: Server, recipient: x509.Certificate
) -> None:
    """The FAILURE echoes the transactionID cut to its bound: signing, sending and keeping
    the answer does not cost what the client chose to send."""
    device = Device("outsized-echo")
    tid = "E" * 200_000
    body = device.pkcsreq(_secret(server), [recipient], transaction_id=tid, nonce=os.urandom(900))
    request = urllib.request.Request(
        f"{server.url('ra')}?operation=PKIOperation", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = response.read()
    assert len(answer) < 8_000
    rep = client.read_cert_rep(answer, recipient=device.identity)
    assert rep.status is PkiStatus.FAILURE
    assert rep.transaction_id == tid[:128]
    assert len(rep.recipient_nonce) == 32
