"""The metered routes as plain ASGI: no framework between uvicorn and ``routes.metered``.

``Gateway`` is the proxy's ASGI app. A ``POST`` to a metered path (``routes.ENDPOINTS``)
goes to its ``MeteredRoute``; anything else (``/v1/models``, health, metrics, unknown
paths, other methods) to the FastAPI app behind ``middleware.RequestContext``, which
answers it in OpenAI's shape as before.

A ``MeteredRoute`` does per request what the FastAPI stack did, and nothing else: gives
the request its id (``x-request-id``), reads the body (bounded in size and time), renders
an ``APIError`` (or any unexpected exception, as a 500 naming the request id) with
``errors``, sends the JSON reply or relays the stream (``StreamRelay.send_to``), and
counts, times and logs the request as ``middleware`` does. Where the CPU went before
(Starlette's middleware stack, FastAPI's dependency solving, a task group per stream)
and the figures after: docs/benchmarks.md, "The proxy's CPU per request".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from cg_proxy import errors, middleware, routes
from cg_proxy.state import ProxyState
from cglib import tracing

log = logging.getLogger(__name__)

_JSON = (b"content-type", b"application/json")
_SSE = ((b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"))


async def read_body(receive: Receive, limit: int, timeout_s: float) -> bytes:
    """The body, refused with 413 as soon as more than ``limit`` bytes arrived (a chunked
    body has no Content-Length to check beforehand), and with 408 when it has not all
    arrived within ``timeout_s`` (a client that promised a body and sends nothing would
    otherwise hold the connection for ever); 400 when the client left before the end."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":  # nobody reads the answer; it keeps the log clean
                    raise errors.body_cut_off()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise errors.request_too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except TimeoutError:
        raise errors.body_timeout(timeout_s) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def request_headers(scope: Scope) -> dict[str, str]:
    """The request's headers by lower-case name; of a repeated header, the first (as Starlette)."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").lower()
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


def _start(
    status: int,
    content_type: tuple[tuple[bytes, bytes], ...],
    extra: dict[str, str],
    request_id: bytes,
    length: int | None = None,
) -> dict[str, Any]:
    headers = [*content_type, *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    headers.append((b"x-request-id", request_id))
    return {"type": "http.response.start", "status": status, "headers": headers}


def internal_error(request_id: str) -> errors.APIError:
    return errors.APIError(500, f"The gateway had an internal error. Request id: {request_id}.", type="server_error")


class MeteredRoute:
    """One metered endpoint as an ASGI app; ``state`` gives the lifespan's ``ProxyState``."""

    def __init__(self, endpoint: routes.Endpoint, state: Callable[[], ProxyState]) -> None:
        self.endpoint = endpoint
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        request_id = middleware.new_request_id()
        rid = request_id.encode()
        path = scope["path"]
        status = 500
        started = False  # the response's head is sent: an error can no longer be answered

        async def answer_error(error: errors.APIError) -> None:
            nonlocal status, started
            status = error.status
            data = orjson.dumps(error.body())
            started = True
            await send(_start(status, (_JSON,), error.headers, rid, len(data)))
            middleware.observe_first_byte(path, time.perf_counter() - start)
            await send({"type": "http.response.body", "body": data})

        try:
            incoming = routes.Incoming(request_id, request_headers(scope), functools.partial(read_body, receive))
            try:
                answer = await routes.metered(self.state(), self.endpoint, incoming)
            except errors.APIError as e:
                await answer_error(e)
                return
            status = 200
            started = True
            if isinstance(answer, routes.JsonAnswer):
                await send(_start(200, (_JSON,), answer.headers, rid, len(answer.data)))
                middleware.observe_first_byte(path, time.perf_counter() - start)
                await send({"type": "http.response.body", "body": answer.data})
            else:
                await send(_start(200, _SSE, answer.headers, rid))
                middleware.observe_first_byte(path, time.perf_counter() - start)
                await answer.relay.send_to(send, receive)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if not started:
                await answer_error(internal_error(request_id))
            else:
                status = 500
        finally:
            middleware.finished(request_id, scope["method"], path, status, start)


class TracedRoute:
    """A metered route inside a server span (``cglib.tracing``), continuing the client's
    trace context; used in place of the route only when tracing is on."""

    def __init__(self, route: MeteredRoute) -> None:
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with tracing.server_span(f"POST {scope['path']}", request_headers(scope)):
            await self.route(scope, receive, send)


class Gateway:
    """The proxy's ASGI app: the metered routes on the fast path, the rest through FastAPI
    (``app``, whose lifespan builds the ``ProxyState`` both use)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.rest = middleware.RequestContext(app)
        # traced only when tracing is on (decided at start): nothing is added to the path when off
        self.metered: dict[str, MeteredRoute | TracedRoute] = {
            path: TracedRoute(MeteredRoute(ep, self._state)) if tracing.ENABLED else MeteredRoute(ep, self._state)
            for path, ep in routes.ENDPOINTS.items()
        }

    def _state(self) -> ProxyState:
        state: ProxyState = self.app.state.proxy
        return state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.metered.get(scope["path"])
            if route is not None:
                return await route(scope, receive, send)
        await self.rest(scope, receive, send)
