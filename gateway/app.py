"""create_app(settings): the Quart app, its services, and what starts and stops with it."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from gateway import assembly
from gateway.config import loader
from gateway.enrollment import Enrollment
from gateway.http.routes import Services, raw_response, scep
from gateway.limits import Limits
from gateway.metrics import Metrics
from gateway.registry import Snapshot
from gateway.reload import Reloader
from gateway.revocation import CrlPublisher
from gateway.settings import Settings
from gateway.store import Store

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


def load_snapshot(settings: Settings) -> Snapshot:
    """Load, create first-start material, assemble. Raises ConfigError."""
    config = loader.load(settings.config_dir)
    assembly.prepare(config, settings.data_dir, now=utc_now())
    for warning in assembly.permission_warnings(config, settings.data_dir):
        log.warning("config: %s", warning)
    return assembly.assemble(config, settings.data_dir)


def create_app(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> Quart:
    """The app. ``clock`` is the only source of "now" for requests (tests pass their own)."""
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Quart waits 60 s for a request body by default; a slow-body client holds a connection
    # and a worker task that long. 408 after the read timeout instead.
    app.config["BODY_TIMEOUT"] = settings.read_timeout
    app.register_blueprint(scep)
    metrics = Metrics()
    # A bad configuration fails the start (exit 1 in the CLI); later, only reloads can fail.
    reloader = Reloader(lambda: load_snapshot(settings), load_snapshot(settings), metrics)
    stop_watching = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    @app.before_serving
    async def start() -> None:
        store = await Store.open(settings.database, deadline=settings.store_timeout)
        crls = CrlPublisher(store, clock)
        enrollment = Enrollment(
            store,
            clock=clock,
            random=os.urandom,
            metrics=metrics,
            limits=Limits(settings.limits),
            crls=crls,
        )
        app.config["SERVICES"] = Services(
            reloader=reloader,
            enrollment=enrollment,
            store=store,
            max_url=settings.max_url_bytes,
            metrics=metrics,
            crls=crls,
            clock=clock,
        )
        if settings.watch_config:
            tasks.append(
                asyncio.create_task(
                    reloader.watch(settings.config_dir, settings.data_dir, stop_watching)
                )
            )
            # One loop step lets the watcher task create its OS watch: an edit made once
            # we are serving is never missed.
            await asyncio.sleep(0)
        if settings.refresh_crls:
            tasks.append(asyncio.create_task(crls.refresh_forever(reloader.current, stop_watching)))
        log.info("serving aliases %s", ", ".join(sorted(reloader.current().aliases)))

    @app.after_serving
    async def stop() -> None:
        stop_watching.set()
        for task in tasks:
            await task
        services: Services | None = app.config.get("SERVICES")
        if services is not None:
            await services.store.close()

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        # Framework answers (413 from MAX_CONTENT_LENGTH, 404 for unknown paths, 405): plain
        # text, no HTML.
        code = error.code or 400
        return raw_response(f"{error.name}\n".encode(), "text/plain", code)

    @app.errorhandler(Exception)
    async def internal_error(error: Exception) -> Response:
        log.exception("unhandled error", exc_info=error)
        return raw_response(b"internal error\n", "text/plain", 500)

    return app
