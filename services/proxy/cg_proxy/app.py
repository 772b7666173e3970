"""Composition root of the proxy: ``create_app(settings)`` wires its collaborators once.

Each collaborator (``cg_proxy.collaborators``: the key authenticator, the ledger client,
the upstreams, the usage recorder, the bus) is built from the settings at start-up
unless one is given: tests hand in fakes and drive the real routes in-process. Given or
built, the lifespan starts and stops them all; what it built (gRPC channels, the outbox
file) it also closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from google.protobuf.message import DecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.routing import Route

from cg_proxy import errors, openapi, routes, slots, tokenizers
from cg_proxy.auth import KeyAuthenticator
from cg_proxy.bus import Bus
from cg_proxy.collaborators import Authenticator, EventBus, Ledger, Probe, Recorder, UpstreamPool
from cg_proxy.fastpath import Gateway
from cg_proxy.journal import Journal
from cg_proxy.lease_client import GrpcLeaseLedger
from cg_proxy.leases import LeaseBook
from cg_proxy.ledger_client import LedgerClient
from cg_proxy.outbox import Outbox
from cg_proxy.settings import Settings
from cg_proxy.state import ProxyState
from cg_proxy.upstream import Upstreams
from cg_proxy.usage_recorder import UsageRecorder
from cglib import gc_tuning, multiproc, tracing
from cglib.grpc_client import channel
from cglib.logs import setup_logging
from cglib.metrics import metrics_route
from cglib.tls import Tls, from_env_or_exit
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2_grpc

log = logging.getLogger("cg_proxy")


def _grpc_health(channel: grpc.aio.Channel) -> Probe:
    stub = health_pb2_grpc.HealthStub(channel)

    async def probe() -> str:
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.aio.AioRpcError as e:
            return e.code().name.lower()
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)).lower()

    return probe


async def _sweep(book: LeaseBook, every_s: float = 5.0) -> None:
    """Releases idle leases and renews the ones about to expire, every few seconds."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await book.sweep()
        except Exception:
            log.exception("lease sweep failed")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _lease_events(ledger: LedgerClient) -> Callable[[bytes], Awaitable[None]]:
    async def on_key_changed(payload: bytes) -> None:
        try:
            ledger.key_changed(events_pb2.KeyChanged.FromString(payload).key_id)
        except DecodeError:
            return

    return on_key_changed


def create_app(
    settings: Settings,
    *,
    auth: Authenticator | None = None,
    ledger: Ledger | None = None,
    upstreams: UpstreamPool | None = None,
    recorder: Recorder | None = None,
    bus: EventBus | None = None,
    tls: Tls | None = None,
    own_process: bool = False,
) -> Gateway:
    """The proxy as an ASGI app (``fastpath.Gateway``): the metered routes on a fast path
    of their own, the rest through the FastAPI app (``.app``) inside the middleware that
    gives every request its id. Collaborators not given are built from ``settings``; their
    gRPC channels use mutual TLS when ``tls`` is given (``cglib.tls``). ``own_process``:
    the app is its process's only one (``cg_proxy.__main__``), so its start-up may also
    set the process's garbage collector (``cglib.gc_tuning``); never in a process that
    hosts other things, such as a test run."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # what is built here is closed in reverse order on the way out
        async with contextlib.AsyncExitStack() as built:
            built.callback(multiproc.process_exit)  # run last: this worker's live gauges leave the sum
            built.callback(tracing.shutdown)  # the spans not yet exported
            probes: dict[str, Probe] = {}
            the_auth, the_ledger = auth, ledger
            if the_auth is None:
                keys_channel = channel(settings.keys_addr, tls)
                built.push_async_callback(keys_channel.close)
                the_auth = KeyAuthenticator(
                    keys_pb2_grpc.KeysServiceStub(keys_channel), settings.key_cache_ttl_s, settings.rpc_timeout_s
                )
                probes["keys"] = _grpc_health(keys_channel)
            if the_ledger is None:
                ledger_channel = channel(settings.ledger_addr, tls)
                built.push_async_callback(ledger_channel.close)
                ledger_stub = ledger_pb2_grpc.LedgerServiceStub(ledger_channel)
                book = None
                if settings.leases:
                    book = LeaseBook(GrpcLeaseLedger(ledger_stub, settings.rpc_timeout_s), idle_s=settings.lease_idle_s)
                    # after the recorder's drain (pushed later, so run earlier): every lease released
                    built.push_async_callback(book.close)
                    built.push_async_callback(_cancel, asyncio.create_task(_sweep(book, settings.lease_sweep_s)))
                the_ledger = LedgerClient(ledger_stub, settings.rpc_timeout_s, settings.reservation_ttl_s, leases=book)
                probes["ledger"] = _grpc_health(ledger_channel)
            the_bus: EventBus = bus if bus is not None else Bus(settings.nats_url)
            the_recorder = recorder
            if the_recorder is None:
                # this process's own outbox and journal (and those of workers no longer run)
                slot = slots.claim(settings.outbox_base(), settings.journal_base())
                built.callback(slot.release)
                outbox = Outbox(slot.outbox_path)
                built.callback(outbox.close)
                journal = Journal(slot.journal_path)
                built.callback(journal.close)
                await slots.adopt(
                    settings.outbox_base(), settings.journal_base(), settings.workers, slot, journal, outbox
                )
                the_recorder = UsageRecorder(the_ledger, the_bus, outbox, journal)
            the_upstreams: UpstreamPool = upstreams if upstreams is not None else Upstreams(settings)
            the_bus.on("keys.>", the_auth.on_key_changed)  # every lifecycle change drops the cached key
            the_bus.on_reconnect(the_auth.forget_all)  # ... and changes missed while NATS was away, every key
            if isinstance(the_ledger, LedgerClient) and the_ledger.leases is not None:
                the_bus.on("keys.>", _lease_events(the_ledger))  # ... and ends the key's lease

            await the_upstreams.start()
            built.push_async_callback(the_upstreams.close)
            await asyncio.to_thread(tokenizers.warm, ("o200k_base",))  # now, not on a first request
            await the_bus.start()
            built.push_async_callback(the_bus.close)
            the_recorder.start()  # relays the outbox once NATS is connected, a previous run's events too
            # on the way out, first: what is not yet sent goes to the outbox
            built.push_async_callback(the_recorder.drain, settings.shutdown_grace_s)
            app.state.proxy = ProxyState(
                settings=settings,
                auth=the_auth,
                ledger=the_ledger,
                upstreams=the_upstreams,
                recorder=the_recorder,
                bus=the_bus,
                probes=probes,
            )
            if own_process:
                gc_tuning.after_startup()
            log.info(
                "proxy ready", extra={"port": settings.port, "keys": settings.keys_addr, "ledger": settings.ledger_addr}
            )
            yield

    app = FastAPI(title="Creditgate proxy", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    gateway = Gateway(app)
    errors.install_handlers(app)
    app.include_router(routes.router)
    # the metered routes known to FastAPI too, for its answers to their other methods (405)
    app.router.routes.extend(
        Route(path, route, methods=["POST"], include_in_schema=False) for path, route in gateway.metered.items()
    )
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
        checks = {name: await probe() for name, probe in st.probes.items()}
        # keys and ledger decide readiness; NATS is reported but does not: while it is down
        # usage events wait in the outbox, so the proxy keeps taking traffic
        ok = all(v == "serving" for v in checks.values())
        checks["nats"] = "serving" if st.bus.connected else "not_connected"
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503
        )

    return gateway


def from_env() -> Gateway:
    """The app of one worker process of several (``cg_proxy.__main__``), from the environment."""
    settings = Settings()
    setup_logging("proxy", settings.log_level)
    tracing.setup("proxy")  # before any channel: they are instrumented as they are made
    return create_app(settings, tls=from_env_or_exit("proxy"), own_process=True)
