"""The baseline for GetCACaps/GetCACert: a bare Quart app on Hypercorn, served like the gateway.

Same framework, same server settings and worker processes as ``scep-gateway serve`` (the
gateway's own Hypercorn configuration and supervisor), same SCEP paths; it answers constant
bodies (the gateway's own answers, read from files at start), so the difference to the gateway
is the gateway's own work.

    python -m benchmarks.bare_app --bind 127.0.0.1:PORT --caps FILE --cacert FILE [--workers N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quart import Quart, Response, request

from gateway.serve import hypercorn_config, serve_workers
from gateway.settings import Settings


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
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    body = args.caps.read_bytes(), args.cacert.read_bytes(), args.cacert_type
    config = hypercorn_config(Settings(bind=args.bind))
    sys.exit(serve_workers(lambda: create_app(*body), config, args.workers))


if __name__ == "__main__":
    main()
