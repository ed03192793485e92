"""The baseline for GetCACaps/GetCACert: a bare Quart app on Hypercorn, served like the gateway.

Same framework, same server settings as ``scep-gateway serve`` (one worker, no access log,
keep-alive 30 s), same SCEP paths; it answers constant bodies (the gateway's own answers,
read from files at start), so the difference to the gateway is the gateway's own work.

    python -m benchmarks.bare_app --bind 127.0.0.1:PORT --caps FILE --cacert FILE
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, request


def create_app(caps: bytes, cacert: bytes, cacert_type: str) -> Quart:
    app = Quart(__name__)

    async def scep(alias: str = "scep") -> Response:
        operation = request.args.get("operation", "")
        if operation == "GetCACaps":
            response = Response(caps, status=200)
            response.headers["Content-Type"] = "text/plain"
            return response
        if operation == "GetCACert":
            response = Response(cacert, status=200)
            response.headers["Content-Type"] = cacert_type
            return response
        return Response(b"unknown operation\n", status=400, content_type="text/plain")

    app.add_url_rule("/scep/<alias>/pkiclient.exe", view_func=scep, methods=["GET", "POST"])
    app.add_url_rule("/scep/pkiclient.exe", view_func=scep, methods=["GET", "POST"])

    @app.route("/healthz")
    async def healthz() -> Response:
        return Response(b"ok\n", status=200, content_type="text/plain")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--caps", type=Path, required=True)
    parser.add_argument("--cacert", type=Path, required=True)
    parser.add_argument("--cacert-type", default="application/x-x509-ca-cert")
    args = parser.parse_args()
    app = create_app(args.caps.read_bytes(), args.cacert.read_bytes(), args.cacert_type)
    config = Config()
    config.bind = [args.bind]
    config.accesslog = None
    config.h11_max_incomplete_size = 64 * 1024 + 16 * 1024  # as scep-gateway serve
    config.keep_alive_timeout = 30

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(app, config, shutdown_trigger=stop.wait)

    asyncio.run(run())


if __name__ == "__main__":
    main()
