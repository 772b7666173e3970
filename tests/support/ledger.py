"""A real ledger (both gRPC services) in-process on a test database, and helpers that
read or bend its tables directly, for the ledger's integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import cg_ledger
from cg_ledger.admin import LedgerAdminServicer
from cg_ledger.audit import Audit
from cg_ledger.book import Book
from cg_ledger.reservations import Reservations
from cg_ledger.servicer import ERROR_CODES, LedgerServicer
from cg_ledger.txrunner import Runner, runner_for
from cglib.db import make_engine, migrate
from cglib.grpc_client import insecure_channel
from cglib.grpc_server import create_server
from creditgate.ledger.v1 import ledger_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2_grpc

MIGRATIONS = Path(cg_ledger.__file__).parent / "migrations"
INT64_MAX = 2**63 - 1
ADMIN_TOKEN = "test-admin-token-0123456789abcdef"
ADMIN = (("x-cg-admin-token", ADMIN_TOKEN),)
SERVICES = [pb.DESCRIPTOR.services_by_name[name].full_name for name in ("LedgerService", "LedgerAdminService")]
HAIKU = pb.Price(input_usd_per_mtok="1.00", output_usd_per_mtok="5.00", price_book_version="v1")
COUNTERS = "debits_pending, debits_posted, credits_pending, credits_posted"


@dataclass
class Ledger:
    stub: ledger_pb2_grpc.LedgerServiceStub
    admin: ledger_pb2_grpc.LedgerAdminServiceStub
    engine: AsyncEngine  # the tests' own way into the tables (the ledger runs on ``db``)
    db: Runner
    book: Book
    reservations: Reservations


@contextlib.asynccontextmanager
async def running_ledger(db_url: str, admin_token: str = ADMIN_TOKEN) -> AsyncIterator[Ledger]:
    engine = make_engine(db_url)
    await migrate(engine, MIGRATIONS)
    db = runner_for(db_url)
    reservations = Reservations(db)
    book = Book(db)
    servicer = LedgerServicer(book, reservations)
    admin = LedgerAdminServicer(Audit(db), admin_token)

    def register(server) -> None:
        ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, server)
        ledger_pb2_grpc.add_LedgerAdminServiceServicer_to_server(admin, server)

    server, port, _ = create_server("127.0.0.1:0", register, SERVICES, ERROR_CODES)
    await server.start()
    channel = insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Ledger(
            ledger_pb2_grpc.LedgerServiceStub(channel),
            ledger_pb2_grpc.LedgerAdminServiceStub(channel),
            engine,
            db,
            book,
            reservations,
        )
    finally:
        await channel.close()
        await server.stop(0)
        db.close()
        await engine.dispose()


async def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value.code()


async def refusal(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value.code(), e.value.details()


async def books(engine: AsyncEngine) -> tuple[dict[str, tuple], int, int]:
    """(every account's four counters, number of transfers, number of reservations)."""
    async with engine.connect() as conn:
        accounts = {r[0]: tuple(r[1:]) for r in (await conn.execute(text(f"SELECT id, {COUNTERS} FROM accounts")))}
        transfers = (await conn.execute(text("SELECT COUNT(*) FROM transfers"))).scalar_one()
        reservations = (await conn.execute(text("SELECT COUNT(*) FROM reservations"))).scalar_one()
    return accounts, int(transfers), int(reservations)


async def sql(engine: AsyncEngine, statement: str, **params) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(statement), params)


async def seed_transfers(engine: AsyncEngine, *transfers: tuple[str, str, str, str, int]) -> None:
    """Writes posted transfers ``(idempotency id, kind, debit, credit, amount)`` straight
    into the tables, past every bound of the API (the way years of traffic would have
    added up): the counters move with them (all credits first, so no CHECK sees an
    account overdrawn half way), and the books still balance and pass the audit."""
    async with engine.begin() as conn:
        for _, _, debit, credit, _ in transfers:
            for account in (debit, credit):
                kind = account.split(":", 1)[0]
                unit = (
                    "ai_credits"
                    if kind in ("customer", "partnerrev") or account == "external:ai_credits"
                    else "credits"
                )
                await conn.execute(
                    text(
                        "INSERT INTO accounts (id, kind, unit, debits_must_not_exceed_credits, debits_pending,"
                        " debits_posted, credits_pending, credits_posted, closed_to, created_at_ms)"
                        " VALUES (:id, :kind, :unit, :guarded, 0, 0, 0, 0, '', 0) ON CONFLICT (id) DO NOTHING"
                    ),
                    dict(id=account, kind=kind, unit=unit, guarded=kind != "external"),
                )
        for idem, kind, debit, credit, amount in transfers:
            await conn.execute(
                text("UPDATE accounts SET credits_posted = credits_posted + :a WHERE id = :id"),
                dict(a=amount, id=credit),
            )
            await conn.execute(
                text(
                    "INSERT INTO transfers (idempotency_id, kind, outcome, debit_account, credit_account, amount_ucr,"
                    " request_id, memo, created_at_ms) VALUES (:iid, :kind, 'ok', :d, :c, :a, NULL, 'seeded', 0)"
                ),
                dict(iid=idem, kind=kind, d=debit, c=credit, a=amount),
            )
        for _, _, debit, _, amount in transfers:
            await conn.execute(
                text("UPDATE accounts SET debits_posted = debits_posted + :a WHERE id = :id"), dict(a=amount, id=debit)
            )


async def churn(engine: AsyncEngine, a: str, b: str, amount: int) -> None:
    """``amount`` moved from a to b and back: both accounts' counters grow, balances stay."""
    await seed_transfers(
        engine, (f"churn:{a}:{b}:1", "transfer", a, b, amount), (f"churn:{a}:{b}:2", "transfer", b, a, amount)
    )


async def audit(ledger: Ledger) -> pb.AuditBooksResponse:
    return await ledger.admin.AuditBooks(pb.AuditBooksRequest(), metadata=ADMIN)
