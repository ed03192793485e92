"""Where the gateway's time goes per enrollment: py-spy samples of a server under load.

    .venv/bin/pip install py-spy          # not a project dependency; only for this
    python -m benchmarks.profile          # gateway on SQLite, concurrency 16, 15 s
    python -m benchmarks.profile --postgres
    python -m benchmarks.profile --raw benchmarks/.cache/profile-raw.txt   # analyse again

A one-process asyncio server is bound by the GIL long before it runs out of cores, so this
samples the thread that holds the GIL (``py-spy --gil``): the serialized Python work per
enrollment. RSA operations release the GIL (they run in ``asyncio.to_thread`` workers, in
parallel), so they show up in the server's CPU time, which is read from /proc over the same
window, not in the GIL samples. (Sampling every thread instead is misleading here: py-spy
counts threads parked in ``queue.get`` as busy.)

Each sample is attributed to the category of the innermost frame that has one: cryptography's
Python layer, asn1crypto, HTTP (Hypercorn/h11/Quart/Werkzeug), database (SQLAlchemy, aiosqlite,
asyncpg), logging, the event loop and thread hand-offs, the gateway's own Python. Interpreter
frames have no category, so time spent interpreting a function counts for its category. The
call site is the innermost frame of the gateway itself (SQLAlchemy's asyncio layer runs queries
in greenlets whose stacks do not reach back into the gateway: those are listed as such).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import servers
from benchmarks.httpload import drive, encode_request, fetch
from benchmarks.messages import CACHE, message_set
from benchmarks.servers import HOST
from benchmarks.verify import SUCCESS, CaTrust, classify

_FRAME = re.compile(r"^(?P<name>.*?) \((?P<where>[^()]*)\)$")
_RSA_NATIVE = re.compile(
    r"^(bn_|BN_|__bn_|rsa_|RSA_|ossl_rsa|ossl_bn|mulx4x|sqrx8x|mul4x|sqr8x|"
    r"bn_mul|bn_sqr|bn_mod|bn_from_mont|ossl_bn_rsa)"
)

RSA = "RSA private-key math (OpenSSL bignum)"
NATIVE_CRYPTO = "other native crypto (hashes, AES, DER, key/cert objects)"
CRYPTO_PY = "cryptography's Python layer (X.509 builders, loaders)"
ASN1 = "ASN.1 in asn1crypto (parse, build, dump)"
HTTP = "HTTP: Hypercorn, h11, Quart, Werkzeug"
DATABASE = "database: SQLAlchemy, aiosqlite/sqlite3, asyncpg"
LOGGING = "logging"
LOOP = "event loop and thread hand-offs (asyncio, to_thread, futures, locks)"
SOCKET = "socket syscalls (send, recv, epoll)"
GATEWAY = "gateway's own Python (policy, routes, encode/decode glue)"
OTHER = "other (interpreter, GC, stdlib)"

_PY_RULES: tuple[tuple[str, str], ...] = (
    ("asn1crypto/", ASN1),
    ("cryptography/", CRYPTO_PY),
    ("hypercorn/", HTTP),
    ("h11/", HTTP),
    ("quart/", HTTP),
    ("werkzeug/", HTTP),
    ("flask/", HTTP),
    ("sqlalchemy/", DATABASE),
    ("aiosqlite/", DATABASE),
    ("sqlite3/", DATABASE),
    ("asyncpg/", DATABASE),
    ("logging/", LOGGING),
    ("asyncio/", LOOP),
    ("concurrent/", LOOP),
    ("threading.py", LOOP),
    ("queue.py", LOOP),
    ("selectors.py", LOOP),
    ("gateway/", GATEWAY),
)
_NATIVE_C_RULES: tuple[tuple[str, str], ...] = (
    ("_asynciomodule.c", LOOP),
    ("socketmodule.c", SOCKET),
    ("selectmodule.c", SOCKET),
    ("_sqlite", DATABASE),
    ("libsqlite3", DATABASE),
    ("asyncpg", DATABASE),
    ("_queuemodule.c", LOOP),
    ("_threadmodule.c", LOOP),
)
_SYSCALLS = {"send", "recv", "sendto", "recvfrom", "epoll_wait", "__libc_send", "__libc_recv"}


def frame_category(frame: str) -> str | None:
    """The category of one py-spy frame ``name (file:line)``, or None (look further out)."""
    match = _FRAME.match(frame)
    if match is None:
        return None
    name, where = match["name"], match["where"]
    if "_rust.abi3.so" in where or "libcrypto" in where or "libssl" in where:
        return RSA if _RSA_NATIVE.match(name) else NATIVE_CRYPTO
    if ".py:" in where or where.endswith(".py"):
        for needle, category in _PY_RULES:
            if needle in where:
                return category
        return None
    if "libc.so" in where:
        return SOCKET if name in _SYSCALLS else None
    for needle, category in _NATIVE_C_RULES:
        if needle in where:
            return category
    return None


def sample_category(frames: Sequence[str]) -> str:
    """Innermost categorised frame wins (frames run from the root to the leaf)."""
    for frame in reversed(frames):
        category = frame_category(frame)
        if category is not None:
            return category
    return OTHER


def _thread_kind(head: str) -> str:
    if "MainThread" in head:
        return "event loop (main thread)"
    if "asyncio_" in head:
        return "asyncio.to_thread workers"
    return "other threads (aiosqlite, watchfiles)"


def _python_leaf(frames: Sequence[str]) -> str:
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        if match and ".py:" in match["where"]:
            return frame
    return "(no Python frame)"


def _call_site(frames: Sequence[str]) -> str:
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        if match and "gateway/" in match["where"] and "gateway/cli.py" not in match["where"]:
            return f"{match['name']} ({match['where'].split(':')[0]})"
    if any("greenlet" in f or "sqlalchemy/" in f for f in frames):
        return "(SQLAlchemy greenlet: statement execution, result rows)"
    return "(outside the gateway: server, event loop)"


@dataclass
class Profile:
    samples: int
    rate: int
    enrollments: int
    seconds: float
    server_cpu_s: float = 0.0  # from /proc over the profiled window
    categories: dict[str, int] = field(default_factory=dict)
    threads: dict[str, int] = field(default_factory=dict)
    call_sites: list[tuple[str, int]] = field(default_factory=list)
    top_python: list[tuple[str, int]] = field(default_factory=list)

    def ms_per_enrollment(self, samples: int) -> float:
        return samples / self.rate * 1000 / max(self.enrollments, 1)


def analyse(raw: str, *, rate: int, enrollments: int, seconds: float) -> Profile:
    """Aggregate py-spy's raw (collapsed) output: ``thread (id): name;frame;... count``."""
    categories: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    sites: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines()[:1_000_000]:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        head, *frames = stack.split(";")
        total += count
        categories[sample_category(frames)] += count
        threads[_thread_kind(head)] += count
        leaves[_python_leaf(frames)] += count
        sites[_call_site(frames)] += count
    return Profile(
        samples=total,
        rate=rate,
        enrollments=enrollments,
        seconds=seconds,
        categories=dict(categories.most_common()),
        threads=dict(threads.most_common()),
        call_sites=sites.most_common(20),
        top_python=leaves.most_common(15),
    )


def render(profile: Profile) -> str:
    share = max(profile.samples, 1)
    lines = [
        f"{profile.enrollments} enrollments in {profile.seconds:.0f} s "
        f"({profile.enrollments / max(profile.seconds, 1e-9):.1f}/s under the profiler)",
    ]
    if profile.server_cpu_s:
        lines.append(
            f"server CPU (all threads, /proc): "
            f"{profile.server_cpu_s * 1000 / max(profile.enrollments, 1):.1f} ms per enrollment, "
            f"{profile.server_cpu_s / max(profile.seconds, 1e-9):.2f} cores"
        )
    lines += [
        f"GIL held (py-spy --gil, {profile.samples} samples at {profile.rate}/s): "
        f"{profile.ms_per_enrollment(profile.samples):.1f} ms per enrollment, "
        f"{profile.samples / profile.rate / max(profile.seconds, 1e-9):.0%} of the wall time",
        "",
        f"{'GIL time by category':<72} {'share':>6} {'ms/enroll':>9}",
    ]
    for name, count in profile.categories.items():
        lines.append(f"{name:<72} {count / share:>6.1%} {profile.ms_per_enrollment(count):>9.2f}")
    lines += ["", "GIL time by thread:"]
    for name, count in profile.threads.items():
        lines.append(f"  {name:<40} {count / share:>6.1%}")
    lines += ["", "GIL time by call site (innermost gateway frame):"]
    for site, count in profile.call_sites:
        lines.append(f"  {count / share:>6.1%}  {site}")
    lines += ["", "innermost Python frame:"]
    for frame, count in profile.top_python:
        lines.append(f"  {count / share:>6.1%}  {frame}")
    return "\n".join(lines)


def py_spy() -> str | None:
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(servers.BIN))
    return found


async def profile_gateway(
    *, seconds: float, concurrency: int, rate: int, messages: int, postgres: bool
) -> Profile:
    if not postgres:
        return await _profile(
            seconds=seconds, concurrency=concurrency, rate=rate, messages=messages, database=None
        )
    name, url = await servers.create_database()
    try:
        return await _profile(
            seconds=seconds, concurrency=concurrency, rate=rate, messages=messages, database=url
        )
    finally:
        await servers.drop_database(name)


async def _profile(
    *, seconds: float, concurrency: int, rate: int, messages: int, database: str | None
) -> Profile:
    """Start a fresh gateway, warm it up, record py-spy while driving PKCSReq load."""
    tool = py_spy()
    if tool is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    secret = servers.bench_secret()
    with tempfile.TemporaryDirectory(prefix="scep-profile-") as tmp:
        server = servers.start_gateway("gateway-profile", Path(tmp), secret, database=database)
        try:
            cacert = await _get(server, "GetCACert")
            trust = CaTrust.from_get_ca_cert(cacert[0], cacert[1])
            pool = message_set(trust.recipients_der, secret, messages, workers=2, log=_log)
            target = f"{server.scep_path}?operation=PKIOperation"
            requests = [
                encode_request(
                    "POST",
                    HOST,
                    server.port,
                    target,
                    body=m.body,
                    content_type="application/x-pki-message",
                )
                for m in pool
            ]
            warm = 32
            await drive(
                HOST,
                server.port,
                requests.__getitem__,
                concurrency=4,
                seconds=10,
                max_requests=warm,
                request_timeout=10,
            )
            raw_path = CACHE / "profile-raw.txt"
            recorder = _record(tool, server.pid, seconds, rate, raw_path)
            await asyncio.sleep(0.5)  # py-spy attaches
            cpu0 = server.cpu_seconds()
            result = await drive(
                HOST,
                server.port,
                lambda i: requests[warm + i],
                concurrency=concurrency,
                seconds=seconds - 1,
                max_requests=len(requests) - warm,
                request_timeout=10,
                keep_body=lambda _i: True,
            )
            cpu = server.cpu_seconds() - cpu0
            _, err = await asyncio.to_thread(recorder.communicate, None, seconds + 60)
            if recorder.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')}")
        finally:
            server.stop()
    ok = sum(1 for s in result.samples if s.status == 200 and classify(s.body) == SUCCESS)
    # py-spy ran ~0.5 s longer than the load on each side; scale to its whole duration.
    enrollments = round(ok * seconds / max(result.window, 1e-9))
    profile = analyse(
        raw_path.read_text(errors="replace"), rate=rate, enrollments=enrollments, seconds=seconds
    )
    profile.server_cpu_s = cpu * seconds / max(result.window, 1e-9)
    (CACHE / "profile.json").write_text(json.dumps(asdict(profile), indent=1) + "\n")
    return profile


def _record(
    tool: str, pid: int, seconds: float, rate: int, output: Path
) -> subprocess.Popen[bytes]:
    """py-spy on ``pid`` for ``seconds``: every non-idle thread, native frames, raw output."""
    command = [tool, "record", "--pid", str(pid), "--duration", str(int(seconds))]
    command += ["--rate", str(rate), "--format", "raw", "--threads", "--gil"]
    command += ["--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def _get(server: servers.Server, operation: str) -> tuple[str, bytes]:
    response = await fetch(HOST, server.port, f"{server.scep_path}?operation={operation}")
    return response.headers.get("content-type", ""), response.body


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--messages", type=int, default=6000)
    parser.add_argument("--postgres", action="store_true", help="a fresh local PostgreSQL DB")
    parser.add_argument("--raw", type=Path, help="analyse an existing py-spy raw file")
    parser.add_argument("--enrollments", type=int, default=0, help="with --raw")
    args = parser.parse_args(argv)
    if args.raw:
        profile = analyse(
            args.raw.read_text(errors="replace"),
            rate=args.rate,
            enrollments=args.enrollments,
            seconds=args.seconds,
        )
    else:
        profile = asyncio.run(
            profile_gateway(
                seconds=args.seconds,
                concurrency=args.concurrency,
                rate=args.rate,
                messages=args.messages,
                postgres=args.postgres,
            )
        )
    print(render(profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
