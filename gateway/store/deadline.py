"""Deadlines on store operations, and the record of recent write failures that /readyz reads.

A store operation that waits on a frozen PostgreSQL, on another process's SQLite lock, or on
this process's queue of SQLite writers must end, not hang: every operation of
:class:`~gateway.store.Store` runs under one overall bound (:func:`bounded`), and the drivers
get their own, shorter, timeouts so that the rollback after a missed deadline ends too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from gateway.errors import StoreError

STORE_TIMEOUT_S = 5.0
"""Default overall bound of one store operation (``serve --store-timeout``)."""

UNREADY_AFTER_FAILURES = 3
"""Consecutive failed writes (with none succeeding in between) that make /readyz say 503."""

UNREADY_FOR_S = 15.0
"""How long after the last failed write /readyz keeps saying 503 when no write succeeds."""


class StoreUnavailable(StoreError):
    """The database (or its driver) failed: an outage, not an answer about the data."""


class StoreTimeout(StoreUnavailable):
    """A store operation did not finish within its deadline."""

    def __init__(self, action: str, seconds: float) -> None:
        super().__init__("database unavailable", detail=f"{action}: no answer within {seconds:g} s")


def driver_timeout(seconds: float) -> float:
    """The bound of one driver wait (a statement, a lock wait, a connect, a pool checkout).

    Half the overall bound: when the overall deadline cancels an operation, its rollback still
    has to pass through the driver, and that must end too (within this bound).
    """
    return seconds / 2


@asynccontextmanager
async def bounded(action: str, seconds: float) -> AsyncIterator[None]:
    """Run the body within ``seconds``; StoreTimeout when it does not finish in time."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as exc:
        raise StoreTimeout(action, seconds) from exc


@dataclass
class WriteHealth:
    """Whether recent writes failed: what /readyz reports so that an orchestrator takes a
    replica whose writes fail (disk full, database gone) out of rotation.

    Unhealthy once ``UNREADY_AFTER_FAILURES`` writes in a row failed, until a write succeeds or
    ``UNREADY_FOR_S`` pass without a new failure. The second way back matters: a replica out of
    rotation receives no writes that could succeed, so it must become ready again by itself and
    be tried (if writes still fail, the next ones make it unready again).
    """

    clock: Callable[[], float] = time.monotonic
    failures: int = 0  # consecutive, since the last successful write
    last_failure: float | None = None

    def failed(self) -> None:
        self.failures += 1
        self.last_failure = self.clock()

    def succeeded(self) -> None:
        self.failures = 0
        self.last_failure = None

    def failing(self) -> int:
        """The number of consecutive failed writes if they make the store unready, else 0."""
        if self.failures < UNREADY_AFTER_FAILURES or self.last_failure is None:
            return 0
        if self.clock() - self.last_failure >= UNREADY_FOR_S:
            return 0
        return self.failures
