"""The SCEP and health endpoints (DESIGN.md section 7). The only module that knows Quart routes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from quart import Blueprint, Response, current_app, request

from gateway.enrollment import Enrollment
from gateway.errors import (
    GatewayError,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    StoreError,
    UnknownAlias,
)
from gateway.http import transport
from gateway.http.caching import crl_response
from gateway.limits import Overloaded
from gateway.metrics import Metrics
from gateway.registry import CA_RA_CERT_CHAIN, NEXT_CA_CERT, CaRuntime, Snapshot
from gateway.reload import Reloader
from gateway.revocation import CrlPublisher
from gateway.store import Store

log = logging.getLogger(__name__)

PKI_MESSAGE = "application/x-pki-message"
DEFAULT_ALIAS = "scep"  # EJBCA: an empty alias is alias `scep`


def raw_response(body: bytes, content_type: str, status: int = 200) -> Response:
    """HTTP-08: exact content types, no `; charset=` parameter appended."""
    response = Response(body, status=status)
    response.headers["Content-Type"] = content_type
    return response


def problem(error: GatewayError) -> Response:
    status = 400
    if isinstance(error, UnknownAlias):
        status = 404
    elif isinstance(error, StoreError):
        # The database is down or refused: a server fault, not the client's.
        log.error("store error: %s", error.detail)
        return raw_response(b"service unavailable\n", "text/plain", 503)
    elif isinstance(error, Overloaded):
        # Transient: the client retries (RFC 9110 15.6.4); signing a FAILURE would be final
        # and would spend the private-key operation that is short (docs/security.md).
        log.warning("HTTP 503: %s", error.detail)
        response = raw_response(b"service busy, retry later\n", "text/plain", 503)
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    elif isinstance(error, MalformedRequest | PayloadTooLarge | NotFound):
        status = error.status
    log.info("HTTP %d: %s", status, error.detail)
    return raw_response(f"{error.client_text}\n".encode(), "text/plain", status)


@dataclass(frozen=True)
class Services:
    """What the routes need, set up by the app at start."""

    reloader: Reloader
    enrollment: Enrollment
    store: Store
    max_url: int
    metrics: Metrics
    crls: CrlPublisher
    clock: Callable[[], datetime]

    def snapshot(self) -> Snapshot:
        return self.reloader.current()


def services() -> Services:
    found: Services = current_app.config["SERVICES"]
    return found


scep = Blueprint("scep", __name__)

SCEP_PATHS = (
    "/scep/<alias>/pkiclient.exe",
    "/scep/<alias>",
    "/scep/<alias>/",
    "/ejbca/publicweb/apply/scep/<alias>/pkiclient.exe",
)
DEFAULT_PATHS = (
    "/scep/pkiclient.exe",
    "/cgi-bin/pkiclient.exe",  # HTTP-01: the clients' default SCEPPATH
    "/ejbca/publicweb/apply/scep/pkiclient.exe",
)


async def _serve(alias_name: str) -> Response:
    svc = services()
    response, operation = await _answer(svc, alias_name)
    svc.metrics.inc(
        "scep_requests_total",
        alias=alias_name if alias_name in svc.snapshot().aliases else "unknown",
        operation=operation,
        status=str(response.status_code),
    )
    return response


async def _answer(svc: Services, alias_name: str) -> tuple[Response, str]:
    """The response, and the operation for the metrics (``invalid`` if it did not parse)."""
    started = time.perf_counter()
    op = "invalid"
    try:
        body = b""
        if request.method == "POST":
            data = await request.get_data(cache=False)
            body = data.encode("latin-1") if isinstance(data, str) else data
        scep_request = transport.parse(
            request.method, request.query_string, body, max_url_bytes=svc.max_url
        )
        op = scep_request.operation
        # One snapshot for the whole request: a reload in between does not mix configurations.
        alias = svc.snapshot().alias(alias_name)
        now = svc.clock()
        if op != "PKIOperation":
            ca = alias.select_ca(scep_request.message)
            if op == "GetCACaps":
                return raw_response(alias.capabilities(ca, now), "text/plain"), op
            if op == "GetCACert":
                return raw_response(*alias.ca_certificates(ca.at(now))), op
            if op == "GetCACertChain":
                return raw_response(alias.ca_chain(ca.at(now)), CA_RA_CERT_CHAIN), op
            body = await asyncio.to_thread(alias.next_ca_certificates, ca, now)
            return raw_response(body, NEXT_CA_CERT), op
        answer = await svc.enrollment.pki_operation(alias, scep_request.payload, client=_peer())
        log.info(
            "PKIOperation alias=%s status=%s %.1f ms",
            alias_name,
            answer.status,
            (time.perf_counter() - started) * 1000,
        )
        return raw_response(answer.body, PKI_MESSAGE), op
    except GatewayError as error:
        return problem(error), op


def _peer() -> str | None:
    """The TCP peer from the ASGI scope (never a header a client could set)."""
    client = request.scope.get("client")
    return str(client[0]) if client else None


async def scep_alias(alias: str) -> Response:
    return await _serve(alias)


async def scep_default() -> Response:
    return await _serve(DEFAULT_ALIAS)


for _path in SCEP_PATHS:
    scep.add_url_rule(_path, view_func=scep_alias, methods=["GET", "POST"])
for _path in DEFAULT_PATHS:
    scep.add_url_rule(_path, view_func=scep_default, methods=["GET", "POST"])


@scep.route("/crl/<ca>.crl")
async def crl(ca: str) -> Response:
    """The CA's current CRL over plain HTTP: the URL certificate profiles put in CDP."""
    svc = services()
    runtime = svc.snapshot().cas.get(ca)
    if runtime is None:
        return problem(NotFound("unknown CA", detail=ca))
    return await _crl_of(svc, runtime.at(svc.clock()))


@scep.route("/crl/<ca>/<key_id>.crl")
async def crl_of_key(ca: str, key_id: str) -> Response:
    """The CRL of one CA key generation: the URL for `{key_id}` in a profile's CDP, which
    keeps pointing at the right CRL after a rollover."""
    svc = services()
    runtime = svc.snapshot().cas.get(ca)
    match = [g for g in runtime.generations if g.key_id == key_id] if runtime else []
    if not match:
        return problem(NotFound("unknown CA key", detail=f"{ca}/{key_id}"))
    return await _crl_of(svc, match[0])


async def _crl_of(svc: Services, ca: CaRuntime) -> Response:
    try:
        served = await svc.crls.serve(ca)
    except GatewayError as error:
        return problem(error)
    return crl_response(served, request.headers.get("If-None-Match"), svc.clock())


@scep.route("/healthz")
async def healthz() -> Response:
    return raw_response(b"ok\n", "text/plain")


@scep.route("/readyz")
async def readyz() -> Response:
    """Ready when a configuration serves, the database answers and writes do not keep failing.

    A broken edit of the configuration does not make the gateway unready (the last good
    configuration keeps serving); it is listed under `config_errors` until an edit fixes it.
    Writes that keep failing (a full disk answers reads but no enrollment) make it unready
    until a write succeeds, or for a while after the last failure (WriteHealth), so that an
    orchestrator takes the replica out and tries it again by itself.
    """
    svc = services()
    state = svc.reloader.state
    body: dict[str, object] = {
        "status": "ready",
        "aliases": sorted(state.snapshot.aliases),
        "config_generation": state.generation,
        "config_errors": [str(issue) for issue in state.errors],
    }
    status = 200
    try:
        await svc.store.ping()
    except GatewayError as error:
        log.warning("not ready: %s", error.detail)
        body["status"] = "database unreachable"
        status = 503
    failing = svc.store.write_health.failing()
    body["failed_writes"] = svc.store.write_health.failures
    if failing and status == 200:
        log.warning("not ready: the last %d writes failed", failing)
        body["status"] = "writes failing"
        status = 503
    return raw_response(json.dumps(body, indent=1).encode() + b"\n", "application/json", status)


@scep.route("/metrics")
async def metrics() -> Response:
    return raw_response(services().metrics.render(), "text/plain; version=0.0.4")
