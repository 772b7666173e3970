"""Composition root of the proxy: ``create_app(settings)`` wires clients once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cg_proxy import errors, openapi, routes, tokens
from cg_proxy.auth import KeyAuthenticator
from cg_proxy.bus import Bus
from cg_proxy.metering import Meter
from cg_proxy.middleware import RequestContext
from cg_proxy.outbox import Outbox
from cg_proxy.settings import Settings
from cg_proxy.state import ProxyState
from cg_proxy.upstream import Upstreams
from cg_proxy.usage import UsageRecorder
from cglib.grpc_client import insecure_channel
from cglib.metrics import metrics_route
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2_grpc

log = logging.getLogger("cg_proxy")


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keys_channel = insecure_channel(settings.keys_addr)
        ledger_channel = insecure_channel(settings.ledger_addr)
        meter = Meter(
            ledger_pb2_grpc.LedgerServiceStub(ledger_channel), settings.rpc_timeout_s, settings.reservation_ttl_s
        )
        bus = Bus(settings.nats_url)
        outbox = Outbox(settings.outbox_path or f"var/proxy-outbox-{settings.port}.sqlite3")
        auth = KeyAuthenticator(
            keys_pb2_grpc.KeysServiceStub(keys_channel), settings.key_cache_ttl_s, settings.rpc_timeout_s
        )
        bus.on("keys.>", auth.on_key_changed)  # every lifecycle change drops the cached key
        state = ProxyState(
            settings=settings,
            auth=auth,
            meter=meter,
            upstreams=Upstreams(settings),
            recorder=UsageRecorder(meter, bus, outbox),
            bus=bus,
            keys_channel=keys_channel,
            ledger_channel=ledger_channel,
        )
        await state.upstreams.start()
        await asyncio.to_thread(tokens.warm, ("o200k_base",))  # ~0.4 s now, not on a first request
        await bus.start()
        state.recorder.start()  # relays the outbox once NATS is connected, a previous run's events too
        app.state.proxy = state
        log.info(
            "proxy ready", extra={"port": settings.port, "keys": settings.keys_addr, "ledger": settings.ledger_addr}
        )
        try:
            yield
        finally:
            await state.recorder.drain(settings.shutdown_grace_s)  # what is not yet sent goes to the outbox
            await bus.close()
            outbox.close()
            await state.upstreams.close()
            await keys_channel.close()
            await ledger_channel.close()

    app = FastAPI(title="Creditgate proxy", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    errors.install_handlers(app)
    app.include_router(routes.router)
    metrics_route(app)

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi_description() -> JSONResponse:
        return JSONResponse(openapi.description())

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        st: ProxyState = request.app.state.proxy
        checks = {}
        for name, channel in (("keys", st.keys_channel), ("ledger", st.ledger_channel)):
            try:
                resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                checks[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status).lower()
            except grpc.aio.AioRpcError as e:
                checks[name] = e.code().name.lower()
        checks["nats"] = "serving" if st.bus.connected else "not_connected"
        ok = all(v == "serving" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
        )

    return RequestContext(app)  # type: ignore[return-value]
