"""The numbers of one run: dataclasses (dumped as JSON) and the text table `make bench` prints."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# The targets.
TARGET_BOUND_FRACTION = 0.60  # c=16: gateway >= 60% of the RSA bound
TARGET_VS_MICROMDM = 3.0  # c=16: gateway >= 3x micromdm
TARGET_P99_MS = 250.0  # c=64: p99 below 250 ms, zero failed enrollments
TARGET_VS_BARE = 0.80  # GetCACaps/GetCACert >= 80% of bare Quart


@dataclass
class Level:
    concurrency: int
    window_s: float
    sent: int
    successes: int
    enrollments_per_s: float
    p50_ms: float
    p99_ms: float
    failures: dict[str, int] = field(default_factory=dict)  # CertRep FAILURE by failInfo
    http_errors: dict[str, int] = field(default_factory=dict)  # non-200 answers by status
    timeouts: int = 0
    connection_errors: int = 0
    verified: int = 0
    verify_errors: list[str] = field(default_factory=list)
    count_bound: bool = False  # the message set ran out before the clock did
    server_cores: float = 0.0  # server CPU seconds per wall second during the window
    client_cores: float = 0.0
    other_cores: float = 0.0  # the rest of the machine (database server, other tenants)
    reconnects: int = 0

    @property
    def failed(self) -> int:
        return (
            sum(self.failures.values())
            + sum(self.http_errors.values())
            + self.timeouts
            + self.connection_errors
        )


@dataclass
class Memory:
    """VmHWM (peak RSS) in KiB at each point, and how many certificates were issued by then."""

    points: dict[str, int] = field(default_factory=dict)
    issued: dict[str, int] = field(default_factory=dict)


@dataclass
class Target:
    name: str
    description: str
    levels: list[Level] = field(default_factory=list)
    memory: Memory = field(default_factory=Memory)
    second_load: Level | None = None
    example_failure: str = ""
    error: str = ""  # why the target could not be measured
    notes: list[str] = field(default_factory=list)

    def level(self, concurrency: int) -> Level | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency), None)


@dataclass
class GetRate:
    target: str
    operation: str
    concurrency: int
    window_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cores: float


@dataclass
class Verdict:
    target: str
    value: str
    met: bool | None  # None: could not be measured


@dataclass
class Run:
    started_utc: str
    command: str
    machine: dict[str, str]
    settings: dict[str, float | int | str]
    rsa: dict[str, float | int]
    targets: list[Target] = field(default_factory=list)
    gets: list[GetRate] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    duration_s: float = 0.0

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def get_rate(self, target: str, operation: str) -> GetRate | None:
        return next((g for g in self.gets if g.target == target and g.operation == operation), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def judge(run: Run, gateway: str = "gateway-sqlite") -> list[Verdict]:
    bound = float(run.rsa.get("enrollments_per_s", 0.0))
    verdicts: list[Verdict] = []
    micromdm = run.target("micromdm")
    mm16 = micromdm.level(16) if micromdm else None
    for target in run.targets:
        if not target.name.startswith("gateway"):
            continue
        c16 = target.level(16)
        rate = c16.enrollments_per_s if c16 else None
        r = _ratio(rate, bound)
        verdicts.append(
            Verdict(
                f"{target.name} c=16 >= {TARGET_BOUND_FRACTION:.0%} of the RSA bound",
                f"{r:.0%} ({rate:.1f} of {bound:.1f}/s)" if r is not None and rate else "n/a",
                None if r is None else r >= TARGET_BOUND_FRACTION,
            )
        )
        r = _ratio(rate, mm16.enrollments_per_s if mm16 else None)
        verdicts.append(
            Verdict(
                f"{target.name} c=16 >= {TARGET_VS_MICROMDM:.0f}x micromdm",
                f"{r:.2f}x" if r is not None else "n/a",
                None if r is None else r >= TARGET_VS_MICROMDM,
            )
        )
        c64 = target.level(64)
        if c64 is None:
            verdicts.append(Verdict(f"{target.name} c=64 no failures, p99 < 250 ms", "n/a", None))
        else:
            ok = c64.failed == 0 and c64.p99_ms < TARGET_P99_MS and c64.successes > 0
            verdicts.append(
                Verdict(
                    f"{target.name} c=64 no failures, p99 < {TARGET_P99_MS:.0f} ms",
                    f"{c64.failed} failed, p99 {c64.p99_ms:.0f} ms",
                    ok,
                )
            )
    for operation in ("GetCACaps", "GetCACert"):
        g = run.get_rate(gateway, operation)
        b = run.get_rate("bare-quart", operation)
        r = _ratio(g.requests_per_s if g else None, b.requests_per_s if b else None)
        verdicts.append(
            Verdict(
                f"{operation} >= {TARGET_VS_BARE:.0%} of bare Quart",
                f"{r:.0%}" if r is not None else "n/a",
                None if r is None else r >= TARGET_VS_BARE,
            )
        )
    return verdicts


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _failures(level: Level) -> str:
    parts = [f"{k} {v}" for k, v in sorted(level.failures.items())]
    parts += [f"{k} {v}" for k, v in sorted(level.http_errors.items())]
    if level.timeouts:
        parts.append(f"timeout {level.timeouts}")
    if level.connection_errors:
        parts.append(f"conn-error {level.connection_errors}")
    return ", ".join(parts) or "0"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _ratios(run: Run, bound: float) -> list[str]:
    """gateway / RSA bound and gateway / micromdm at every level (noise-resistant numbers)."""
    micromdm = run.target("micromdm")
    rows = []
    for target in run.targets:
        if not target.name.startswith("gateway") or target.error:
            continue
        for lv in target.levels:
            mm = micromdm.level(lv.concurrency) if micromdm else None
            vs_mm = _ratio(lv.enrollments_per_s, mm.enrollments_per_s if mm else None)
            vs_bound = _ratio(lv.enrollments_per_s, bound)
            rows.append(
                [
                    target.name,
                    str(lv.concurrency),
                    f"{vs_bound:.0%}" if vs_bound is not None else "-",
                    f"{vs_mm:.2f}x" if vs_mm is not None else "-",
                ]
            )
    if not rows:
        return []
    return ["Ratios", *_table(["target", "conc", "/ RSA bound", "/ micromdm"], rows, {1, 2, 3})]


def render(run: Run) -> str:
    out: list[str] = []
    m = run.machine
    out.append(f"scep-gateway throughput benchmark, {run.started_utc} ({run.duration_s:.0f} s)")
    out.append(
        f"machine: {m.get('nproc')} cores, {m.get('cpu')}; Python {m.get('python')}, "
        f"cryptography {m.get('cryptography')}, {m.get('openssl')}"
    )
    out.append(f"command: {run.command}")
    out.append("")
    rsa = run.rsa
    out.append(
        f"RSA-2048 private-key ops/s ({rsa.get('processes')} processes in parallel, "
        f"decrypt+sign+sign): {float(rsa.get('ops_per_s', 0)):.0f} "
        f"(start {float(rsa.get('ops_per_s_start', 0)):.0f}, "
        f"end {float(rsa.get('ops_per_s_end', 0)):.0f})"
        f"  ->  bound {float(rsa.get('enrollments_per_s', 0)):.1f} enrollments/s (ops/3)"
    )
    out.append("")
    out.append(
        f"PKCSReq enrollments ({run.settings.get('seconds')} s per level, keep-alive, "
        f"fresh RSA-2048 key and CN per request)"
    )
    rows: list[list[str]] = []
    bound = float(rsa.get("enrollments_per_s", 0.0))
    for target in run.targets:
        if target.error:
            rows.append([target.name, *["-"] * 10, f"NOT MEASURED: {target.error}"])
            continue
        levels = [(str(lv.concurrency), lv) for lv in target.levels]
        if target.second_load is not None:
            levels.append((f"{target.second_load.concurrency} (2nd load)", target.second_load))
        for conc, lv in levels:
            rows.append(
                [
                    target.name,
                    conc,
                    _fmt(lv.enrollments_per_s) + ("*" if lv.count_bound else ""),
                    _fmt(lv.p50_ms),
                    _fmt(lv.p99_ms),
                    f"{lv.successes}/{lv.sent}",
                    _failures(lv),
                    f"{lv.verified}"
                    + (f" ({len(lv.verify_errors)} BAD)" if lv.verify_errors else ""),
                    f"{lv.server_cores:.2f}",
                    f"{lv.client_cores:.2f}",
                    f"{lv.other_cores:.2f}",
                    f"{lv.enrollments_per_s / bound:.0%}" if bound else "-",
                ]
            )
    out += _table(
        [
            "target",
            "conc",
            "enroll/s",
            "p50 ms",
            "p99 ms",
            "ok/sent",
            "failed",
            "verified",
            "srv cores",
            "cli cores",
            "other",
            "of bound",
        ],
        rows,
        {1, 2, 3, 4, 5, 7, 8, 9, 10, 11},
    )
    out.append(
        "latency over successful enrollments; verified: answers fully checked (signature, "
        "decryption, key, CA); cores: CPU per wall second of the server (all threads), the "
        "load generator, and the rest of the machine (PostgreSQL, other tenants)"
    )
    if any(lv.count_bound for t in run.targets for lv in t.levels):
        out.append("* the message set ran out before the clock: raise --messages")
    for target in run.targets:
        if target.example_failure:
            out.append(f"{target.name} first failure: {target.example_failure}")
        out += [f"{target.name}: {note}" for note in target.notes]
    out.append("")
    out += _ratios(run, bound)
    out.append("")
    out.append("GetCACaps / GetCACert (GET, keep-alive)")
    rows = [
        [
            g.target,
            g.operation,
            str(g.concurrency),
            _fmt(g.requests_per_s, 0),
            _fmt(g.p50_ms, 2),
            _fmt(g.p99_ms, 2),
            str(g.errors),
            f"{g.server_cores:.2f}",
        ]
        for g in run.gets
    ]
    out += _table(
        ["target", "operation", "conc", "req/s", "p50 ms", "p99 ms", "errors", "srv cores"],
        rows,
        {2, 3, 4, 5, 6, 7},
    )
    out.append("")
    out.append("Server memory: VmHWM (peak RSS) in MiB [certificates issued so far]")
    rows = []
    for target in run.targets:
        if not target.memory.points:
            continue
        rows.append(
            [
                target.name,
                *(
                    f"{target.memory.points[k] / 1024:.1f} [{target.memory.issued.get(k, 0)}]"
                    if k in target.memory.points
                    else "-"
                    for k in ("started", "before load", "after load", "after 2nd load")
                ),
            ]
        )
    out += _table(
        ["target", "started", "before load", "after load", "after 2nd load"], rows, {1, 2, 3, 4}
    )
    out.append("")
    out.append("Targets")
    for v in run.verdicts:
        mark = "n/a " if v.met is None else ("MET " if v.met else "MISS")
        out.append(f"  [{mark}] {v.target}: {v.value}")
    return "\n".join(out)
