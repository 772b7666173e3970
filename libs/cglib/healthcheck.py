"""Container health checks: exit 0 when healthy, 1 otherwise.

    python -m cglib.healthcheck grpc HOST:PORT   # grpc.health.v1 Health/Check is SERVING
    python -m cglib.healthcheck http URL         # GET answers 200

Meant for ``HEALTHCHECK``/compose ``healthcheck.test``: standard library plus grpc only,
one line on stderr when unhealthy, a 2 s deadline, and no HTTP proxy from the
environment (a check of 127.0.0.1 must not go through ``http_proxy``).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 2.0


def check_grpc(target: str, service: str = "", timeout_s: float = TIMEOUT_S) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
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
