"""The BFF's internal gRPC server (``CG_BFF_GRPC_PORT``): ``WebhookService``, for the
worker's webhook deliveries, with health and reflection. It binds the BFF's host; the
port picked is kept in ``state.extras["grpc_port"]`` (tests bind port 0)."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health_pb2

from cg_bff.state import BffState
from cg_bff.webhooks import authz, service
from cg_bff.webhooks.servicer import ERROR_CODES, SERVICE_NAME, WebhookServicer
from cglib.grpc_server import create_server
from creditgate.bff.v1 import bff_pb2_grpc

log = logging.getLogger(__name__)
GRACE_S = 3.0


async def run(state: BffState, stop: asyncio.Event) -> None:
    settings = state.settings
    servicer = WebhookServicer(service.of(state), settings.internal_token.get_secret_value())
    try:
        server, port, health = create_server(
            f"{settings.host}:{settings.grpc_port}",
            lambda s: bff_pb2_grpc.add_WebhookServiceServicer_to_server(servicer, s),
            [SERVICE_NAME],
            error_codes=ERROR_CODES,
            tls=state.tls,
            policy=authz.POLICY,
            health_addr=f"{settings.host}:{settings.grpc_health_port}",
        )
    except OSError:  # said now: the app's lifespan only gathers its jobs at shutdown
        log.exception(
            "the internal gRPC port could not be bound: no webhook is delivered", extra={"port": settings.grpc_port}
        )
        raise
    state.extras["grpc_port"] = port
    await server.start()
    names = ["", SERVICE_NAME]
    for name in names:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    if not settings.internal_token.get_secret_value():
        log.warning("the internal gRPC port asks no token: set CG_BFF_INTERNAL_TOKEN (and the worker's) in production")
    log.info("internal gRPC serving", extra={"port": port})
    try:
        await stop.wait()
    finally:
        for name in names:
            await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.stop(GRACE_S)
