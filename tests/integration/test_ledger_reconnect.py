"""The ledger outlives its PostgreSQL connections: a pooled connection the server dropped
(a restart, a failover, an idle timeout) costs the next operation nothing — it runs again,
once, on a new connection — and the books stay exact."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from creditgate.ledger.v1 import ledger_pb2 as pb
from support.ledger import running_ledger

pytestmark = pytest.mark.asyncio


def _drop_connections(pg_server, database: str) -> int:
    """Terminates every server process of ``database`` but our own (the ledger's pool)."""
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        ).fetchall()
    return len(rows)


@pytest.fixture
def pg_dsn(pg_server):
    with pg_server.database("reconnect") as dsn:
        yield dsn


async def test_a_dropped_pooled_connection_costs_no_operation(pg_server, pg_dsn):
    database = pg_dsn.rsplit("/", 1)[1]
    async with running_ledger(pg_dsn) as ledger:
        deposit = pb.DepositRequest(idempotency_id="dep-1", account="partner:p1", amount_ucr=5_000)
        await ledger.stub.Deposit(deposit)
        await ledger.engine.dispose()  # the tests' own engine: only the ledger's pool is left
        assert await asyncio.to_thread(_drop_connections, pg_server, database) >= 1

        # the next operations find dead connections in the pool and succeed all the same
        for n in range(2, 12):
            await ledger.stub.Deposit(
                pb.DepositRequest(idempotency_id=f"dep-{n}", account="partner:p1", amount_ucr=1_000)
            )
        replay = await ledger.stub.Deposit(deposit)  # and an id still replays, once
        assert replay.replayed
        balance = await ledger.stub.GetBalance(pb.GetBalanceRequest(account="partner:p1"))
        assert balance.posted_ucr == 5_000 + 10 * 1_000
