"""Entry point: ``python -m cg_keys``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys.catalog import load_catalog
from cg_keys.events import KeyEvents, run_last_used
from cg_keys.funding import Funding
from cg_keys.issuing import KeyIssuer
from cg_keys.keyops import KeyOps
from cg_keys.servicer import KeysServicer
from cg_keys.settings import Settings
from cg_keys.tenants import Tenants
from cglib import natsx
from cglib.db import make_engine, migrate
from cglib.grpc_client import insecure_channel
from cglib.grpc_server import create_server, serve
from cglib.logs import setup_logging
from cglib.metrics import serve_metrics
from creditgate.keys.v1 import keys_pb2, keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2_grpc

log = logging.getLogger("cg_keys")
SERVICE_NAME = keys_pb2.DESCRIPTOR.services_by_name["KeysService"].full_name


async def nats_loops(settings: Settings, events: KeyEvents, sessions, stop: asyncio.Event) -> None:
    """Connects to NATS (retrying: keys serves without it), then runs the last-used
    consumer, restarting it after any failure. The connection stays up for the event
    publisher whatever happens to the consumer."""
    delay = 0.2
    while not stop.is_set():
        try:
            nc = await natsx.connect(settings.nats_url, "keys")
            await natsx.ensure_keys_stream(nc.jetstream())
            break
        except Exception as e:
            log.warning("nats not reachable yet", extra={"error": repr(e)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)
    else:
        return
    events.nc = nc
    try:
        while not stop.is_set():
            try:
                await run_last_used(nc, sessions, stop)
            except Exception:
                log.exception("last-used consumer failed; restarting it")
                await asyncio.sleep(1)
    finally:
        await events.drain()
        await nc.drain()


async def reconcile_forever(keys: KeyOps, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            if n := await keys.reconcile():
                log.info("reconciled keys", extra={"count": n})
        except Exception:
            log.exception("reconcile failed; retrying next round")


async def main(settings: Settings) -> None:
    catalog = load_catalog(settings.catalog_path)
    engine = make_engine(settings.database_url)
    await migrate(engine, Path(__file__).parent / "migrations")
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    ledger_channel = insecure_channel(settings.ledger_addr)
    events = KeyEvents()
    funding = Funding(ledger_pb2_grpc.LedgerServiceStub(ledger_channel), settings.rpc_timeout_s)
    issuer = KeyIssuer(sessions, catalog, funding, events)
    keys = KeyOps(sessions, catalog, funding, events, issuer, settings.auto_topup_daily_max)
    servicer = KeysServicer(Tenants(sessions, catalog), issuer, keys, catalog)
    server, port, health = create_server(
        f"{settings.host}:{settings.port}",
        lambda s: keys_pb2_grpc.add_KeysServiceServicer_to_server(servicer, s),
        [SERVICE_NAME],
    )
    metrics_port = serve_metrics(settings.host, settings.metrics_port)
    stop = asyncio.Event()
    background = [
        asyncio.create_task(nats_loops(settings, events, sessions, stop)),
        asyncio.create_task(reconcile_forever(keys, settings.reconcile_every_s)),
    ]
    log.info("keys listening", extra={"grpc_port": port, "metrics_port": metrics_port, "catalog": catalog.version})
    try:
        await serve(server, health, [SERVICE_NAME])
    finally:
        stop.set()
        background[1].cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*background, return_exceptions=True), timeout=10)
        await ledger_channel.close()
        await engine.dispose()


if __name__ == "__main__":
    settings = Settings()
    setup_logging("keys", settings.log_level)
    asyncio.run(main(settings))
