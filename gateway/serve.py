"""Serving over HTTP with Hypercorn: one process, or several on one port.

The only module that knows about Hypercorn, sockets and worker processes. One Python process
runs on one core at a time (the GIL); with ``workers`` > 1 each worker listens on its own
SO_REUSEPORT socket and the kernel spreads new connections over them. The workers share
nothing but the database and the files: each has its own snapshot, reloader and metrics.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.typing import Framework

from gateway.app import create_app, load_snapshot
from gateway.http.connections import CappedListener, ConnectionLimiter
from gateway.settings import Settings
from gateway.store import Store

log = logging.getLogger(__name__)


class _Config(HypercornConfig):
    """Hypercorn's configuration, plus the per-worker connection cap it does not have."""

    max_connections: int | None = None
    limiter: ConnectionLimiter | None = None  # set in the serving process

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        if self.limiter is None:
            return sockets
        return Sockets(
            sockets.secure_sockets,
            [CappedListener.wrapping(sock, self.limiter) for sock in sockets.insecure_sockets],
            sockets.quic_sockets,
        )


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = _Config()
    config.bind = [settings.bind]
    config.accesslog = None
    # HTTP-06: GET PKIOperation URLs of 4096-bit requests exceed h11's 16 KiB default.
    config.h11_max_incomplete_size = settings.max_url_bytes + 16 * 1024
    # Hypercorn's idle timer runs from the end of one response (or the accept) until the next
    # request head is complete, so this bounds both an idle keep-alive connection and a
    # request head sent slowly (slowloris).
    config.keep_alive_timeout = settings.keep_alive_timeout
    # Any silence this long while a connection is open closes it (head, body or idle); the
    # whole body is bounded by the app's BODY_TIMEOUT.
    # (Typed int in Hypercorn, used with asyncio.wait_for, which takes any float.)
    cast(Any, config).read_timeout = settings.read_timeout
    config.max_connections = settings.max_connections
    return config


async def _serve_one(make_app: Callable[[], Framework], config: HypercornConfig) -> None:
    app = make_app()
    if isinstance(config, _Config) and config.max_connections is not None:
        # One limiter per serving process: each worker caps its own connections.
        limiter = ConnectionLimiter(config.max_connections)
        config = copy.copy(config)
        config.limiter = limiter
        app = cast(Framework, limiter.wrap(cast(Any, app)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(app, config, shutdown_trigger=stop.wait)


async def _migrate(settings: Settings) -> None:
    store = await Store.open(settings.database)  # runs the Alembic migrations
    await store.close()


def prepare(settings: Settings) -> None:
    """Once, before any worker starts: create what the first start creates (demo CA, RA pair,
    generated secrets) and migrate the database, so that workers never race to do it."""
    load_snapshot(settings)
    asyncio.run(_migrate(settings))


def run(settings: Settings) -> int:
    prepare(settings)
    return serve_workers(lambda: create_app(settings), hypercorn_config(settings), settings.workers)


def serve_workers(make_app: Callable[[], Framework], config: HypercornConfig, workers: int) -> int:
    """Serve ``make_app()`` in ``workers`` processes (the app is made in each one)."""
    # Bind once first, without SO_REUSEPORT, so that a taken port (a stale instance too)
    # fails here, at once and in one line.
    try:
        for sock in config.create_sockets().insecure_sockets:
            sock.close()
    except OSError as exc:
        print(
            f"scep-gateway: cannot listen on {', '.join(config.bind)}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    if workers == 1:
        asyncio.run(_serve_one(make_app, config))
        return 0
    # Each worker listens on a socket of its own with SO_REUSEPORT (Hypercorn sets it when
    # workers > 1), so the kernel spreads connections evenly. One shared listening socket
    # would not: the worker that wakes first accepts every pending connection, and keep-alive
    # clients then stay on it.
    return _supervise(make_app, config, workers)


def _reuse_port_sockets(config: HypercornConfig, workers: int) -> list[socket.socket]:
    shared = copy.copy(config)
    shared.workers = workers  # makes Hypercorn set SO_REUSEPORT
    sockets: list[socket.socket] = shared.create_sockets().insecure_sockets
    return sockets


def _serve_worker(make_app: Callable[[], Framework], config: HypercornConfig, workers: int) -> None:
    """One worker: its own SO_REUSEPORT socket, handed to Hypercorn by descriptor."""
    sockets = _reuse_port_sockets(config, workers)  # referenced until serving ends
    own = copy.copy(config)
    own.bind = [f"fd://{sock.fileno()}" for sock in sockets]
    asyncio.run(_serve_one(make_app, own))


def _supervise(make_app: Callable[[], Framework], config: HypercornConfig, workers: int) -> int:
    """Fork the workers, pass SIGINT/SIGTERM on to them, and wait. A worker that dies while
    nobody asked it to stop takes the others down (the orchestrator restarts the pod)."""
    children: set[int] = set()
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            os.kill(pid, signum)

    # Before the first fork: a SIGTERM while forking must not orphan the workers.
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    exit_code = 0
    for _ in range(workers):
        try:
            pid = os.fork()
        except OSError:
            log.exception("cannot start a worker")
            exit_code = 1
            forward(signal.SIGTERM, None)
            break
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the siblings' supervisor
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 1
            try:
                _serve_worker(make_app, config, workers)
                code = 0
            except BaseException:
                log.exception("worker %d failed", os.getpid())
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.add(pid)
    log.info("%d workers: %s", len(children), ", ".join(map(str, sorted(children))))
    while children:
        pid, status = os.wait()
        children.discard(pid)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 and not stopping:
            log.error("worker %d exited with %d; stopping the others", pid, code)
            exit_code = 1
            forward(signal.SIGTERM, None)
    return exit_code
