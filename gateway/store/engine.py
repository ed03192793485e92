"""Async engines for the two supported databases.

``sqlite:///path`` (driver aiosqlite) is the embedded default; ``postgresql://...`` (driver
asyncpg) serves several replicas. On SQLite every connection gets a busy timeout and foreign
keys, :func:`enable_wal` puts the file in WAL mode, and SQLAlchemy (not the sqlite3 module)
emits ``BEGIN``, so that transactions cover reads and DDL too. Write transactions ask for
``BEGIN IMMEDIATE`` through :data:`WRITE_OPTIONS`: the write lock is taken, or waited for,
before the first statement.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from gateway.errors import StoreError

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite connection waits for another writer before it gives up."""

POSTGRES_CONNECT_TIMEOUT_S = 10.0

SQLITE_BEGIN_OPTION = "scep_gateway_sqlite_begin"
"""Execution option naming the SQLite ``BEGIN`` mode: ``DEFERRED`` (default) or ``IMMEDIATE``."""

WRITE_OPTIONS: dict[str, Any] = {SQLITE_BEGIN_OPTION: "IMMEDIATE"}
"""Execution options for a connection that is going to write."""

_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE"})
_NO_BEGIN = "NONE"


def parse_url(url: str) -> URL:
    """Parse a database URL and choose the async driver; StoreError if unsupported."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise StoreError("invalid database URL", detail=f"invalid database URL: {exc}") from exc
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    wanted = _DRIVERS.get(backend)
    if wanted is None:
        raise StoreError("unsupported database", detail=f"unsupported database {backend!r}")
    if parsed.drivername not in (backend, wanted):
        raise StoreError(
            "unsupported database driver",
            detail=f"unsupported driver {driver!r} for {backend}: use {wanted}",
        )
    parsed = parsed.set(drivername=wanted)
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise StoreError(
                "unsupported database",
                detail="in-memory SQLite cannot be shared by connections: use a file",
            )
    return parsed


SQLITE_FILE_MODE = 0o600
"""The database holds certificates, entity records and pending requests: owner only."""

_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def _prepare_sqlite_file(url: URL) -> None:
    """Create the directory and the database file, readable by the owner only.

    SQLite gives the -wal, -shm and -journal files it creates later the mode of the database
    file, so creating that one 0600 (whatever the umask) covers them. Files left more open by
    an earlier version are narrowed to 0600 too.
    """
    database = url.database or ""
    if database.startswith("file:"):
        return
    path = Path(database).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            "database unavailable", detail=f"cannot create directory for {database!r}: {exc}"
        ) from exc
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE)
    except FileExistsError:
        for file in (path, *(path.with_name(path.name + s) for s in _SQLITE_COMPANIONS)):
            _narrow(file)
        return
    except OSError as exc:
        raise StoreError(
            "database unavailable", detail=f"cannot create {database!r}: {exc.strerror}"
        ) from exc
    try:
        os.fchmod(fd, SQLITE_FILE_MODE)  # the umask may have taken more than group/other
    finally:
        os.close(fd)


def _narrow(path: Path) -> None:
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            path.chmod(SQLITE_FILE_MODE)
            log.warning("%s was mode %04o; narrowed to 0600", path, mode)
    except FileNotFoundError:
        return
    except OSError as exc:
        # Someone else's file we may write to: serve, but say so.
        log.warning("%s is readable by group/others and cannot be narrowed: %s", path, exc)


def _sqlite_on_connect(
    busy_timeout_ms: int,
) -> Callable[[DBAPIConnection, ConnectionPoolEntry], None]:
    def on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Stop the sqlite3 module from issuing BEGIN itself (it would skip SELECT and DDL).
        cast(Any, dbapi_connection).isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms:d}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    return on_connect


def _sqlite_on_begin(connection: Connection) -> None:
    mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
    if mode == _NO_BEGIN:
        return
    if mode not in _BEGIN_MODES:
        raise StoreError("internal store error", detail=f"bad SQLite BEGIN mode {mode!r}")
    connection.exec_driver_sql(f"BEGIN {mode}")


async def enable_wal(engine: AsyncEngine) -> None:
    """Switch a SQLite database to write-ahead logging (a lasting property of the file).

    Done once when the store opens rather than on every connection: when several connections
    switch a new file at the same moment, SQLite answers "database is locked" at once instead
    of waiting, so this retries until the busy timeout has passed.
    """
    if engine.dialect.name != "sqlite":
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.01
    while True:
        try:
            async with engine.connect() as connection:
                # The journal mode cannot change inside a transaction: emit no BEGIN.
                await connection.execution_options(**{SQLITE_BEGIN_OPTION: _NO_BEGIN})
                mode = await connection.scalar(text("PRAGMA journal_mode = WAL"))
        except OperationalError as exc:
            if "locked" not in str(exc.orig) or loop.time() >= deadline:
                raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)
            continue
        if mode != "wal":
            raise StoreError(
                "database unavailable", detail=f"SQLite refused WAL, journal mode is {mode!r}"
            )
        return


def create_store_engine(url: str, *, wait_timeout: float | None = None) -> AsyncEngine:
    """Create the engine for ``url`` (SQLite: also the file's directory). Dispose it after use.

    ``wait_timeout`` bounds each single wait of the driver: SQLite's busy handler, and on
    PostgreSQL the connect, every statement on the server side (``statement_timeout``), a
    session left idle inside a transaction, and the wait for a pooled connection; the
    client side of a statement is bounded by the store's deadline (``store/deadline.py``).
    None keeps the long defaults that migrations need.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_file(parsed)
        busy_ms = SQLITE_BUSY_TIMEOUT_MS if wait_timeout is None else int(wait_timeout * 1000)
        engine = create_async_engine(parsed, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect(max(busy_ms, 1)))
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    if wait_timeout is None:
        return create_async_engine(
            parsed,
            hide_parameters=True,
            pool_pre_ping=True,
            connect_args={"timeout": POSTGRES_CONNECT_TIMEOUT_S},
        )
    wait_ms = str(max(int(wait_timeout * 1000), 1))
    return create_async_engine(
        parsed,
        hide_parameters=True,
        pool_pre_ping=True,
        pool_timeout=wait_timeout,
        connect_args={
            "timeout": wait_timeout,
            # No asyncpg command_timeout: it arms a timer per statement, about 3 ms of CPU
            # per enrollment in `make bench` (docs/performance.md); a server that stops
            # answering is bounded by the store's overall deadline instead.
            "server_settings": {
                "statement_timeout": wait_ms,
                "lock_timeout": wait_ms,
                # A session of a frozen or vanished gateway must not hold its row locks.
                "idle_in_transaction_session_timeout": str(max(int(wait_timeout * 4000), 1)),
            },
        },
    )
