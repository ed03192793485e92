"""Bounds on what an unauthenticated request may cost a worker (docs/security.md, costs).

Two mechanisms, both per worker process and both in memory:

* :class:`Gate`: at most ``size`` holders at once, and a bounded wait for a place. A request
  that waits longer is refused with :class:`Overloaded` (HTTP 503 with Retry-After) before it
  costs anything expensive.
* :class:`FailureBudget`: a token bucket of FAILURE answers per client address, in a table
  of bounded size. A source over its budget gets a signed FAILURE without decryption or
  code hashing; successful requests never use the budget.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import ParamSpec, Protocol, TypeVar, cast

from gateway.errors import FailInfo, GatewayError, ScepFailure

_P = ParamSpec("_P")
_T = TypeVar("_T")


class _Answer(Protocol):
    @property
    def status(self) -> str: ...  # SUCCESS, FAILURE or PENDING


_A = TypeVar("_A", bound=_Answer)

TOO_MANY_FAILURES = "too many failed requests, retry later"
REFUSALS_KEPT = 256
"""Signed refusals kept per worker for replays of the very same request (a few KB each)."""


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Overloaded(GatewayError):
    """No place behind a gate within its deadline: HTTP 503 with Retry-After."""

    def __init__(self, gate: str, waited: float) -> None:
        super().__init__(
            "the server is busy, retry later",
            detail=f"no {gate} slot within {waited:.2f} s",
        )
        self.retry_after = 1


class Gate:
    """A semaphore whose wait is bounded: ``async with gate.slot():`` or ``await gate.run(f)``.

    Waiters are served in arrival order (asyncio.Semaphore is FIFO). ``active``/``peak`` and
    ``entered`` are for metrics and tests.
    """

    def __init__(
        self,
        name: str,
        size: int,
        max_wait: float,
        max_queue: int | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("a gate needs at least one place")
        self.name = name
        self.size = size
        self.max_wait = max_wait
        self.max_queue = max_queue
        self._semaphore = asyncio.Semaphore(size)
        self.waiting = 0
        self.active = 0
        self.peak = 0
        self.entered = 0
        self.refused = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if (
            self.max_queue is not None
            and self.waiting >= self.max_queue
            and self._semaphore.locked()
        ):
            self.refused += 1
            raise Overloaded(self.name, 0.0)
        self.waiting += 1
        try:
            async with asyncio.timeout(self.max_wait):
                await self._semaphore.acquire()
        except TimeoutError:
            self.refused += 1
            raise Overloaded(self.name, self.max_wait) from None
        finally:
            self.waiting -= 1
        self.active += 1
        self.entered += 1
        self.peak = max(self.peak, self.active)
        try:
            yield
        finally:
            self.active -= 1
            self._semaphore.release()

    async def run(self, function: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``function`` in a thread, behind the gate (for work that releases the GIL).

        A thread cannot be stopped: if the caller is cancelled, the place is kept until the
        thread is done, so the gate bounds running threads, not waiting callers."""
        async with self.slot():
            work = asyncio.ensure_future(asyncio.to_thread(function, *args, **kwargs))
            try:
                return await asyncio.shield(work)
            finally:
                if not work.done():
                    await asyncio.wait([work])
                if not work.cancelled():
                    work.exception()  # retrieved: the caller is gone, nobody else wants it


def source_of(address: str | None) -> str:
    """The budget key of a client address: the address, an IPv6 address by its /64 (one
    customer's network, RFC 6177), anything unparseable (a Unix socket) as itself."""
    if not address:
        return "-"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class FailureBudget:
    """``burst`` FAILURE answers per source at once, ``per_second`` more each second.

    At most ``max_sources`` sources are tracked; the least recently failing one is forgotten
    first (it gets a full budget again, which is what an idle source has anyway). Memory is
    bounded however many addresses an attacker uses.
    """

    burst: int = 50
    per_second: float = 1.0
    max_sources: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _table: OrderedDict[str, _Bucket] = field(default_factory=OrderedDict)

    def _refilled(self, source: str) -> _Bucket | None:
        bucket = self._table.get(source)
        if bucket is None:
            return None
        now = self.clock()
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.per_second)
        bucket.at = now
        if bucket.tokens >= self.burst:
            del self._table[source]  # full again: the same as not tracked
            return None
        return bucket

    def allows(self, address: str | None) -> bool:
        """Does this source have budget left for one more failure?"""
        bucket = self._refilled(source_of(address))
        return bucket is None or bucket.tokens >= 1

    def failed(self, address: str | None) -> None:
        """A FAILURE was answered to this source."""
        source = source_of(address)
        bucket = self._refilled(source)
        if bucket is None:
            bucket = self._table[source] = _Bucket(float(self.burst), self.clock())
            while len(self._table) > self.max_sources:
                self._table.popitem(last=False)
        self._table.move_to_end(source)
        bucket.tokens = max(0.0, bucket.tokens - 1)

    def __len__(self) -> int:
        return len(self._table)


@dataclass(frozen=True)
class LimitSettings:
    """The configurable bounds (``serve`` flags; defaults in docs/security.md)."""

    pki_concurrency: int = 16
    hash_concurrency: int = field(default_factory=lambda: max(1, cpu_count() // 2))
    max_wait_seconds: float = 2.0
    failure_burst: int = 50
    failures_per_second: float = 1.0
    failure_sources: int = 10_000
    refusal_delay_seconds: float = 1.0


def hashing_gate(settings: LimitSettings) -> Gate:
    size = settings.hash_concurrency
    return Gate(
        "code check",
        size,
        settings.max_wait_seconds,
        # Half the PKIOperation places may wait for a code check: a burst of CA-mode
        # enrollments waits its turn, a flood of them cannot hold every place.
        max_queue=max(4 * size, settings.pki_concurrency // 2),
    )


class Limits:
    """The gates and the failure budget of one worker."""

    def __init__(self, settings: LimitSettings | None = None) -> None:
        settings = settings or LimitSettings()
        self.settings = settings
        # Decryption, the policies and the signing of the answer of one PKIOperation.
        self.pki = Gate("PKIOperation", settings.pki_concurrency, settings.max_wait_seconds)
        # Memory-hard code checks (scrypt: 16 MiB and one core for tens of ms each). Their
        # waiters hold a PKIOperation place: a short queue keeps a flood of code checks from
        # taking every place from requests that need no code check.
        self.hashing = hashing_gate(settings)
        self._refused: OrderedDict[bytes, _Answer] = OrderedDict()
        self.failures = FailureBudget(
            burst=settings.failure_burst,
            per_second=settings.failures_per_second,
            max_sources=settings.failure_sources,
        )

    async def guard(
        self,
        client: str | None,
        request: Sequence[bytes],
        answer: Callable[[ScepFailure | None], Awaitable[_A]],
    ) -> _A:
        """Run ``answer`` for a PKIOperation from ``client`` behind the PKIOperation gate.

        ``answer`` gets the FAILURE to give instead of doing anything expensive when the
        source is over its budget (else None). A FAILURE answer uses the budget, and so does
        a code check refused for want of a place: it was decrypted for nothing. ``request``
        (its parts: alias and body) names the request: a replayed one that was refused gets the same
        signed refusal again, without another signature.
        """
        refusal = self.refusal(client)
        # Only a refused request is named: the others pay nothing for it.
        key = hashlib.sha256(b"\0".join(request)).digest() if refusal is not None else b""
        if refusal is not None:
            # A refused source waits for its answer: a client that sends its next request
            # when the answer came (a replay loop does) is slowed to one per delay and
            # connection, and leaves the event loop to everyone else.
            await asyncio.sleep(self.settings.refusal_delay_seconds)
            if key in self._refused:
                self._refused.move_to_end(key)
                self.failures.failed(client)
                return cast(_A, self._refused[key])
        async with self.pki.slot():
            try:
                result = await answer(refusal)
            except Overloaded:
                self.failures.failed(client)
                raise
        if result.status == "FAILURE":
            self.failures.failed(client)
        if refusal is not None:
            self._refused[key] = result
            while len(self._refused) > REFUSALS_KEPT:
                self._refused.popitem(last=False)
        return result

    def refusal(self, client: str | None) -> ScepFailure | None:
        """The FAILURE for a source over its budget, or None when it may go on."""
        if self.failures.allows(client):
            return None
        return ScepFailure(
            FailInfo.BAD_REQUEST, TOO_MANY_FAILURES, detail=f"failure budget of {client} spent"
        )
