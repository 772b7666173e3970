"""The gRPC server factory and its graceful run loop."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from typing import Callable, Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cglib.metrics import MetricsInterceptor

log = logging.getLogger(__name__)

Registrar = Callable[[grpc.aio.Server], None]


def create_server(
    addr: str, register: Registrar, service_names: Iterable[str]
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Builds an aio server with our interceptors, health and reflection, bound to
    ``addr`` (``host:0`` picks a free port). Returns ``(server, port, health)``."""
    server = grpc.aio.server(interceptors=[MetricsInterceptor()])
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    port = server.add_insecure_port(addr)
    if port == 0:
        raise OSError(f"could not bind gRPC server to {addr}")
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


def mapped_errors(codes: dict[type[Exception], grpc.StatusCode]):
    """A decorator for servicer methods: a domain error of one of ``codes``' types
    aborts the call with its status code and message (one place per service maps them)."""
    handled = tuple(codes)

    def decorate(handler):
        @functools.wraps(handler)
        async def wrapper(self, request, context):
            try:
                return await handler(self, request, context)
            except handled as e:
                await context.abort(codes[type(e)], str(e))

        return wrapper

    return decorate
