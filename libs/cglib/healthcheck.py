"""Container health checks: exit 0 when healthy, 1 otherwise.

    python -m cglib.healthcheck grpc HOST:PORT   # grpc.health.v1 Health/Check is SERVING
    python -m cglib.healthcheck http URL         # GET answers 200

Meant for ``HEALTHCHECK``/compose ``healthcheck.test``: standard library plus grpc only,
one line on stderr when unhealthy, a 2 s deadline, and no HTTP proxy from the
environment (a check of 127.0.0.1 must not go through ``http_proxy``). Where the
container has mutual TLS set (``CG_TLS_*``, ``cglib.tls``), the gRPC check shows the
container's own certificate (health answers any service's); the plaintext health port
(``CG_<SVC>_HEALTH_PORT``) needs none.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from typing import Any

TIMEOUT_S = 2.0


def _grpc_channel(target: str) -> Any:
    """A plaintext channel, or with ``CG_TLS_*`` set a mutual TLS one (grpc.Channel)."""
    import os

    import grpc

    env = os.environ
    options = [("grpc.enable_http_proxy", 0)]
    if not any(env.get(name) for name in ("CG_TLS_CA_FILE", "CG_TLS_CERT_FILE", "CG_TLS_KEY_FILE")):
        return grpc.insecure_channel(target, options=options)
    from cglib.tls import from_env

    tls = from_env(None, env)
    assert tls is not None
    return grpc.secure_channel(target, tls.channel_credentials(), options=options)


def check_grpc(target: str, service: str = "", timeout_s: float = TIMEOUT_S) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        channel = _grpc_channel(target)
    except ValueError as e:  # cglib.tls.TlsConfigError
        print(f"grpc {target}: invalid TLS settings: {e}", file=sys.stderr)
        return False
    with channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as e:
            print(f"grpc {target}: {e.code().name}", file=sys.stderr)
            return False
    if resp.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"grpc {target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}", file=sys.stderr)
        return False
    return True


def check_http(url: str, timeout_s: float = TIMEOUT_S) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as resp:
            status = resp.status
    except urllib.error.HTTPError as e:
        status = e.code
    except (urllib.error.URLError, OSError) as e:
        print(f"http {url}: {e}", file=sys.stderr)
        return False
    if status != 200:
        print(f"http {url}: status {status}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cglib.healthcheck", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    g = sub.add_parser("grpc", help="grpc.health.v1 Health/Check must answer SERVING")
    g.add_argument("target", help="HOST:PORT")
    g.add_argument("--service", default="", help="service name to check (default: the whole server)")
    h = sub.add_parser("http", help="GET must answer 200")
    h.add_argument("url")
    args = parser.parse_args(argv)
    ok = check_grpc(args.target, args.service) if args.mode == "grpc" else check_http(args.url)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
