"""Prometheus metrics: an HTTP endpoint for gRPC-only services and a server interceptor
that counts and times every RPC."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
from prometheus_client import Counter, Histogram, start_http_server

RPC_LATENCY = Histogram(
    "cg_grpc_server_handling_seconds",
    "Time to handle a gRPC call",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
RPC_TOTAL = Counter("cg_grpc_server_handled_total", "gRPC calls handled", ["method", "code"])


def serve_metrics(host: str, port: int) -> int:
    """Starts /metrics on its own thread; returns the bound port (0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_port


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        # an aio server's handler is a coroutine function (grpc's stubs type it as the sync server's)
        inner = cast(Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]], handler.unary_unary)

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
                RPC_TOTAL.labels(method, code).inc()
                RPC_LATENCY.labels(method).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def metrics_route(app) -> None:
    """Adds ``GET /metrics`` (exactly that path, no redirect) to a FastAPI/Starlette app."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.responses import Response

    async def metrics(_request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
