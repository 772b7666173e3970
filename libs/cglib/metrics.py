"""Prometheus metrics: an HTTP endpoint for services without HTTP of their own (with
``/healthz`` and ``/readyz`` beside ``/metrics``), a server interceptor that counts and
times every RPC, and ``/metrics`` for a FastAPI app, summed over worker processes when
``PROMETHEUS_MULTIPROC_DIR`` is set (``cglib.multiproc``). Every name is listed, with
its meaning, in docs/metrics.md (a test keeps the two in step)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import make_server

import grpc
from prometheus_client import Counter, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from cglib.grpc_intercept import UnaryHandler, UnaryInterceptor

# () -> (ready?, what each part says): the body of /readyz
ReadyCheck = Callable[[], tuple[bool, dict[str, str]]]

RPC_LATENCY = Histogram(
    "cg_grpc_server_handling_seconds",
    "Time to handle a gRPC call",
    ["service", "method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RPC_TOTAL = Counter("cg_grpc_server_handled_total", "gRPC calls handled", ["service", "method", "code"])


def _always_ready() -> tuple[bool, dict[str, str]]:
    return True, {}


def _probe_app(metrics: Callable[..., Iterable[bytes]], ready: ReadyCheck) -> Callable[..., Iterable[bytes]]:
    """The WSGI app of the metrics port: ``/healthz`` (the process answers), ``/readyz``
    (``ready()``: 200 or 503, JSON), anything else ``metrics``."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        checks: dict[str, str] = {}
        if path == "/healthz":
            ok = True
        elif path == "/readyz":
            try:
                ok, checks = ready()
            except Exception as e:  # a check that breaks is a "not ready", never a 500
                ok, checks = False, {"error": repr(e)}
        else:
            return metrics(environ, start_response)
        body = json.dumps(
            {"status": ("ok" if path == "/healthz" else "ready") if ok else "not_ready", "checks": checks}
        )
        start_response(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
        )
        return [body.encode()]

    return app


def serve_metrics(host: str, port: int, ready: ReadyCheck | None = None) -> int:
    """Starts ``/metrics``, ``/healthz`` and ``/readyz`` (``ready``; always ready when
    None) on a thread of their own; returns the bound port (0 picks a free one)."""
    app = _probe_app(make_wsgi_app(), ready or _always_ready)
    httpd = make_server(host, port, app, ThreadingWSGIServer, handler_class=_SilentHandler)
    threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True).start()
    return httpd.server_port


class MetricsInterceptor(UnaryInterceptor):
    def wrap(self, inner: UnaryHandler, full_method: str) -> UnaryHandler:
        # "/creditgate.ledger.v1.LedgerService/Reserve" -> the service's full name, the method
        service, _, method = full_method.lstrip("/").rpartition("/")

        async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            start = time.perf_counter()
            code = "OK"
            try:
                return await inner(request, context)
            except Exception:
                code = "ERROR"
                raise
            finally:
                status = context.code()
                if status is not None and status != grpc.StatusCode.OK:
                    code = status.name
                RPC_TOTAL.labels(service, method, code).inc()
                RPC_LATENCY.labels(service, method).observe(time.perf_counter() - start)

        return timed


def metrics_route(app) -> None:
    """Adds ``GET /metrics`` (exactly that path, no redirect) to a FastAPI/Starlette app:
    this process's metrics, or with ``PROMETHEUS_MULTIPROC_DIR`` set those of every
    worker process sharing that directory, summed (``cglib.multiproc``)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response

    from cglib import multiproc

    async def metrics(_request) -> Response:
        registry = multiproc.registry()
        if registry is None:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
        # reads every worker's files: off the event loop
        return Response(await run_in_threadpool(generate_latest, registry), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
