"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streams): assigns each
request its id, adds ``x-request-id`` to the response, and logs and times it."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from prometheus_client import Counter, Histogram
from starlette.types import Message, Receive, Scope, Send

from cglib.ids import new_id

log = logging.getLogger("cg_proxy.access")

REQUESTS = Counter("cg_proxy_requests_total", "HTTP requests", ["path", "status"])
LATENCY = Histogram(
    "cg_proxy_request_seconds",
    "Time to the response's first byte",
    ["path"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
_KNOWN_PATHS = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/healthz",
    "/readyz",
    "/openapi.json",
}


class RequestContext:
    """The outermost layer of the proxy's ASGI app (outside FastAPI's own error handling,
    so its 500s carry the request id too); ``app`` is the FastAPI app inside."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = new_id("req", 24)
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status_holder = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
                path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
                LATENCY.labels(path).observe(time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope["path"]
            REQUESTS.labels(path if path in _KNOWN_PATHS else "other", str(status_holder[0])).inc()
            if path not in ("/healthz", "/readyz", "/metrics"):
                log.info(
                    "request",
                    extra={
                        "request_id": request_id,
                        "method": scope["method"],
                        "path": path,
                        "status": status_holder[0],
                        "ms": round((time.perf_counter() - start) * 1000, 2),
                    },
                )
