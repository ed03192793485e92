"""`python -m benchmarks.run`: the whole throughput benchmark in one run (about 5 minutes).

1. RSA-2048 private-key operations/s of this machine on every core: the bound.
2. scep-gateway (RA mode, shared secret, RSA-2048 CA) on SQLite: GetCACaps and GetCACert at
   concurrency 16 against a bare Quart app on the same Hypercorn settings; then PKCSReq
   enrollments at concurrency 1, 4, 16 and 64; then a second load of as many enrollments,
   reading the server's peak RSS in between.
3. The same gateway on a fresh PostgreSQL database.
4. micromdm's scepserver under the same load.

Every answer is classified (SUCCESS, FAILURE by failInfo, HTTP error, timeout); a sample of
each level is fully verified. The report is printed as a table and written as JSON to
benchmarks/.cache/last-run.json. Everything talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import asn1crypto
import cryptography
from cryptography.hazmat.backends.openssl import backend as openssl_backend

from benchmarks import rsa_bound, servers
from benchmarks.httpload import LoadResult, drive, encode_request, fetch, percentile
from benchmarks.messages import CACHE, BenchMessage, ensure_keys, message_set
from benchmarks.report import GetRate, Level, Run, Target, judge, render
from benchmarks.servers import HOST, Server
from benchmarks.verify import SUCCESS, CaTrust, VerificationError, classify, verify_response
from gateway.scep import client

LEVELS = (1, 4, 16, 64)
GET_CONCURRENCY = 16
GET_ROUNDS = 2
PKI_CONTENT_TYPE = "application/x-pki-message"


def log(text: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {text}", file=sys.stderr, flush=True)


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "openssl": openssl_backend.openssl_version_text(),
        "asn1crypto": asn1crypto.__version__,
    }
    for package in ("quart", "hypercorn", "sqlalchemy", "aiosqlite", "asyncpg"):
        try:
            info[package] = version(package)
        except PackageNotFoundError:
            info[package] = "?"
    try:
        out = subprocess.run(
            [str(servers.SCEPSERVER), "-version"], capture_output=True, timeout=10, check=False
        )
        info["scepserver"] = (out.stdout or out.stderr).decode(errors="replace").strip()
    except OSError:
        info["scepserver"] = "missing"
    return info


async def postgres_version() -> str:
    import asyncpg

    try:
        conn = await asyncpg.connect(**servers.PG_ADMIN, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"unreachable ({exc})"
    try:
        value = await conn.fetchval("SHOW server_version")
        return str(value)
    finally:
        await conn.close()


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat, idle and iowait excluded)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Pool:
    """A target's message set, consumed front to back (each message is used once per server)."""

    def __init__(self, messages: Sequence[BenchMessage]) -> None:
        self.messages = messages
        self.cursor = 0

    @property
    def remaining(self) -> int:
        return len(self.messages) - self.cursor

    def take(self, count: int) -> Sequence[BenchMessage]:
        taken = self.messages[self.cursor : self.cursor + count]
        self.cursor += len(taken)
        return taken


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.secret = servers.bench_secret()
        self.workers = len(os.sched_getaffinity(0))
        self.example_failures: dict[str, str] = {}

    # -- the pieces -------------------------------------------------------------------------

    async def trust_of(self, server: Server) -> tuple[CaTrust, bytes, str, bytes]:
        """GetCACert (and GetCACaps) of ``server``: whom to encrypt to, whom to trust."""
        cacert = await fetch(HOST, server.port, f"{server.scep_path}?operation=GetCACert")
        caps = await fetch(HOST, server.port, f"{server.scep_path}?operation=GetCACaps")
        if cacert.status != 200 or caps.status != 200:
            raise RuntimeError(f"GetCACert {cacert.status} / GetCACaps {caps.status}")
        content_type = cacert.headers.get("content-type", "")
        return (
            CaTrust.from_get_ca_cert(content_type, cacert.body),
            cacert.body,
            content_type,
            caps.body,
        )

    def messages_for(self, trust: CaTrust, count: int) -> list[BenchMessage]:
        return message_set(trust.recipients_der, self.secret, count, workers=self.workers, log=log)

    async def enroll(
        self,
        server: Server,
        pool: Pool,
        trust: CaTrust,
        *,
        concurrency: int,
        seconds: float,
        max_requests: int,
        sample: int,
    ) -> Level:
        """One closed-loop level of PKCSReq; classify every answer, verify a sample."""
        messages = pool.messages[pool.cursor : pool.cursor + max_requests]
        target = f"{server.scep_path}?operation=PKIOperation"
        requests = [
            encode_request(
                "POST", HOST, server.port, target, body=m.body, content_type=PKI_CONTENT_TYPE
            )
            for m in messages
        ]
        busy0 = machine_busy_seconds()
        cpu0, client0, wall0 = server.cpu_seconds(), time.process_time(), time.perf_counter()
        result = await drive(
            HOST,
            server.port,
            requests.__getitem__,
            concurrency=concurrency,
            seconds=seconds,
            max_requests=len(requests),
            request_timeout=self.args.timeout,
            keep_body=lambda _i: True,
        )
        wall = time.perf_counter() - wall0
        cpu1, client1 = server.cpu_seconds(), time.process_time()
        busy1 = machine_busy_seconds()
        pool.take(result.drawn)
        level = self._level(server.name, result, messages, trust, sample)
        level.server_cores = (cpu1 - cpu0) / wall
        level.client_cores = (client1 - client0) / wall
        # Everything else on the machine (the database server, other tenants): noise check.
        level.other_cores = max(
            0.0, (busy1 - busy0) / wall - level.server_cores - level.client_cores
        )
        return level

    def _level(
        self,
        name: str,
        result: LoadResult,
        messages: Sequence[BenchMessage],
        trust: CaTrust,
        sample: int,
    ) -> Level:
        failures: Counter[str] = Counter()
        http_errors: Counter[str] = Counter()
        timeouts = conn_errors = 0
        ok_latency: list[float] = []
        ok_in_window = 0
        successes: list[int] = []
        for s in sorted(result.samples, key=lambda s: s.index):
            if s.status == 0:
                if s.error == "timeout":
                    timeouts += 1
                else:
                    conn_errors += 1
                continue
            if s.status != 200:
                http_errors[f"HTTP {s.status}"] += 1
                continue
            kind = classify(s.body)
            if kind != SUCCESS:
                failures[kind] += 1
                if name not in self.example_failures:
                    self.example_failures[name] = _describe_failure(s.body)
                continue
            successes.append(s.index)
            ok_latency.append(s.latency)
            if s.finished <= result.window_end:
                ok_in_window += 1
        verified, errors = self._verify_sample(result, messages, trust, successes, sample)
        return Level(
            concurrency=result.concurrency,
            window_s=round(result.window, 3),
            sent=len(result.samples),
            successes=len(successes),
            enrollments_per_s=ok_in_window / result.window,
            p50_ms=percentile(ok_latency, 50) * 1000,
            p99_ms=percentile(ok_latency, 99) * 1000,
            failures=dict(failures),
            http_errors=dict(http_errors),
            timeouts=timeouts,
            connection_errors=conn_errors,
            verified=verified,
            verify_errors=errors,
            count_bound=result.exhausted,
            reconnects=result.connects - result.concurrency,
        )

    @staticmethod
    def _verify_sample(
        result: LoadResult,
        messages: Sequence[BenchMessage],
        trust: CaTrust,
        successes: list[int],
        sample: int,
    ) -> tuple[int, list[str]]:
        """Fully verify ``sample`` successful answers spread over the level (after the timed
        window, so the verifier's RSA work does not compete with the server)."""
        if not successes or sample <= 0:
            return 0, []
        step = max(1, len(successes) // sample)
        picked = successes[::step][:sample]
        bodies = {s.index: s.body for s in result.samples if s.index in set(picked)}
        errors: list[str] = []
        for index in picked:
            try:
                verify_response(bodies[index], messages[index], trust)
            except VerificationError as exc:
                errors.append(f"#{index}: {exc}")
        return len(picked) - len(errors), errors

    async def gets(self, servers_: Sequence[Server], seconds: float) -> list[GetRate]:
        """GetCACaps and GetCACert on each server, in ``GET_ROUNDS`` rounds of ``seconds``
        each, alternating which server goes first, so that both see the same machine."""
        rates = []
        for operation in ("GetCACaps", "GetCACert"):
            pooled: dict[str, list[tuple[LoadResult, float]]] = {s.name: [] for s in servers_}
            for round_ in range(GET_ROUNDS):
                order = servers_ if round_ % 2 == 0 else list(reversed(servers_))
                for server in order:
                    request = encode_request(
                        "GET", HOST, server.port, f"{server.scep_path}?operation={operation}"
                    )
                    cpu0, wall0 = server.cpu_seconds(), time.perf_counter()
                    result = await drive(
                        HOST,
                        server.port,
                        _constant(request),
                        concurrency=GET_CONCURRENCY,
                        seconds=seconds,
                        max_requests=self.args.max_gets,
                        request_timeout=self.args.timeout,
                    )
                    cores = (server.cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
                    pooled[server.name].append((result, cores))
            for name, results in pooled.items():
                ok = [s for r, _ in results for s in r.samples if s.status == 200]
                in_window = sum(
                    1
                    for r, _ in results
                    for s in r.samples
                    if s.status == 200 and s.finished <= r.window_end
                )
                window = sum(r.window for r, _ in results)
                latencies = [s.latency for s in ok]
                rates.append(
                    GetRate(
                        target=name,
                        operation=operation,
                        concurrency=GET_CONCURRENCY,
                        window_s=round(window, 3),
                        requests_per_s=in_window / window,
                        p50_ms=percentile(latencies, 50) * 1000,
                        p99_ms=percentile(latencies, 99) * 1000,
                        errors=sum(len(r.samples) for r, _ in results) - len(ok),
                        server_cores=sum(c for _, c in results) / len(results),
                    )
                )
                log(f"  {name} {operation}: {rates[-1].requests_per_s:.0f} req/s")
        return rates

    async def ladder(
        self, server: Server, target: Target, trust: CaTrust, messages: Sequence[BenchMessage]
    ) -> Pool:
        """Warm-up, then every level; peak RSS before and after."""
        pool = Pool(messages)
        args = self.args
        target.memory.points["started"] = server.status_kib("VmHWM")
        target.memory.issued["started"] = 0
        warm = await self.enroll(
            server,
            pool,
            trust,
            concurrency=4,
            seconds=10,
            max_requests=args.warmup,
            sample=args.warmup,
        )
        issued = warm.successes
        if warm.successes == 0 or warm.verify_errors:
            target.error = (
                f"warm-up: {warm.successes}/{warm.sent} SUCCESS; "
                f"failures {warm.failures or warm.http_errors}; {warm.verify_errors[:2]}"
            )
            target.example_failure = self.example_failures.get(server.name, "")
            log(f"  {server.name} does not enroll: {target.error}")
            return pool
        target.memory.points["before load"] = server.status_kib("VmHWM")
        target.memory.issued["before load"] = issued
        for concurrency in args.levels:
            if pool.remaining < concurrency:
                target.notes.append(
                    f"c={concurrency} not run: the message set ran out (raise --messages)"
                )
                break
            level = await self.enroll(
                server,
                pool,
                trust,
                concurrency=concurrency,
                seconds=args.seconds,
                max_requests=min(pool.remaining, args.max_per_level),
                sample=args.sample,
            )
            issued += level.successes
            target.levels.append(level)
            log(
                f"  {server.name} c={concurrency}: {level.enrollments_per_s:.1f} enroll/s, "
                f"p50 {level.p50_ms:.0f} ms, p99 {level.p99_ms:.0f} ms, "
                f"{level.successes}/{level.sent} ok, verified {level.verified}"
                + (f", VERIFY ERRORS {level.verify_errors[:2]}" if level.verify_errors else "")
                + (", count-bound" if level.count_bound else "")
            )
            if not server.alive():
                target.error = f"server died at c={concurrency}"
                break
        target.memory.points["after load"] = server.status_kib("VmHWM")
        target.memory.issued["after load"] = issued
        target.example_failure = self.example_failures.get(server.name, "")
        return pool

    async def second_load(self, server: Server, target: Target, pool: Pool, trust: CaTrust) -> None:
        """As many enrollments again as the first load issued, to see whether RSS grows."""
        first = target.memory.issued.get("after load", 0) - target.memory.issued.get(
            "before load", 0
        )
        count = min(first, pool.remaining)
        if count <= 0:
            return
        level = await self.enroll(
            server,
            pool,
            trust,
            concurrency=16,
            seconds=self.args.seconds * len(self.args.levels) * 3,
            max_requests=count,
            sample=self.args.sample,
        )
        level.count_bound = count < first  # it stops at ``count`` by design
        target.second_load = level
        target.memory.points["after 2nd load"] = server.status_kib("VmHWM")
        target.memory.issued["after 2nd load"] = (
            target.memory.issued["after load"] + level.successes
        )
        log(
            f"  {server.name} second load: {level.successes}/{count} ok "
            f"({'all of them' if count == first else 'message set too small for an equal load'}),"
            f" VmHWM {target.memory.points['after 2nd load'] / 1024:.1f} MiB"
        )

    # -- the run ----------------------------------------------------------------------------

    def pool_size(self) -> int:
        size: int = self.args.messages
        return size

    async def gateway_messages(self, server: Server, trust: CaTrust) -> list[BenchMessage]:
        messages = self.messages_for(trust, self.pool_size())
        if self.args.gateway_mode == "ca":
            log(f"  registering {len(messages)} end entities (development mode: CA mode)")
            names = [m.common_name for m in messages]
            await servers.register_entities(server.database, names, self.secret)
        return messages

    async def gateway_sqlite(self, run: Run) -> None:
        target = Target(
            "gateway-sqlite",
            f"scep-gateway serve --workers {self.args.workers}, RA mode, SQLite (default)",
        )
        run.targets.append(target)
        log("gateway on SQLite")
        server = servers.start_gateway(
            "gateway-sqlite",
            self.workdir / "gw-sqlite",
            self.secret,
            mode=self.args.gateway_mode,
            workers=self.args.workers,
        )
        bare: Server | None = None
        try:
            trust, cacert, cacert_type, caps = await self.trust_of(server)
            if not self.args.skip_gets:
                bare = servers.start_bare(
                    self.workdir / "bare", caps, cacert, cacert_type, workers=self.args.workers
                )
                run.gets += await self.gets([server, bare], self.args.get_seconds)
                bare.stop()
                bare = None
            messages = await self.gateway_messages(server, trust)
            pool = await self.ladder(server, target, trust, messages)
            if not target.error and not self.args.skip_second_load:
                await self.second_load(server, target, pool, trust)
        finally:
            if bare is not None:
                bare.stop()
            server.stop()

    async def gateway_postgres(self, run: Run) -> None:
        target = Target(
            "gateway-postgres",
            f"scep-gateway serve --workers {self.args.workers}, RA mode, PostgreSQL (local)",
        )
        run.targets.append(target)
        log("gateway on PostgreSQL")
        try:
            name, url = await servers.create_database()
        except Exception as exc:
            target.error = f"PostgreSQL: {exc}"
            log(f"  skipped: {target.error}")
            return
        try:
            server = servers.start_gateway(
                "gateway-postgres",
                self.workdir / "gw-postgres",
                self.secret,
                database=url,
                mode=self.args.gateway_mode,
                workers=self.args.workers,
            )
            try:
                trust, *_ = await self.trust_of(server)
                messages = await self.gateway_messages(server, trust)
                await self.ladder(server, target, trust, messages)
            finally:
                server.stop()
        finally:
            await servers.drop_database(name)

    async def micromdm(self, run: Run) -> None:
        target = Target("micromdm", "micromdm scepserver (Debian package scep)")
        run.targets.append(target)
        if not servers.SCEPSERVER.exists():
            target.error = f"{servers.SCEPSERVER} missing (apt-get install scep)"
            return
        log("micromdm scepserver")
        server = servers.start_micromdm(self.workdir / "micromdm", self.secret)
        try:
            trust, *_ = await self.trust_of(server)
            messages = self.messages_for(trust, self.pool_size())
            await self.ladder(server, target, trust, messages)
        finally:
            server.stop()


def _constant(request: bytes) -> Callable[[int], bytes]:
    def request_for(_index: int) -> bytes:
        return request

    return request_for


def _describe_failure(body: bytes) -> str:
    try:
        rep = client.read_cert_rep(body)
    except Exception as exc:
        return f"unreadable CertRep: {type(exc).__name__}"
    return f"pkiStatus {rep.status.name}, failInfo {rep.fail_info}: {rep.fail_info_text!r}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per enrollment level (default 8)")
    p.add_argument(
        "--levels",
        type=lambda s: tuple(int(x) for x in s.split(",")),
        default=LEVELS,
        help="concurrency levels (default 1,4,16,64)",
    )
    p.add_argument("--messages", type=int, default=10000, help="message set size per target")
    p.add_argument("--max-per-level", type=int, default=2500, help="count bound per level")
    p.add_argument("--warmup", type=int, default=24, help="enrollments before the first level")
    p.add_argument("--sample", type=int, default=20, help="answers fully verified per level")
    p.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    p.add_argument(
        "--get-seconds", type=float, default=3.0, help="per GetCACaps/GetCACert run (2 rounds)"
    )
    p.add_argument("--max-gets", type=int, default=200_000, help="count bound per GET run")
    p.add_argument("--rsa-seconds", type=float, default=3.0)
    p.add_argument(
        "--only", default="gateway-sqlite,gateway-postgres,micromdm", help="targets to run"
    )
    p.add_argument("--skip-gets", action="store_true")
    p.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="scep-gateway serve --workers (default: one per core, as the README advises)",
    )
    p.add_argument(
        "--gateway-mode",
        choices=("ra", "ca"),
        default="ra",
        help="ra (the benchmark); ca only to develop the harness: pre-registered end entities, "
        "scrypt-checked codes, not comparable",
    )
    p.add_argument("--skip-second-load", action="store_true")
    p.add_argument("--json", type=Path, default=CACHE / "last-run.json")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace) -> Run:
    started = time.monotonic()
    machine = machine_info()
    machine["postgresql"] = await postgres_version()
    run = Run(
        started_utc=f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        command=shlex.join(["python", "-m", "benchmarks.run", *sys.argv[1:]]),
        machine=machine,
        settings={
            "seconds": args.seconds,
            "levels": ",".join(map(str, args.levels)),
            "messages": args.messages,
            "max_per_level": args.max_per_level,
            "timeout": args.timeout,
            "get_seconds": args.get_seconds,
            "sample": args.sample,
        },
        rsa={},
    )
    log(f"RSA-2048 bound: {args.rsa_seconds:.0f} s on {machine['nproc']} processes")
    first = await asyncio.to_thread(rsa_bound.measure, args.rsa_seconds)
    log(f"  {first.ops_per_second:.0f} ops/s -> {first.enrollments_per_second:.0f} enrollments/s")
    workers = len(os.sched_getaffinity(0))
    await asyncio.to_thread(ensure_keys, args.messages, workers=workers, log=log)
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="scep-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        steps: list[tuple[str, Callable[[Run], object]]] = [
            ("gateway-sqlite", bench.gateway_sqlite),
            ("gateway-postgres", bench.gateway_postgres),
            ("micromdm", bench.micromdm),
        ]
        for name, step in steps:
            if name not in only:
                continue
            try:
                await step(run)  # type: ignore[misc]
            except Exception as exc:
                log(f"{name} failed: {type(exc).__name__}: {exc}")
                target = run.target(name)
                if target is not None and not target.error:
                    target.error = f"{type(exc).__name__}: {exc}"
    # Again at the end: the bound is the mean, and the two values show how noisy the machine was.
    log("RSA-2048 bound again")
    last = await asyncio.to_thread(rsa_bound.measure, args.rsa_seconds)
    ops = (first.ops_per_second + last.ops_per_second) / 2
    run.rsa = {
        "processes": first.processes,
        "seconds": first.seconds,
        "ops_per_s_start": round(first.ops_per_second, 1),
        "ops_per_s_end": round(last.ops_per_second, 1),
        "ops_per_s": round(ops, 1),
        "enrollments_per_s": round(ops / rsa_bound.OPS_PER_ENROLLMENT, 1),
    }
    log(f"  {last.ops_per_second:.0f} ops/s; bound {run.rsa['enrollments_per_s']} enrollments/s")
    run.verdicts = judge(run)
    run.duration_s = round(time.monotonic() - started, 1)
    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = asyncio.run(amain(args))
    text = render(run)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(dataclasses.asdict(run), indent=1) + "\n")
    log(f"JSON written to {args.json}")
    bad = any(lv.verify_errors for t in run.targets for lv in t.levels)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
