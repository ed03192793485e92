"""Issue 9, item 4: unauthenticated requests with an outsized cost (docs/security.md, costs).

* CRLs are served from the stored DER: a GET costs one store query, however many
  certificates are revoked, and answers with ETag, Cache-Control and 304.
* A revocation is listed at once, on every instance sharing the database, even when its
  revocation time is older than the newest CRL (clocks of replicas differ).
* A source that keeps failing gets a signed FAILURE without decryption or code hashing,
  while another source still enrolls.
* Code checks (scrypt) and PKIOperations run behind bounded gates; a full gate answers 503.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from gateway import revocation
from gateway.app import create_app
from gateway.ca.crl import issued_by
from gateway.cli import _settings, parser
from gateway.errors import FailInfo, ScepFailure
from gateway.limits import (
    TOO_MANY_FAILURES,
    FailureBudget,
    Gate,
    Limits,
    LimitSettings,
    Overloaded,
    source_of,
)
from gateway.policy import authenticate
from gateway.policy.codes import verify_code
from gateway.scep.messages import PkiStatus
from gateway.settings import Settings
from gateway.store import Store
from tests.conftest import Gateway, body_of
from tests.store.helpers import make_certificate
from tests.support import Clock, Device, copy_config, fresh_key, register

SECRET = "Ra-Secret-Costs-1"
RA_ALIAS = {
    "aliases/ra-plain.yaml": "mode: ra\nca: ManagementCA\nra:\n  secret: {env: SCEP_COSTS_SECRET}\n"
}
CRL_PATH = "/crl/ManagementCA.crl"
PKI = "/scep/{alias}/pkiclient.exe?operation=PKIOperation"


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCEP_COSTS_SECRET", SECRET)


def _config(root: Path, files: Mapping[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config_dir = copy_config(root)
    for name, text in files.items():
        (config_dir / name).write_text(text)
    return config_dir


@asynccontextmanager
async def gateway_with(
    root: Path,
    data_dir: Path,
    *,
    limits: LimitSettings | None = None,
    database_url: str | None = None,
    clock: Callable[[], datetime] | None = None,
    files: Mapping[str, str] = RA_ALIAS,
) -> AsyncIterator[Gateway]:
    """Like tests.conftest.running_gateway, with the process settings this item adds."""
    settings = Settings(
        config_dir=_config(root, files),
        data_dir=data_dir,
        database_url=database_url or f"sqlite+aiosqlite:///{root / 'gateway.sqlite3'}",
        watch_config=False,
        refresh_crls=False,
        limits=limits or LimitSettings(),
    )
    app = create_app(settings, clock=clock) if clock else create_app(settings)
    async with app.test_app() as test_app:
        yield Gateway(app, test_app.test_client(), app.config["SERVICES"], settings)


async def post_from(gw: Gateway, body: bytes, address: str, alias: str = "ra-plain") -> Any:
    """A PKIOperation POST whose TCP peer is ``address`` (the ASGI scope's client)."""
    return await gw.client.post(
        PKI.format(alias=alias), data=body, scope_base={"client": (address, 40000)}
    )


async def enroll(gw: Gateway, device: Device, address: str = "192.0.2.10") -> x509.Certificate:
    body = device.pkcsreq(SECRET, gw.recipients("ra-plain"))
    response = await post_from(gw, body, address)
    assert response.status_code == 200
    reply = device.read(await body_of(response))
    assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
    return reply.certificates[0]


def crl_numbers(der: bytes) -> tuple[int, x509.CertificateRevocationList]:
    crl = x509.load_der_x509_crl(der)
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number, crl


class StoreSpy:
    """Counts the calls of every public coroutine method of one real store."""

    def __init__(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: Counter[str] = Counter()
        for name, method in inspect.getmembers(store, inspect.iscoroutinefunction):
            if not name.startswith("_"):
                monkeypatch.setattr(store, name, self._counting(name, method))

    def _counting(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return counted


# CRLs


async def test_crl_get_costs_one_query_whatever_is_revoked(
    tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with gateway_with(tmp_path, shared_data_dir) as gw:
        store = gw.services.store
        real = await enroll(gw, Device("listed", key=fresh_key()))
        await gw.services.crls.revoke(
            gw.services.snapshot().cas["ManagementCA"], real.serial_number, "keyCompromise"
        )
        # 60 more revoked certificates of this CA name (not of its key: not listed, but the
        # old code re-parsed and re-verified each of them on every request).
        for serial in range(1, 61):
            await store.record_issuance(make_certificate(serial, ca="ManagementCA"))
            await store.revoke_certificate("ManagementCA", serial, "superseded", datetime.now(UTC))
        first = await gw.client.get(CRL_PATH)  # stale after those revocations: signed once
        number, crl = crl_numbers(await body_of(first))
        assert crl.get_revoked_certificate_by_serial_number(real.serial_number) is not None

        spy = StoreSpy(store, monkeypatch)
        verified = Counter[str]()
        real_issued_by = issued_by

        def counting_issued_by(*args: Any) -> bool:
            verified["issued_by"] += 1
            return real_issued_by(*args)

        monkeypatch.setattr(revocation, "issued_by", counting_issued_by)
        for _ in range(20):
            again = await gw.client.get(CRL_PATH)
            assert again.status_code == 200
            assert crl_numbers(await body_of(again))[0] == number
        assert spy.calls == Counter({"crl_state": 20})
        assert verified["issued_by"] == 0


async def test_crl_answers_carry_etag_cache_control_and_304(
    tmp_path: Path, shared_data_dir: Path
) -> None:
    clock = Clock()
    async with gateway_with(tmp_path, shared_data_dir, clock=clock) as gw:
        ca = gw.services.snapshot().cas["ManagementCA"]
        key_path = f"/crl/ManagementCA/{ca.key_id}.crl"
        first = await gw.client.get(CRL_PATH)
        assert first.status_code == 200
        assert first.headers["Content-Type"] == "application/pkix-crl"
        etag = first.headers["ETag"]
        assert etag.startswith('"')
        assert etag.endswith('"')
        assert len(etag) > 10
        _, crl = crl_numbers(await body_of(first))
        cache = first.headers["Cache-Control"]
        assert cache.startswith("public, max-age=")
        max_age = int(cache.rsplit("=", 1)[1])
        assert crl.next_update_utc is not None
        refresh_at = crl.next_update_utc - timedelta(hours=ca.crl.refresh_before_hours)
        assert (
            0
            < max_age
            <= min(revocation.HTTP_MAX_AGE_SECONDS, (refresh_at - clock.now).total_seconds())
        )

        for path in (CRL_PATH, key_path):
            for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
                cached = await gw.client.get(path, headers={"If-None-Match": header})
                assert cached.status_code == 304, header
                assert await body_of(cached) == b""
                assert cached.headers["ETag"] == etag
            other = await gw.client.get(path, headers={"If-None-Match": '"not-it"'})
            assert other.status_code == 200
            assert await body_of(other) == await body_of(first)

        # A revocation is a new CRL: a new tag, and the old tag no longer matches.
        issued = await enroll(gw, Device("etag-revokee", key=fresh_key()))
        clock.now += timedelta(seconds=1)
        await gw.services.crls.revoke(ca, issued.serial_number, "superseded")
        after = await gw.client.get(CRL_PATH, headers={"If-None-Match": etag})
        assert after.status_code == 200
        assert after.headers["ETag"] != etag
        listed = crl_numbers(await body_of(after))[1]
        assert listed.get_revoked_certificate_by_serial_number(issued.serial_number) is not None

        # Near its refresh point the CRL may not be cached past it (RFC 5019 6.2 practice).
        refresh = timedelta(hours=ca.crl.refresh_before_hours)
        assert listed.next_update_utc is not None
        clock.now = listed.next_update_utc - refresh - timedelta(seconds=30)
        late = await gw.client.get(CRL_PATH)
        assert int(late.headers["Cache-Control"].rsplit("=", 1)[1]) <= 30


async def test_a_revocation_is_listed_at_once_on_every_instance(
    tmp_path: Path, shared_data_dir: Path, database_url: str
) -> None:
    """On SQLite and on PostgreSQL (the database_url fixture)."""
    clock = Clock()
    # A second replica whose clock is 5 s behind: its revocation times are older than the
    # CRL the first one signs meanwhile.
    behind = Clock(clock.now - timedelta(seconds=5))
    async with (
        gateway_with(tmp_path / "a", shared_data_dir, database_url=database_url, clock=clock) as a,
        gateway_with(tmp_path / "b", shared_data_dir, database_url=database_url, clock=behind) as b,
    ):
        one = await enroll(a, Device("replica-one", key=fresh_key()))
        two = await enroll(a, Device("replica-two", key=fresh_key()))
        for gw in (a, b):
            assert (await gw.client.get(CRL_PATH)).status_code == 200
        signed_by_a, _ = crl_numbers(await body_of(await a.client.get(CRL_PATH)))

        # Revoked on B, published on B: A serves B's CRL as it is (no signing of its own).
        ca_b = b.services.snapshot().cas["ManagementCA"]
        _, published = await b.services.crls.revoke(ca_b, one.serial_number, "keyCompromise")
        number, crl = crl_numbers(await body_of(await a.client.get(CRL_PATH)))
        assert number == published.number
        assert crl.get_revoked_certificate_by_serial_number(one.serial_number) is not None

        # Revoked on B with B's (late) clock, and B died before publishing: its revocation
        # time is before A's newest CRL, and it is listed all the same.
        clock.now += timedelta(seconds=1)
        await b.services.store.revoke_certificate(
            "ManagementCA", two.serial_number, "superseded", behind()
        )
        for gw in (a, b):
            _, crl = crl_numbers(await body_of(await gw.client.get(CRL_PATH)))
            assert crl.get_revoked_certificate_by_serial_number(two.serial_number) is not None
        # Signed anew once, not per request or per instance.
        numbers = {crl_numbers(await body_of(await gw.client.get(CRL_PATH)))[0] for gw in (a, b)}
        assert numbers == {published.number + 1}
        assert published.number > signed_by_a


# Failure budget


async def test_a_flooding_source_gets_a_signed_failure_without_code_checks(
    tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks = Counter[str]()
    real_verify = verify_code

    def counting_verify(code: str, stored: str) -> bool:
        checks["scrypt"] += 1
        return real_verify(code, stored)

    monkeypatch.setattr(authenticate, "verify_code", counting_verify)
    limits = LimitSettings(failure_burst=3, failures_per_second=0.001, refusal_delay_seconds=0.01)
    async with gateway_with(tmp_path, shared_data_dir, limits=limits) as gw:
        await register(gw.services.store, "victim", "Right-Code-1")
        attacker = Device("victim", key=fresh_key())
        # One captured request with a wrong code, replayed.
        replay = attacker.pkcsreq("Wrong-Code-1", gw.recipients("scep"))
        texts = []
        for _ in range(8):
            response = await post_from(gw, replay, "203.0.113.66", alias="scep")
            assert response.status_code == 200
            reply = attacker.read(await body_of(response))  # verified: a signed CertRep
            assert reply.status is PkiStatus.FAILURE
            assert reply.fail_info == FailInfo.BAD_REQUEST
            texts.append(reply.fail_info_text)
        assert texts == ["authentication failed"] * 3 + [TOO_MANY_FAILURES] * 5
        assert checks["scrypt"] == 3

        # Another source enrolls, with a code check, as usual.
        owner = Device("victim", key=fresh_key())
        body = owner.pkcsreq("Right-Code-1", gw.recipients("scep"))
        ok = owner.read(await body_of(await post_from(gw, body, "198.51.100.7", alias="scep")))
        assert ok.status is PkiStatus.SUCCESS, ok.fail_info_text
        assert checks["scrypt"] == 4
        # Successes never use the budget: a fleet behind one NAT enrolls on and on.
        for index in range(6):
            await enroll(gw, Device(f"nat-{index}", key=fresh_key()), address="198.51.100.8")


def test_the_failure_table_is_bounded_and_keys_ipv6_by_prefix() -> None:
    now = [0.0]
    budget = FailureBudget(burst=2, per_second=0.5, max_sources=100, clock=lambda: now[0])
    for index in range(20_000):
        budget.failed(f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}")
    assert len(budget) == 100
    budget.failed("192.0.2.1")
    budget.failed("192.0.2.1")
    assert not budget.allows("192.0.2.1")
    assert budget.allows("192.0.2.2")
    now[0] += 2.0  # one failure's worth refilled
    assert budget.allows("192.0.2.1")
    # An IPv6 client owns at least a /64: every address of it shares one budget.
    assert source_of("2001:db8:1:2::1") == source_of("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert source_of("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_of(None) == "-"


@dataclass(frozen=True)
class _Answer:
    status: str


async def test_what_uses_the_failure_budget() -> None:
    limits = Limits(
        LimitSettings(failure_burst=3, failures_per_second=0.001, refusal_delay_seconds=0.01)
    )
    refusals: list[ScepFailure | None] = []

    def answer(status: str) -> Callable[[ScepFailure | None], Awaitable[_Answer]]:
        async def run(refusal: ScepFailure | None) -> _Answer:
            refusals.append(refusal)
            return _Answer(status)

        return run

    async def shed(refusal: ScepFailure | None) -> _Answer:
        raise Overloaded("code check", 0.0)

    for status in ("SUCCESS", "PENDING") * 10:
        await limits.guard("192.0.2.1", (b"r",), answer(status))
    await limits.guard("192.0.2.1", (b"r",), answer("FAILURE"))
    with pytest.raises(Overloaded):  # decrypted, then no place for its code check
        await limits.guard("192.0.2.1", (b"r",), shed)
    await limits.guard("192.0.2.1", (b"r",), answer("FAILURE"))
    assert refusals[:-1] == [None] * 21
    assert refusals[-1] is None
    await limits.guard("192.0.2.1", (b"r",), answer("SUCCESS"))
    refused = refusals[-1]
    assert refused is not None
    assert refused.client_text == TOO_MANY_FAILURES
    assert refused.fail_info is FailInfo.BAD_REQUEST
    await limits.guard("192.0.2.2", (b"r",), answer("SUCCESS"))
    assert refusals[-1] is None


# Gates


async def test_code_checks_run_behind_a_bounded_gate(
    tmp_path: Path, shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    seen = {"active": 0, "peak": 0}
    real_verify = verify_code

    def observed_verify(code: str, stored: str) -> bool:
        with lock:
            seen["active"] += 1
            seen["peak"] = max(seen["peak"], seen["active"])
        try:
            time.sleep(0.05)  # widen the window in which another check could overlap
            return real_verify(code, stored)
        finally:
            with lock:
                seen["active"] -= 1

    monkeypatch.setattr(authenticate, "verify_code", observed_verify)
    limits = LimitSettings(hash_concurrency=1, max_wait_seconds=30.0)
    async with gateway_with(tmp_path, shared_data_dir, limits=limits) as gw:
        devices = [Device(f"gated-{i}", key=fresh_key()) for i in range(5)]
        for device in devices:
            await register(gw.services.store, device.common_name, "Gate-Code-1")
        bodies = [d.pkcsreq("Gate-Code-1", gw.recipients("scep")) for d in devices]
        responses = await asyncio.wait_for(
            asyncio.gather(
                *(post_from(gw, b, f"192.0.2.{i}", alias="scep") for i, b in enumerate(bodies))
            ),
            timeout=60,
        )
        for device, response in zip(devices, responses, strict=True):
            reply = device.read(await body_of(response))
            assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
        assert seen["peak"] == 1
        assert gw.services.enrollment.limits.hashing.peak == 1


async def test_a_cancelled_code_check_keeps_its_place_until_its_thread_ends() -> None:
    gate = Gate("code check", 1, 30.0)
    started, release = threading.Event(), threading.Event()

    def work() -> bool:
        started.set()
        return release.wait(30)

    caller = asyncio.create_task(gate.run(work))
    assert await asyncio.to_thread(started.wait, 30)
    caller.cancel()  # the client went away; the thread runs on
    done, _ = await asyncio.wait([caller], timeout=0.2)
    assert not done
    assert gate.active == 1
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert gate.active == 0


async def test_a_full_gate_answers_503_within_its_deadline(
    tmp_path: Path, shared_data_dir: Path
) -> None:
    limits = LimitSettings(pki_concurrency=1, max_wait_seconds=0.2)
    async with gateway_with(tmp_path, shared_data_dir, limits=limits) as gw:
        gate = gw.services.enrollment.limits.pki
        device = Device("patient", key=fresh_key())
        body = device.pkcsreq(SECRET, gw.recipients("ra-plain"))
        async with gate.slot():  # every place taken
            busy = await asyncio.wait_for(post_from(gw, body, "192.0.2.20"), timeout=10)
        assert busy.status_code == 503
        assert busy.headers["Retry-After"] == "1"
        assert await body_of(busy) == b"service busy, retry later\n"
        assert gate.refused == 1
        # Refused before any work: the same request enrolls once there is room.
        reply = device.read(await body_of(await post_from(gw, body, "192.0.2.20")))
        assert reply.status is PkiStatus.SUCCESS, reply.fail_info_text
        assert (gate.peak, gate.active) == (1, 0)


def test_serve_flags_set_the_limits() -> None:
    args = parser().parse_args(
        [
            "serve",
            "--pki-concurrency",
            "8",
            "--hash-concurrency",
            "3",
            "--max-wait-seconds",
            "1.5",
            "--failure-burst",
            "20",
            "--failures-per-second",
            "0.5",
            "--failure-sources",
            "500",
            "--refusal-delay-seconds",
            "0.25",
        ]
    )
    assert _settings(args).limits == LimitSettings(
        pki_concurrency=8,
        hash_concurrency=3,
        max_wait_seconds=1.5,
        failure_burst=20,
        failures_per_second=0.5,
        failure_sources=500,
        refusal_delay_seconds=0.25,
    )
    assert _settings(parser().parse_args(["serve"])).limits == LimitSettings()
