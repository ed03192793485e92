"""`python -m benchmarks.floods`: honest enrollments/s while floods run (issue 9, item 4).

One ``scep-gateway serve`` (one worker, SQLite, RSA-2048 CA) with an RA-mode alias ``bench``
for the honest clients and a CA-mode alias ``bench-ca`` for the attacker. Before the phases,
2000 certificates of the CA are recorded revoked and an end entity ``victim`` registered.
Four phases of PHASE_SECONDS each (``--seconds``), honest clients (HONEST connections from
127.0.0.1, each PKCSReq a new RA-mode device) in all of them:

1. no flood;
2. replay flood: one captured CA-mode PKCSReq for ``victim`` with a wrong code (scrypt on
   the server each time), replayed on REPLAY connections from 127.0.0.2;
3. CRL flood: GET /crl/BenchCA.crl (2000 entries) on CRL_FETCHERS connections from 127.0.0.3;
4. both floods.

Everything talks to 127.0.0.1..3 (loopback) only and ends within about two minutes after
the message sets are cached. To measure older code, run this script with that code first on
the path (the server inherits PYTHONPATH), e.g. for the code before this change:

    git archive 357fff5 gateway | tar -x -C /tmp/before
    ln -s "$PWD/benchmarks" /tmp/before/benchmarks
    (cd /tmp/before && PYTHONPATH=/tmp/before "$OLDPWD/.venv/bin/python" -m benchmarks.floods)

The report names the gateway package it ran, and is written as JSON to
benchmarks/.cache/floods-<label>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import gateway
from benchmarks import servers
from benchmarks.httpload import LoadResult, drive, encode_request, fetch, percentile
from benchmarks.messages import CACHE, load_key, message_set
from benchmarks.servers import HOST
from benchmarks.verify import SUCCESS, _attribute_text, classify
from gateway.scep import client, oids
from gateway.scep.messages import MessageType
from gateway.store import CertificateRecord, Store

PHASE_SECONDS = 10.0
HONEST = 4
REPLAY = 8
CRL_FETCHERS = 4
REVOKED = 2000
HONEST_MESSAGES = 1500  # per phase; a phase that uses them up ends early (rate stays right)
HONEST_SOURCE = "127.0.0.1"
REPLAY_SOURCE = "127.0.0.2"
CRL_SOURCE = "127.0.0.3"
REQUEST_TIMEOUT = 30.0
CA_NAME = "BenchCA"
CA_MODE_ALIAS = "bench-ca"
CA_MODE_ALIAS_YAML = f"mode: ca\nca: {CA_NAME}\n"
PKI_TYPE = "application/x-pki-message"
_TEXT_OID = core.ObjectIdentifier(oids.FAIL_INFO_TEXT).dump()

PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("no flood", ()),
    ("replay flood", ("replay",)),
    ("CRL flood", ("crl",)),
    ("both floods", ("replay", "crl")),
)


def log(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


async def populate(database: str, data_dir: Path, revoked: int) -> None:
    """``victim`` (CA mode) and ``revoked`` certificates of the CA, recorded revoked."""
    await servers.register_entities(database, ["victim"], "Right-Code-1")
    ca_cert = x509.load_pem_x509_certificate((data_dir / "ca/BenchCA/ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key(
        (data_dir / "ca/BenchCA/ca.key").read_bytes(), password=None
    )
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    subject_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    now = datetime.now(UTC)
    store = await Store.open(database)
    try:
        for serial in range(1, revoked + 1):
            name = x509.Name.from_rfc4514_string(f"CN=revoked-{serial}")
            cert = (
                x509.CertificateBuilder()
                .subject_name(name)
                .issuer_name(ca_cert.subject)
                .public_key(subject_key)
                .serial_number(serial << 64)
                .not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=365))
                .sign(ca_key, hashes.SHA256())
            )
            await store.record_issuance(
                CertificateRecord(
                    ca=CA_NAME,
                    serial=serial << 64,
                    subject_dn=name.rfc4514_string(),
                    issuer_dn=ca_cert.subject.rfc4514_string(),
                    username=None,
                    transaction_id=f"revoked-{serial}",
                    not_before=now - timedelta(days=1),
                    not_after=now + timedelta(days=365),
                    der=cert.public_bytes(serialization.Encoding.DER),
                    issued_at=now,
                    revoked_at=now,
                    revocation_reason="superseded",
                )
            )
    finally:
        await store.close()


def replay_message(ca_der: bytes, key_der: bytes) -> bytes:
    """The captured request: CA mode, CN=victim, a wrong enrollment code."""
    key = load_key(key_der)
    signer = client.self_signed(key, "victim")
    csr = client.csr(
        key,
        x509.Name.from_rfc4514_string("CN=victim"),
        challenge="Wrong-Code-1",
    )
    return client.pki_message(
        MessageType.PKCS_REQ,
        csr,
        signer=signer,
        recipients=[x509.load_der_x509_certificate(ca_der)],
        transaction_id="captured-replay-1",
        sender_nonce=os.urandom(16),
        random=os.urandom(64),
    )


def kinds(result: LoadResult, text: bool = False) -> Counter[str]:
    counted: Counter[str] = Counter()
    for sample in result.samples:
        if sample.status != 200:
            counted[f"HTTP {sample.status or sample.error[:30]}"] += 1
        elif sample.body[:1] == b"\x30" and text:
            detail = _attribute_text(sample.body, _TEXT_OID)
            counted[f"{classify(sample.body)}: {detail}"] += 1
        else:
            counted["200"] += 1
    return counted


def rate(result: LoadResult, ok: Callable[[bytes], bool] = lambda _b: True) -> float:
    return sum(1 for s in result.samples if s.status == 200 and ok(s.body)) / result.window


async def phase(
    port: int,
    *,
    honest: Sequence[bytes],
    floods: tuple[str, ...],
    replay: bytes,
    scep_path: str,
    ca_path: str,
    seconds: float,
) -> dict[str, object]:
    post = [
        encode_request("POST", HOST, port, scep_path, body=b, content_type=PKI_TYPE) for b in honest
    ]
    replay_request = encode_request("POST", HOST, port, ca_path, body=replay, content_type=PKI_TYPE)
    crl_request = encode_request("GET", HOST, port, f"/crl/{CA_NAME}.crl")
    loads = [
        drive(
            HOST,
            port,
            post.__getitem__,
            concurrency=HONEST,
            seconds=seconds,
            max_requests=len(post),
            request_timeout=REQUEST_TIMEOUT,
            keep_body=lambda _i: True,
            source=HONEST_SOURCE,
        )
    ]
    if "replay" in floods:
        loads.append(
            drive(
                HOST,
                port,
                lambda _i: replay_request,
                concurrency=REPLAY,
                seconds=seconds,
                max_requests=10**7,
                request_timeout=REQUEST_TIMEOUT,
                keep_body=lambda _i: True,
                source=REPLAY_SOURCE,
            )
        )
    if "crl" in floods:
        loads.append(
            drive(
                HOST,
                port,
                lambda _i: crl_request,
                concurrency=CRL_FETCHERS,
                seconds=seconds,
                max_requests=10**7,
                request_timeout=REQUEST_TIMEOUT,
                source=CRL_SOURCE,
            )
        )
    results = await asyncio.gather(*loads)
    honest_result = results[0]
    latencies = [s.latency for s in honest_result.samples if s.status == 200]
    report: dict[str, object] = {
        "honest_enrollments_per_s": round(rate(honest_result, lambda b: classify(b) == SUCCESS), 1),
        "honest_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "honest_p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "honest_answers": dict(
            Counter(
                classify(s.body) if s.status == 200 else f"HTTP {s.status}"
                for s in honest_result.samples
            )
        ),
    }
    rest = list(results[1:])
    if "replay" in floods:
        replay_result = rest.pop(0)
        report["replay_requests_per_s"] = round(rate(replay_result), 1)
        report["replay_answers"] = dict(kinds(replay_result, text=True))
    if "crl" in floods:
        crl_result = rest.pop(0)
        report["crl_requests_per_s"] = round(rate(crl_result), 1)
        report["crl_answers"] = dict(kinds(crl_result))
    return report


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    secret = servers.bench_secret()
    server = servers.start_gateway(
        "floods",
        workdir / "gateway",
        secret,
        extra_aliases={f"{CA_MODE_ALIAS}.yaml": CA_MODE_ALIAS_YAML},
        serve_args=tuple(args.serve_arg),
    )
    try:
        ca_der = (await fetch(HOST, server.port, f"{server.scep_path}?operation=GetCACert")).body
        log(f"recording {REVOKED} revoked certificates and the CA-mode entity")
        started = time.monotonic()
        await populate(server.database, workdir / "gateway" / "data", REVOKED)
        log(f"  done in {time.monotonic() - started:.0f} s")
        first = await fetch(HOST, server.port, f"/crl/{CA_NAME}.crl", limit_s=60)
        assert first.status == 200, first.status
        entries = len(x509.load_der_x509_crl(first.body))
        log(f"CRL of {entries} entries, {len(first.body)} bytes")
        workers = max(1, len(os.sched_getaffinity(0)))
        sets = [
            message_set(
                [ca_der], secret, HONEST_MESSAGES, prefix=f"flood{i}", workers=workers, log=log
            )
            for i in range(len(PHASES))
        ]
        replay = replay_message(ca_der, sets[0][0].key_der)
        phases: dict[str, object] = {}
        for (name, floods), messages in zip(PHASES, sets, strict=True):
            log(f"phase: {name}")
            cpu_before = server.cpu_seconds()
            report = await phase(
                server.port,
                honest=[m.body for m in messages],
                floods=floods,
                replay=replay,
                scep_path=server.scep_path,
                ca_path=f"/scep/{CA_MODE_ALIAS}/pkiclient.exe?operation=PKIOperation",
                seconds=args.seconds,
            )
            report["server_cpu_s"] = round(server.cpu_seconds() - cpu_before, 1)
            log(f"  {json.dumps(report)}")
            phases[name] = report
        return {
            "label": args.label,
            "gateway": str(Path(gateway.__file__).parent),
            "serve_args": args.serve_arg,
            "revoked": entries,
            "phase_seconds": args.seconds,
            "honest_connections": HONEST,
            "replay_connections": REPLAY,
            "crl_connections": CRL_FETCHERS,
            "phases": phases,
        }
    finally:
        server.stop()


def render(result: dict[str, object]) -> str:
    phases = result["phases"]
    assert isinstance(phases, dict)
    lines = [
        f"{result['label']}: gateway {result['gateway']} {' '.join(result['serve_args'])}",  # type: ignore[arg-type]
        f"{'phase':<14} {'honest/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'replay/s':>9} "
        f"{'crl/s':>7} {'cpu s':>6}",
    ]
    for name, report in phases.items():
        lines.append(
            f"{name:<14} {report['honest_enrollments_per_s']:>9} {report['honest_p50_ms']:>8} "
            f"{report['honest_p95_ms']:>8} {report.get('replay_requests_per_s', '-'):>9} "
            f"{report.get('crl_requests_per_s', '-'):>7} {report['server_cpu_s']:>6}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(
        prog="python -m benchmarks.floods", description=__doc__.split("\n")[0]
    )
    cli.add_argument("--label", default="this code")
    cli.add_argument("--seconds", type=float, default=PHASE_SECONDS, help="length of a phase")
    cli.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        help="passed to `scep-gateway serve` (repeat; e.g. --serve-arg=--failure-burst=10)",
    )
    args = cli.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="scep-floods-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    out = CACHE / f"floods-{''.join(c if c.isalnum() else '-' for c in args.label)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(render(result))
    print(f"(JSON: {out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
