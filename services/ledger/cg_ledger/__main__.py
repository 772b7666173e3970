"""Entry point: ``python -m cg_ledger``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc

from cg_ledger import authz
from cg_ledger.admin import LedgerAdminServicer
from cg_ledger.audit import Audit
from cg_ledger.book import Book
from cg_ledger.events import BalanceEvents
from cg_ledger.migrate import COMMAND as MIGRATE_COMMAND
from cg_ledger.migrate import MIGRATIONS
from cg_ledger.outstanding import refresh_forever
from cg_ledger.reservations import Reservations
from cg_ledger.servicer import ERROR_CODES, LedgerServicer
from cg_ledger.settings import Settings
from cg_ledger.txrunner import runner_for
from cglib import tracing
from cglib.db import make_engine
from cglib.dbhealth import follow_database
from cglib.grpc_server import create_server, serve
from cglib.logs import setup_logging
from cglib.metrics import serve_metrics
from cglib.schema import SchemaNotReady, prepare_schema
from cglib.tls import Tls, from_env_or_exit
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

log = logging.getLogger("cg_ledger")
SERVICE_NAME = ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name
ADMIN_SERVICE_NAME = ledger_pb2.DESCRIPTOR.services_by_name["LedgerAdminService"].full_name
SERVICE_NAMES = [SERVICE_NAME, ADMIN_SERVICE_NAME]


async def expire_forever(reservations: Reservations, every_s: float) -> None:
    """Voids stale holds on a timer, in the ledger itself: a crashed proxy (or worker)
    can never pin credits, and every replica may run it (rows are re-checked under lock)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            count, released = await reservations.expire()
            if count:
                log.info("reservations expired", extra={"count": count, "released_ucr": released})
        except Exception:
            log.exception("expiry sweep failed; retrying next round")


def _select_one(rows: Any) -> object:
    """The database health check's query (``cglib.dbhealth``), on the runner's own connections."""
    return rows.cur.execute("SELECT 1").fetchone()


async def main(settings: Settings, tls: Tls | None = None) -> None:
    # Alembic (SQLAlchemy) only migrates; every operation then runs on the driver (txrunner).
    engine = make_engine(settings.database_url)
    try:
        await prepare_schema(
            engine,
            MIGRATIONS,
            apply=settings.migrate_at_start,
            wait_s=settings.schema_wait_s,
            migrate_command=MIGRATE_COMMAND,
        )
    finally:
        await engine.dispose()
    db = runner_for(settings.database_url, settings.sqlite_synchronous)
    reservations = Reservations(db, settings.default_reservation_ttl_s)
    events = BalanceEvents(settings.nats_url)
    book = Book(db, on_change=events.changed)
    events.book = book
    await events.start()
    servicer = LedgerServicer(book, reservations)
    admin = LedgerAdminServicer(Audit(db), settings.admin_token.get_secret_value())
    if not settings.admin_token.get_secret_value():
        log.info("admin service off: CG_LEDGER_ADMIN_TOKEN is not set")

    def register(server: grpc.aio.Server) -> None:
        ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, server)
        ledger_pb2_grpc.add_LedgerAdminServiceServicer_to_server(admin, server)

    server, port, health = create_server(
        f"{settings.host}:{settings.port}",
        register,
        SERVICE_NAMES,
        ERROR_CODES,
        tls=tls,
        policy=authz.POLICY,
        health_addr=f"{settings.host}:{settings.health_port}",
    )
    metrics_port = serve_metrics(settings.host, settings.metrics_port)
    sweeper = asyncio.create_task(expire_forever(reservations, settings.expiry_sweep_s))
    gauges = asyncio.create_task(refresh_forever(db, settings.expiry_sweep_s))
    db_health = asyncio.create_task(
        follow_database(health, SERVICE_NAMES, lambda: db.read(_select_one), settings.db_check_every_s)
    )
    log.info("ledger listening", extra={"grpc_port": port, "metrics_port": metrics_port})
    try:
        await serve(server, health, SERVICE_NAMES)
    finally:
        for task in (sweeper, gauges, db_health):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await events.close()
        db.close()


if __name__ == "__main__":
    settings = Settings()
    setup_logging("ledger", settings.log_level)
    tracing.setup("ledger")  # when an exporter is configured; before any gRPC channel or server
    try:
        asyncio.run(main(settings, from_env_or_exit("ledger")))
    except SchemaNotReady as e:
        raise SystemExit(f"cg_ledger: {e}") from None
    finally:
        tracing.shutdown()
