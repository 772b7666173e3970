"""Row-level primitives on an async connection: ``sql``'s statements, as ``hotsql`` runs
them on the hot path. Every money operation of the book is built from these.

Lock order (PostgreSQL row locks; SQLite serializes writers with BEGIN IMMEDIATE):
a reservation row first, then debited accounts (``lock_accounts`` sorts them: a key
before its partner), a customer's account, and credit-only sinks (``platform:*``,
``partnerrev:*``) last, right before commit. The release of a closed key's hold credits
its partner right after the key, which keeps that order. No transaction takes them in
another order, so two never wait on each other in a cycle.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from cg_ledger import sql
from cg_ledger.accounts import AccountId
from cg_ledger.errors import NotFound
from cg_ledger.models import Account, Reservation, Transfer

# the tables behind the models (SQLModel's metadata holds them by name)
A = Account.metadata.tables["accounts"]
T = Transfer.metadata.tables["transfers"]
R = Reservation.metadata.tables["reservations"]
_TEXT = {name: text(statement) for name, statement in sql.STATEMENTS.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


async def _run(conn: AsyncConnection, name: str, params: dict, lock: bool = False):
    if lock and conn.dialect.name == "postgresql":
        name = f"{name}_lock"
    return await conn.execute(_TEXT[name], params)


async def ensure_account(conn: AsyncConnection, account: AccountId) -> None:
    await _run(
        conn,
        "ensure_account",
        dict(id=account.id, kind=account.kind, unit=account.unit, guarded=account.kind != "external", now=now_ms()),
    )


async def lock_accounts(conn: AsyncConnection, ids: Iterable[str]) -> None:
    """Row-locks accounts in id order (PostgreSQL; a no-op on SQLite)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(A.c.id).where(A.c.id.in_(sorted(set(ids)))).order_by(A.c.id).with_for_update())


async def state(conn: AsyncConnection, account: str, lock: bool = False) -> tuple[int, str]:
    """(available, closed_to) of an account."""
    row = (await _run(conn, "available", {"id": account}, lock)).first()
    if row is None:
        raise NotFound(f"account {account!r} not found")
    return int(row[0]), row[1]


async def available(conn: AsyncConnection, account: str, lock: bool = False) -> int:
    return (await state(conn, account, lock))[0]


async def exists(conn: AsyncConnection, account: str) -> bool:
    return (await _run(conn, "exists", {"id": account})).first() is not None


async def _stmt(conn: AsyncConnection, stmt: sql.Stmt) -> bool:
    return (await conn.execute(_TEXT[stmt.name], stmt.params)).rowcount == 1


async def debit(conn: AsyncConnection, account: str, amount: int) -> bool:
    """Adds to an account's posted debits unless that would overdraw it (or, for an
    unguarded account, pass int64)."""
    return await _stmt(conn, sql.debit(account, amount))


async def credit(conn: AsyncConnection, account: str, amount: int) -> bool:
    """False if there is no such account or its credits would pass int64."""
    return await _stmt(conn, sql.credit(account, amount))


async def close(conn: AsyncConnection, account: str, closed_to: str) -> None:
    await _run(conn, "close", {"id": account, "closed_to": closed_to})


async def stored_transfer(conn: AsyncConnection, idempotency_id: str):
    return (await _run(conn, "transfer", {"iid": idempotency_id})).first()


async def insert_transfer(
    conn: AsyncConnection,
    idempotency_id: str,
    kind: str,
    debit_account: str,
    credit_account: str,
    amount: int,
    request_id: str | None = None,
    memo: str = "",
    outcome: str = "ok",
) -> int:
    row = (
        await _run(
            conn,
            "insert_transfer",
            dict(
                iid=idempotency_id,
                kind=kind,
                outcome=outcome,
                debit=debit_account,
                credit=credit_account,
                amount=amount,
                rid=request_id,
                memo=memo,
                now=now_ms(),
            ),
        )
    ).first()
    return int(row[0])
