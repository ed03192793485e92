"""docs/security.md section 1: no oracle after key transport.

An attacker who captured one RA-mode PKCSReq keeps its encryptedKey, chooses an IV and sends
one ciphertext block per query, each query re-signed by a throwaway certificate. If the answer
to a bad CBC padding differs from the answer to a good padding over unparseable content, 256
queries reveal one plaintext byte, and about 2,000 the RA secret in the challengePassword.
Here that attack, and every other way the content can fail after key transport, runs against
a real server (CA key and RA pair, AES and 3DES): it must see exactly one answer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from gateway.assembly import assemble, check_decrypters
from gateway.errors import ConfigError, ScepFailure
from gateway.keys.files import KeyPair
from gateway.scep import client, decode
from gateway.scep import cms as scep_cms
from gateway.scep import csr as scep_csr
from gateway.scep.crypto import CONTENT_CIPHERS, content_cipher
from gateway.scep.messages import MessageType, PkiStatus
from tests.interop.conftest import Server, start_server, stop_server
from tests.security.support import Answer, ask, recipient_of
from tests.support import Device, copy_config, fresh_key

# RA mode with the RA pair: the NDES arrangement, and the one whose secret the attack targets.
RA_PAIR_ALIAS = (
    "mode: ra\nca: ManagementCA\nscep_keys: ra\nra: {secret: {file: ra-demo.secret}}\n"
    "renewal: {enabled: true}\n"
)
# (alias, arrangement): `ra` decrypts with the CA key, `ra-pair` with the RA encrypter.
ALIASES = ("ra", "ra-pair")
CIPHERS = ("aes128_cbc", "tripledes_3key")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("oracle")
    config = copy_config(tmp)
    (config / "aliases" / "ra-pair.yaml").write_text(RA_PAIR_ALIAS)
    # The attack sends hundreds of failing requests from one address: the failure budget
    # (docs/security.md section 4) would answer most of them "too many failed requests"
    # before decryption. Raised here, so that every query reaches the code under test.
    process, running = start_server(
        tmp,
        config_dir=config,
        extra=("--failure-burst", "100000", "--refusal-delay-seconds", "0.001"),
    )
    try:
        yield running
    finally:
        stop_server(process)


def _envelope(
    recipient: x509.Certificate,
    *,
    cipher: str,
    encrypted_key: bytes,
    iv: bytes,
    ciphertext: bytes,
    oaep: bool = False,
) -> bytes:
    """An EnvelopedData with every field chosen by the caller, as an attacker builds it."""
    asn1_cert = cms.Certificate.load(recipient.public_bytes(serialization.Encoding.DER))
    algorithm: dict[str, object] = {"algorithm": "rsaes_pkcs1v15"}
    if oaep:
        sha256 = {"algorithm": "sha256"}
        algorithm = {
            "algorithm": "rsaes_oaep",
            "parameters": {
                "hash_algorithm": sha256,
                "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": sha256},
            },
        }
    ktri = cms.KeyTransRecipientInfo(
        {
            "version": "v0",
            "rid": cms.RecipientIdentifier(
                name="issuer_and_serial_number",
                value=cms.IssuerAndSerialNumber(
                    {"issuer": asn1_cert.issuer, "serial_number": asn1_cert.serial_number}
                ),
            ),
            "key_encryption_algorithm": algorithm,
            "encrypted_key": encrypted_key,
        }
    )
    enveloped = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [cms.RecipientInfo(name="ktri", value=ktri)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": cipher, "parameters": iv},
                "encrypted_content": ciphertext,
            },
        }
    )
    return bytes(cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump())


def _encrypt(cipher: str, key: bytes, iv: bytes, plaintext: bytes, *, pad: bool = True) -> bytes:
    block = CONTENT_CIPHERS[cipher][1]
    if pad:
        padder = sym_padding.PKCS7(block * 8).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
    encryptor = content_cipher(cipher, key, iv).encryptor()
    return encryptor.update(plaintext) + encryptor.finalize()


def _wrapped(recipient: x509.Certificate, key: bytes) -> bytes:
    public = recipient.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    return public.encrypt(key, padding.PKCS1v15())


def _signed(attacker: Device, enveloped: bytes, kind: MessageType, tid: str) -> bytes:
    return client.sign_pki_message(
        enveloped,
        str(int(kind)),
        signer=attacker.identity,
        transaction_id=tid,
        sender_nonce=os.urandom(16),
    )


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("alias", ALIASES)
def test_padding_oracle_attack_sees_one_answer(server: Server, alias: str, cipher: str) -> None:
    secret = (server.data_dir / "ra-demo.secret").read_text().strip()
    recipient = recipient_of(server, alias)
    key_len, block = CONTENT_CIPHERS[cipher]
    attacker = Device("attacker", key=fresh_key())

    # The victim's captured request: its content key stays secret, its encryptedKey is kept.
    victim = Device(f"victim-{alias}-{cipher}")
    content_key, iv = os.urandom(key_len), os.urandom(block)
    csr = victim.csr(secret)
    captured = _encrypt(cipher, content_key, iv, csr)
    encrypted_key = _wrapped(recipient, content_key)
    last = captured[-block:]

    answers: dict[Answer, list[str]] = {}

    def query(label: str, enveloped: bytes, kind: MessageType = MessageType.PKCS_REQ) -> None:
        body = _signed(attacker, enveloped, kind, f"oracle-{len(answers)}-{label[:20]}")
        answers.setdefault(ask(server, alias, body, attacker), []).append(label)

    # The attack's first step: every value of the last IV byte in front of the last block.
    # Exactly the values that make the block end in a valid padding would answer differently.
    prefix = os.urandom(block - 1)
    for guess in range(256):
        chosen_iv = prefix + bytes([guess])
        query(
            f"iv byte {guess}",
            _envelope(
                recipient,
                cipher=cipher,
                encrypted_key=encrypted_key,
                iv=chosen_iv,
                ciphertext=last,
            ),
        )
    # And every other failure after key transport.
    mine, my_iv = os.urandom(key_len), os.urandom(block)
    size = (recipient.public_key().key_size + 7) // 8  # type: ignore[union-attr]
    other = cms.IssuerAndSerialNumber(
        {
            "issuer": cms.Certificate.load(recipient.public_bytes(serialization.Encoding.DER))[
                "tbs_certificate"
            ]["issuer"],
            "serial_number": 7,
        }
    ).dump()
    mine_wrapped = _wrapped(recipient, mine)
    # label -> (encryptedKey, IV, ciphertext)
    variants = {
        "random encryptedKey (PKCS#1 v1.5 failure)": (os.urandom(size), iv, captured),
        "content key of the wrong length": (_wrapped(recipient, os.urandom(5)), iv, captured),
        "bad CBC padding": (
            mine_wrapped,
            my_iv,
            _encrypt(cipher, mine, my_iv, os.urandom(block - 1) + b"\x00", pad=False),
        ),
        "not DER": (mine_wrapped, my_iv, _encrypt(cipher, mine, my_iv, os.urandom(100))),
        "DER of another type": (mine_wrapped, my_iv, _encrypt(cipher, mine, my_iv, other)),
        "CSR with a broken signature": (
            mine_wrapped,
            my_iv,
            _encrypt(cipher, mine, my_iv, csr[:-1] + bytes([csr[-1] ^ 1])),
        ),
    }
    for label, (wrapped, chosen_iv, ciphertext) in variants.items():
        query(
            label,
            _envelope(
                recipient,
                cipher=cipher,
                encrypted_key=wrapped,
                iv=chosen_iv,
                ciphertext=ciphertext,
            ),
        )
    query(
        "OAEP failure",
        _envelope(
            recipient,
            cipher=cipher,
            encrypted_key=os.urandom(size),
            iv=iv,
            ciphertext=captured,
            oaep=True,
        ),
    )
    # The captured CSR itself under messageTypes whose content it does not fit.
    whole = _envelope(
        recipient, cipher=cipher, encrypted_key=encrypted_key, iv=iv, ciphertext=captured
    )
    query("CSR as CertPoll", whole, MessageType.CERT_POLL)
    query("CSR as GetCert", whole, MessageType.GET_CERT)
    query("CSR as GetCRL", whole, MessageType.GET_CRL)

    assert len(answers) == 1, {a: labels[:5] for a, labels in answers.items()}
    (answer,) = answers
    assert answer == Answer(
        200, "application/x-pki-message", PkiStatus.FAILURE, 1, scep_cms.UNREADABLE
    )
    # The difference is in the operator's log only.
    log = server.log.read_text()
    for detail in ("bad CBC padding", "content key of", "key transport failed", "does not verify"):
        assert detail in log, detail
    # The captured request was a real one: sent as it was, it is issued.
    honest = _signed(victim, whole, MessageType.PKCS_REQ, f"honest-{alias}-{cipher}")
    assert ask(server, alias, honest, victim).pki_status is PkiStatus.SUCCESS


class _StrictDecrypter:
    """RSA decryption as OpenSSL before 3.2 did it: a bad PKCS#1 v1.5 block is an error."""

    def __init__(self, pair: KeyPair) -> None:
        self._pair = pair

    @property
    def certificate(self) -> x509.Certificate:
        return self._pair.certificate

    def decrypt(self, ciphertext: bytes, pad: padding.AsymmetricPadding) -> bytes:
        key = self._pair.private_key
        assert isinstance(key, rsa.RSAPrivateKey)
        numbers = key.private_numbers()
        size = (key.key_size + 7) // 8
        block = pow(int.from_bytes(ciphertext, "big"), numbers.d, numbers.public_numbers.n)
        data = block.to_bytes(size, "big")
        if data[:2] != b"\x00\x02" or b"\x00" not in data[10:]:
            raise ValueError("Decryption failed")
        return data[data.index(b"\x00", 2) + 1 :]


def test_a_key_without_implicit_rejection_decrypts_no_request(tmp_path: Path) -> None:
    key = fresh_key()
    pair = KeyPair(client.self_signed(key, "decrypter").certificate, key)
    assert scep_cms.rejects_implicitly(pair)  # the OpenSSL linked here does it
    strict = _StrictDecrypter(pair)
    assert not scep_cms.rejects_implicitly(strict)
    check_decrypters("cas/Fine.yaml", {"$.key": pair})
    with pytest.raises(ConfigError) as refused:
        check_decrypters("cas/Strict.yaml", {"$.key": pair, "$.ra.encrypter": strict})
    (issue,) = refused.value.issues
    assert (issue.file, issue.path) == ("cas/Strict.yaml", "$.ra.encrypter")
    assert issue.message.startswith("the key does not reject bad PKCS#1 v1.5 padding implicitly")


def test_good_and_bad_padding_take_the_same_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not only the same answer: the same work. A CSR with a bad padding after it is parsed and
    its signature checked exactly as one with a good padding (a timing difference of one RSA
    verification per query would be an oracle too)."""
    key = fresh_key()
    pair = KeyPair(client.self_signed(key, "path").certificate, key)
    device = Device("path", key=fresh_key())
    checked: list[bytes] = []
    original = scep_csr._signature_valid

    def counting(request: object, public_key: object) -> bool:
        checked.append(b"")
        return original(request, public_key)

    monkeypatch.setattr(scep_csr, "_signature_valid", counting)
    csr = device.csr("secret")
    content_key, iv = os.urandom(16), os.urandom(16)
    good = _encrypt("aes128_cbc", content_key, iv, csr)
    # The same CSR followed by a block that ends in 0x00: never a valid PKCS#7 padding.
    bad = _encrypt("aes128_cbc", content_key, iv, csr + bytes(16 - len(csr) % 16), pad=False)
    # A good padding that takes the CSR's last byte with it (what a chosen IV makes of a
    # block): without the rule above, the DER would end early and skip the signature check.
    short = _encrypt("aes128_cbc", content_key, iv, csr[:-1])
    outcomes = []
    for ciphertext in (good, bad, short):
        enveloped = _envelope(
            pair.certificate,
            cipher="aes128_cbc",
            encrypted_key=_wrapped(pair.certificate, content_key),
            iv=iv,
            ciphertext=ciphertext,
        )
        message = decode.read_signed_message(_signed(device, enveloped, MessageType.PKCS_REQ, "p"))
        try:
            decode.open_request(message, decode.check(message), [pair], fallback_key=os.urandom)
            outcomes.append("opened")
        except ScepFailure as failure:
            outcomes.append(failure.detail)
    # The short one was read as far as its DER header says (padding byte included), so it
    # failed at the signature, not at a DER cut short.
    assert outcomes == [
        "opened",
        "bad CBC padding",
        "_Unreadable: the certificate request signature does not verify",
    ]
    assert len(checked) == 3


def test_config_with_such_keys_does_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe runs when a CA loads, for every key that may open requests. No OpenSSL older
    than 3.2 can run here, so the probe is made to answer as it would there."""
    from gateway.config import loader

    config = loader.load(copy_config(tmp_path))
    assemble(config, tmp_path / "var", in_memory=True)  # loads as it is
    monkeypatch.setattr(scep_cms, "rejects_implicitly", lambda decrypter: False)
    with pytest.raises(ConfigError) as refused:
        assemble(config, tmp_path / "var", in_memory=True)
    assert sorted((i.file, i.path) for i in refused.value.issues) == [
        ("cas/ManagementCA.yaml", "$.key"),
        ("cas/ManagementCA.yaml", "$.ra.encrypter"),
    ]
