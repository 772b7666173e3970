"""Every request's id, metrics and access log line.

``RequestContext`` is pure ASGI middleware (no BaseHTTPMiddleware: it would buffer
streams) around the FastAPI app: it assigns each request its id, adds ``x-request-id``
to the response, and logs and times it. The metered routes (``cg_proxy.fastpath``) do
the same without a middleware layer, through the helpers here (``new_request_id``,
``observe_first_byte``, ``finished``), so both report the same series and log lines.
"""

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
_UNLOGGED_PATHS = ("/healthz", "/readyz", "/metrics")
# the metrics' children by label, looked up once (``labels()`` costs a lock and a tuple per call)
_latency_of: dict[str, Histogram] = {}
_requests_of: dict[tuple[str, int], Counter] = {}


def new_request_id() -> str:
    return new_id("req", 24)


def _label(path: str) -> str:
    return path if path in _KNOWN_PATHS else "other"


def observe_first_byte(path: str, seconds: float) -> None:
    label = _label(path)
    child = _latency_of.get(label)
    if child is None:
        child = _latency_of[label] = LATENCY.labels(label)
    child.observe(seconds)


def finished(request_id: str, method: str, path: str, status: int, start: float) -> None:
    """Counts a request once it is over and writes its access log line."""
    key = (_label(path), status)
    child = _requests_of.get(key)
    if child is None:
        child = _requests_of[key] = REQUESTS.labels(key[0], str(status))
    child.inc()
    if path not in _UNLOGGED_PATHS and log.isEnabledFor(logging.INFO):
        log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": method,
                "path": path,
                "status": status,
                "ms": round((time.perf_counter() - start) * 1000, 2),
            },
        )


class RequestContext:
    """The outermost layer of the FastAPI app (outside FastAPI's own error handling, so
    its 500s carry the request id too); ``app`` is the FastAPI app inside."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        start = time.perf_counter()
        status_holder = [500]

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
                observe_first_byte(scope["path"], time.perf_counter() - start)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            finished(request_id, scope["method"], scope["path"], status_holder[0], start)
