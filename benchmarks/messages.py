"""Pre-built PKCSReq messages: a fresh RSA-2048 key and a distinct CN per message.

Keys are the expensive part (tens of milliseconds each), so they are generated once, in
parallel, and cached in ``benchmarks/.cache/keys-rsa2048.bin``. A message is encrypted to the
target's CA (or RA encryption) certificate, so message sets are cached per target: the file
name carries the SHA-256 fingerprint of the recipient certificate(s) and a hash of the
challenge password and CN prefix. The CN is ``<prefix>-<index>``; servers get a fresh
database per run, so a cached set can be replayed run after run.
"""

from __future__ import annotations

import functools
import hashlib
import multiprocessing
import os
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gateway.scep import client
from gateway.scep.messages import MessageType

CACHE = Path(__file__).resolve().parent / ".cache"
KEY_FILE = "keys-rsa2048.bin"
FORMAT_VERSION = b"scep-bench-messages-v1"
SIGNER_DAYS = 3650  # the throwaway signer certificate outlives any cache
_U32 = struct.Struct(">I")

Log = Callable[[str], None]


def write_records(path: Path, records: Iterable[Sequence[bytes]]) -> None:
    """Length-prefixed records of length-prefixed fields; written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with tmp.open("wb") as out:
        for record in records:
            out.write(_U32.pack(len(record)))
            for item in record:
                out.write(_U32.pack(len(item)))
                out.write(item)
    os.replace(tmp, path)


def read_records(path: Path) -> list[list[bytes]]:
    """The records of ``path``; an empty list when it is missing or truncated."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records: list[list[bytes]] = []
    pos = 0
    try:
        while pos < len(data):
            (fields,) = _U32.unpack_from(data, pos)
            pos += 4
            record = []
            for _ in range(fields):
                (length,) = _U32.unpack_from(data, pos)
                pos += 4
                if pos + length > len(data):
                    raise struct.error("truncated")
                record.append(data[pos : pos + length])
                pos += length
            records.append(record)
    except struct.error:
        return []
    return records


def _pool(workers: int) -> ProcessPoolExecutor:
    # spawn, not fork: the caller may have an event loop and threads running.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _generate_key(_index: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_keys(count: int, *, workers: int, log: Log, cache: Path = CACHE) -> list[bytes]:
    """``count`` distinct RSA-2048 keys (PKCS#8 DER), generating only what the cache lacks."""
    path = cache / KEY_FILE
    keys = [r[0] for r in read_records(path)]
    missing = count - len(keys)
    if missing > 0:
        log(f"generating {missing} RSA-2048 keys on {workers} processes (cached for later runs)")
        started = time.monotonic()
        with _pool(workers) as pool:
            for key in pool.map(_generate_key, range(missing), chunksize=32):
                keys.append(key)
                if len(keys) % 500 == 0:
                    log(f"  {len(keys)}/{count} keys, {time.monotonic() - started:.0f} s")
        write_records(path, ([k] for k in keys))
        log(f"  done in {time.monotonic() - started:.0f} s")
    return keys[:count]


def load_key(der: bytes) -> rsa.RSAPrivateKey:
    """A cached key. They are ours and were checked when generated: skipping OpenSSL's RSA
    key check (tens of milliseconds) makes loading 100 times faster."""
    key = serialization.load_der_private_key(
        der, password=None, unsafe_skip_rsa_key_validation=True
    )
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@dataclass(frozen=True)
class BenchMessage:
    """A PKCSReq and what a client must remember to check its answer."""

    index: int
    common_name: str
    transaction_id: str
    sender_nonce: bytes
    key_der: bytes  # the requester's private key, PKCS#8 DER (also the CSR's key)
    signer_der: bytes  # the self-signed signer certificate (the answer is encrypted to it)
    body: bytes  # the pkiMessage as POSTed

    def identity(self) -> client.Identity:
        return client.Identity(
            x509.load_der_x509_certificate(self.signer_der), load_key(self.key_der)
        )

    def public_key_der(self) -> bytes:
        return (
            self.identity()
            .certificate.public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def record(self) -> list[bytes]:
        return [
            str(self.index).encode(),
            self.common_name.encode(),
            self.transaction_id.encode(),
            self.sender_nonce,
            self.key_der,
            self.signer_der,
            self.body,
        ]

    @classmethod
    def from_record(cls, record: Sequence[bytes]) -> BenchMessage:
        index, cn, tid, nonce, key, signer, body = record
        return cls(int(index), cn.decode(), tid.decode(), nonce, key, signer, body)


@functools.lru_cache(maxsize=4)
def _certificates(ders: tuple[bytes, ...]) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_der_x509_certificate(d) for d in ders)


def build_message(
    index: int,
    key_der: bytes,
    recipients: Sequence[bytes],
    challenge: str,
    prefix: str,
    *,
    csr_key_der: bytes | None = None,
) -> BenchMessage:
    """The PKCSReq of message ``index``: CSR ``CN=<prefix>-<index>`` with the challenge
    password, signed by a throwaway self-signed certificate of the same key, enveloped
    (AES-128-CBC, PKCS#1 v1.5 key transport) to ``recipients`` (DER).

    ``csr_key_der`` puts a different key in the CSR than the signer's (the verifier test uses
    it to get an answer whose certificate does not carry the request's key).
    """
    key = load_key(key_der)
    csr_key = key if csr_key_der is None else load_key(csr_key_der)
    common_name = f"{prefix}-{index:06d}"
    signer = client.self_signed(key, common_name, days=SIGNER_DAYS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    csr = client.csr(csr_key, name, challenge=challenge)
    # RFC 8894 3.2.1.1: a transactionID derived from the public key (what scepclient does).
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    transaction_id = hashlib.sha256(spki).hexdigest()
    nonce = os.urandom(16)
    body = client.pki_message(
        MessageType.PKCS_REQ,
        csr,
        signer=signer,
        recipients=_certificates(tuple(recipients)),
        transaction_id=transaction_id,
        sender_nonce=nonce,
        random=os.urandom(64),
    )
    return BenchMessage(
        index=index,
        common_name=common_name,
        transaction_id=transaction_id,
        sender_nonce=nonce,
        key_der=key_der,
        signer_der=signer.certificate.public_bytes(serialization.Encoding.DER),
        body=body,
    )


def _build_record(args: tuple[int, bytes, tuple[bytes, ...], str, str]) -> list[bytes]:
    index, key_der, recipients, challenge, prefix = args
    return build_message(index, key_der, recipients, challenge, prefix).record()


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def set_path(recipients: Sequence[bytes], challenge: str, prefix: str, cache: Path) -> Path:
    params = hashlib.sha256(
        b"\0".join([FORMAT_VERSION, challenge.encode(), prefix.encode(), *recipients])
    ).hexdigest()
    return cache / "messages" / f"{fingerprint(recipients[0])[:16]}-{params[:8]}.bin"


def message_set(
    recipients: Sequence[bytes],
    challenge: str,
    count: int,
    *,
    prefix: str = "bench",
    workers: int,
    log: Log,
    cache: Path = CACHE,
) -> list[BenchMessage]:
    """``count`` messages to the CA/RA ``recipients`` (DER), from the cache where possible."""
    path = set_path(recipients, challenge, prefix, cache)
    messages = [BenchMessage.from_record(r) for r in read_records(path)]
    if len(messages) < count:
        keys = ensure_keys(count, workers=workers, log=log, cache=cache)
        start = len(messages)
        log(
            f"building PKCSReq {start}..{count - 1} for CA {fingerprint(recipients[0])[:16]} "
            f"({path.name})"
        )
        started = time.monotonic()
        jobs = [(i, keys[i], tuple(recipients), challenge, prefix) for i in range(start, count)]
        with _pool(workers) as pool:
            for record in pool.map(_build_record, jobs, chunksize=64):
                messages.append(BenchMessage.from_record(record))
        write_records(path, (m.record() for m in messages))
        log(f"  done in {time.monotonic() - started:.1f} s")
    return messages[:count]
