"""The gRPC server factory and its graceful run loop."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable
from typing import Any, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cglib import gc_tuning
from cglib.grpc_authz import AuthorizationInterceptor, Policy
from cglib.grpc_errors import ErrorCodes, ErrorMappingInterceptor
from cglib.grpc_intercept import Continuation, UnaryHandler, UnaryInterceptor
from cglib.metrics import MetricsInterceptor
from cglib.tls import Tls

log = logging.getLogger(__name__)

Registrar = Callable[[grpc.aio.Server], None]

# Largest request a service accepts (gRPC's default is 4 MiB). Our biggest requests, a
# SettleBatch of 1,000 settlements or a BillingPreview of 500 models, are tens of KiB.
MAX_REQUEST_BYTES = 1024 * 1024
# gRPC sets SO_REUSEPORT by default: a second server (an orphan of an earlier run, say)
# could then bind the same port, and the kernel would split the calls between the two.
SERVER_OPTIONS = [("grpc.max_receive_message_length", MAX_REQUEST_BYTES), ("grpc.so_reuseport", 0)]


class RequestDecodeInterceptor(grpc.aio.ServerInterceptor):
    """Parses every unary request in the handler instead of in gRPC's deserializer.

    A body that is not the method's message (corrupt, truncated, invalid UTF-8 in a
    string field) fails in gRPC's own deserializer with UNKNOWN or INTERNAL, which
    callers treat as a server fault worth retrying. It is the caller's fault:
    INVALID_ARGUMENT, and the handler never runs."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None or handler.request_deserializer is None:
            return handler
        parse = handler.request_deserializer
        inner = cast(UnaryHandler, handler.unary_unary)
        method = handler_call_details.method

        async def decoded(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                request = parse(raw)
            except Exception:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid message for {method}"
                )
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            decoded, request_deserializer=None, response_serializer=handler.response_serializer
        )


class RunToTheEndInterceptor(UnaryInterceptor):
    """A unary call, once its handler starts, runs to the end even if its caller goes.

    gRPC cancels a handler when its caller's deadline passes or the caller disconnects
    (a crashed worker, a client that gave up). Cancelled half way, a handler can leave
    work half done, and SQLAlchemy's async sessions lose their connection to the pool
    when cancelled in the wrong await: on SQLite, with one connection, the service then
    waits for a connection that never comes back. So the handler runs in a task of its
    own that the cancellation does not reach; the call ends for the caller at once, and
    the handler's answer (or error) goes nowhere. Every handler is bounded by its own
    timeouts (database, ledger calls), so nothing runs on for long."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def wrap(self, inner: UnaryHandler, method: str) -> UnaryHandler:
        running = self._running

        async def to_the_end(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            task = asyncio.ensure_future(inner(request, context))
            running.add(task)
            task.add_done_callback(_forget(running))
            return await asyncio.shield(task)

        return to_the_end


def _forget(running: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        running.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that went away has nobody to hear it

    return done


def create_server(
    addr: str,
    register: Registrar,
    service_names: Iterable[str],
    error_codes: ErrorCodes | None = None,
    *,
    tls: Tls | None = None,
    policy: Policy | None = None,
    health_addr: str | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Builds an aio server with our interceptors, health and reflection, bound to
    ``addr`` (``host:0`` picks a free port). ``error_codes`` maps the service's domain
    errors to status codes (``cglib.grpc_errors``; anything unmapped is INTERNAL).
    Returns ``(server, port, health)``.

    With ``tls`` (``cglib.tls``), ``addr`` serves mutual TLS only, every call is checked
    against ``policy`` (``cglib.grpc_authz``: who may call each method), and ``health_addr``
    is a second, plaintext port on which only ``grpc.health.v1.Health`` answers: the
    kubelet's gRPC probe connects without a client certificate."""
    if tls is not None and policy is None:
        raise ValueError("a server with mutual TLS needs its authorization table (policy)")
    # metrics first: it counts (and times) the calls the decoder (and authorization) refuse
    # too; authorization before anything reads the request; then the handler runs to its
    # end whatever its caller does, the error mapping next to it
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor()]
    if tls is not None and policy is not None:
        interceptors.append(AuthorizationInterceptor(policy))
    interceptors += [RequestDecodeInterceptor(), RunToTheEndInterceptor(), ErrorMappingInterceptor(error_codes or {})]
    server = grpc.aio.server(interceptors=interceptors, options=SERVER_OPTIONS)
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    if tls is None:
        port = server.add_insecure_port(addr)
    else:
        port = server.add_secure_port(addr, tls.server_credentials())
    if port == 0:
        raise OSError(f"could not bind gRPC server to {addr}")
    if tls is not None and health_addr:
        health_port = server.add_insecure_port(health_addr)
        if health_port == 0:
            raise OSError(f"could not bind the plaintext health port to {health_addr}")
        log.info("mutual TLS on; plaintext health port", extra={"port": port, "health_port": health_port})
    return server, port, health_servicer


async def serve(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    service_names: Iterable[str],
    grace_s: float = 5.0,
) -> None:
    """Starts the server, marks it SERVING, and on SIGTERM/SIGINT marks it NOT_SERVING
    and stops with a grace period so in-flight calls finish."""
    names = ["", *service_names]
    await server.start()
    gc_tuning.after_startup()  # the process's main loop from here on: its start-up heap is built
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_s": grace_s})
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.stop(grace_s)
