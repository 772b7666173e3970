"""Composition root of the BFF: ``create_app(settings)``.

The lifespan builds, once: the database engine (migrations applied), the gRPC channels
to keys and the ledger (``Backends``), the authenticator, the NATS connection (made in
the background: the API serves without it), and starts the background jobs of
``cg_bff.background``. Routes are every module of ``cg_bff.routes`` (each has a
``router``), mounted under ``/api/v1``; the OpenAPI description is at
``/api/v1/openapi.json``; the portal (``cg_bff.portal``) is at ``/``. Tests pass their
own ``backends`` (or a database URL in the settings) and drive the app in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import pkgutil
import types
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_bff import background, errors, portal, routes
from cg_bff.backends import Backends
from cg_bff.migrate import COMMAND as MIGRATE_COMMAND
from cg_bff.migrate import MIGRATIONS
from cg_bff.principal import Authenticator
from cg_bff.settings import Settings
from cg_bff.state import BffState
from cglib import natsx
from cglib.db import make_engine
from cglib.grpc_client import channel as grpc_channel
from cglib.metrics import metrics_route
from cglib.retry import Stopped, retrying
from cglib.schema import prepare_schema
from cglib.tls import Tls
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2_grpc

log = logging.getLogger("cg_bff")
API_PREFIX = "/api/v1"
Job = Callable[[BffState, asyncio.Event], Coroutine[Any, Any, None]]


def _modules(package: types.ModuleType) -> list[types.ModuleType]:
    return [importlib.import_module(f"{package.__name__}.{m.name}") for m in pkgutil.iter_modules(package.__path__)]


def api_routers() -> list[APIRouter]:
    return [m.router for m in _modules(routes) if hasattr(m, "router")]


def background_jobs() -> list[Job]:
    return [m.run for m in _modules(background) if hasattr(m, "run")]


def _make_authenticator(state_settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Authenticator:
    from cg_bff.auth import SessionAuth  # the identity module (cg_bff.auth)

    return SessionAuth(sessions, state_settings)


def create_app(settings: Settings, *, backends: Backends | None = None, tls: Tls | None = None) -> FastAPI:
    """The BFF; with ``tls`` (``cglib.tls``) its gRPC channels and its internal gRPC port use mutual TLS."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        await prepare_schema(
            engine,
            MIGRATIONS,
            apply=settings.migrate_at_start,
            wait_s=settings.schema_wait_s,
            migrate_command=MIGRATE_COMMAND,
        )
        sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        channels = []
        if backends is None:
            keys_channel, ledger_channel = (
                grpc_channel(settings.keys_addr, tls),
                grpc_channel(settings.ledger_addr, tls),
            )
            channels = [keys_channel, ledger_channel]
            built = Backends(
                keys=keys_pb2_grpc.KeysServiceStub(keys_channel),
                ledger=ledger_pb2_grpc.LedgerServiceStub(ledger_channel),
                ledger_admin=ledger_pb2_grpc.LedgerAdminServiceStub(ledger_channel),
                timeout_s=settings.rpc_timeout_s,
                ledger_admin_token=settings.ledger_admin_token.get_secret_value(),
            )
        state = BffState(
            settings=settings,
            engine=engine,
            sessions=sessions,
            backends=backends or built,
            auth=_make_authenticator(settings, sessions),
            tls=tls,
        )
        app.state.bff = state
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_connect_nats(state, stop))]
        tasks += [asyncio.create_task(job(state, stop)) for job in background_jobs()]
        log.info("bff ready", extra={"port": settings.port, "keys": settings.keys_addr, "ledger": settings.ledger_addr})
        try:
            yield
        finally:
            stop.set()
            tasks[0].cancel()  # a NATS connect in progress does not watch `stop`: nothing to wait for
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
            for task in tasks:
                task.cancel()
            if state.nats is not None and not state.nats.is_closed:
                await state.nats.close()
            for channel in channels:
                await channel.close()
            await engine.dispose()

    app = FastAPI(
        title="Creditgate management API",
        version="1",
        description="Partners, customers and platform admins manage AI Gateway keys, credits, usage and "
        'webhooks. Errors are always {"error": {"code", "message", "fields"}}.',
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        responses={
            "default": {"description": "An error", "content": {"application/json": {"schema": errors.ERROR_SCHEMA}}}
        },
    )
    errors.install_handlers(app)
    for router in api_routers():
        app.include_router(router, prefix=API_PREFIX)
    metrics_route(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    portal.mount_portal(app, settings.portal_dir, settings.proxy_public_url)  # last: it catches other GETs
    return app


async def _connect_nats(state: BffState, stop: asyncio.Event) -> None:
    """Connects to NATS in the background (the API works without it) and keeps the
    connection in ``state.nats`` for the live updates, the usage consumer and webhooks."""
    try:
        state.nats = await retrying(
            lambda: natsx.connect(state.settings.nats_url, "bff"), what="nats connect", stop=stop, first_delay_s=0.2
        )
    except Stopped:
        return
