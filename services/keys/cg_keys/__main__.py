"""Entry point: ``python -m cg_keys``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys import authz
from cg_keys.catalog import load_catalog
from cg_keys.events import KeyEvents, run_last_used
from cg_keys.funding import Funding
from cg_keys.issuing import KeyIssuer
from cg_keys.keyops import KeyOps
from cg_keys.migrate import COMMAND as MIGRATE_COMMAND
from cg_keys.migrate import MIGRATIONS
from cg_keys.money import KeyMoney
from cg_keys.reads import KeyReads
from cg_keys.repository import KeyRepository
from cg_keys.servicer import ERROR_CODES, KeysServicer
from cg_keys.settings import Settings
from cg_keys.tenants import Tenants
from cglib import natsx, tracing
from cglib.db import make_engine
from cglib.dbhealth import follow_database
from cglib.grpc_client import channel
from cglib.grpc_server import create_server, serve
from cglib.logs import setup_logging
from cglib.metrics import serve_metrics
from cglib.retry import Stopped, retrying
from cglib.schema import SchemaNotReady, prepare_schema
from cglib.tls import Tls, from_env_or_exit
from creditgate.keys.v1 import keys_pb2, keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2_grpc

log = logging.getLogger("cg_keys")
SERVICE_NAME = keys_pb2.DESCRIPTOR.services_by_name["KeysService"].full_name


async def nats_loops(
    settings: Settings, events: KeyEvents, sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event
) -> None:
    """Connects to NATS (retrying: keys serves without it), then runs the last-used
    consumer, restarting it after any failure. The connection stays up for the event
    publisher whatever happens to the consumer."""

    async def connect() -> Client:
        nc = await natsx.connect(settings.nats_url, "keys")
        try:
            await natsx.ensure_keys_stream(nc.jetstream())
        except BaseException:
            await nc.close()
            raise
        return nc

    try:
        nc = await retrying(connect, what="nats connect", stop=stop, first_delay_s=0.2)
    except Stopped:
        return
    events.nc = nc
    try:
        await retrying(
            lambda: run_last_used(nc, sessions, stop), what="last-used consumer", stop=stop, first_delay_s=1.0
        )
    except Stopped:
        pass
    finally:
        await events.drain()
        await nc.drain()


async def reconcile_forever(money: KeyMoney, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            if n := await money.reconcile():
                log.info("reconciled keys", extra={"count": n})
        except Exception:
            log.exception("reconcile failed; retrying next round")


def _pinger(engine: AsyncEngine) -> Callable[[], Awaitable[object]]:
    """The database health check's query (``cglib.dbhealth``), on the service's own pool."""

    async def ping() -> object:
        async with engine.connect() as conn:
            return (await conn.execute(text("SELECT 1"))).scalar()

    return ping


async def main(settings: Settings, tls: Tls | None = None) -> None:
    catalog = load_catalog(settings.catalog_path)
    engine = make_engine(settings.database_url)
    await prepare_schema(
        engine,
        MIGRATIONS,
        apply=settings.migrate_at_start,
        wait_s=settings.schema_wait_s,
        migrate_command=MIGRATE_COMMAND,
    )
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    ledger_channel = channel(settings.ledger_addr, tls)
    events = KeyEvents()
    repo = KeyRepository(sessions)
    funding = Funding(ledger_pb2_grpc.LedgerServiceStub(ledger_channel), settings.rpc_timeout_s)
    money = KeyMoney(repo, catalog, funding, events, settings.auto_topup_daily_max)
    issuer = KeyIssuer(repo, catalog, funding, money, events)
    keys = KeyOps(repo, catalog, funding, money, events)
    reads = KeyReads(repo, catalog, funding)
    servicer = KeysServicer(Tenants(sessions, catalog, events), issuer, keys, money, reads, catalog)
    server, port, health = create_server(
        f"{settings.host}:{settings.port}",
        lambda s: keys_pb2_grpc.add_KeysServiceServicer_to_server(servicer, s),
        [SERVICE_NAME],
        ERROR_CODES,
        tls=tls,
        policy=authz.POLICY,
        health_addr=f"{settings.host}:{settings.health_port}",
    )
    metrics_port = serve_metrics(settings.host, settings.metrics_port)
    stop = asyncio.Event()
    background = [
        asyncio.create_task(nats_loops(settings, events, sessions, stop)),
        asyncio.create_task(reconcile_forever(money, settings.reconcile_every_s)),
        asyncio.create_task(follow_database(health, [SERVICE_NAME], _pinger(engine), settings.db_check_every_s)),
    ]
    log.info("keys listening", extra={"grpc_port": port, "metrics_port": metrics_port, "catalog": catalog.version})
    try:
        await serve(server, health, [SERVICE_NAME])
    finally:
        stop.set()
        for task in background[1:]:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*background, return_exceptions=True), timeout=10)
        await ledger_channel.close()
        await engine.dispose()


if __name__ == "__main__":
    settings = Settings()
    setup_logging("keys", settings.log_level)
    tracing.setup("keys")  # when an exporter is configured; before any gRPC channel or server
    try:
        asyncio.run(main(settings, from_env_or_exit("keys")))
    except SchemaNotReady as e:
        raise SystemExit(f"cg_keys: {e}") from None
    finally:
        tracing.shutdown()
