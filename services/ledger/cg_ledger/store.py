"""Row-level primitives on an open connection. Every money operation is built from these.

Lock order (PostgreSQL row locks; SQLite serializes writers with BEGIN IMMEDIATE):
a reservation row first, then debited accounts (``lock_accounts`` sorts them), and
credit-only sinks (``platform:*``, ``partnerrev:*``) last, right before commit. No
transaction takes them in another order, so two never wait on each other in a cycle.
"""

from __future__ import annotations

import time
from typing import Iterable

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from cg_ledger.accounts import AccountId
from cg_ledger.errors import NotFound
from cg_ledger.models import Account, Reservation, Transfer

A = Account.__table__
T = Transfer.__table__
R = Reservation.__table__


def now_ms() -> int:
    return int(time.time() * 1000)


async def ensure_account(conn: AsyncConnection, account: AccountId) -> None:
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(A)
    await conn.execute(
        insert.values(
            id=account.id,
            kind=account.kind,
            unit=account.unit,
            debits_must_not_exceed_credits=account.kind != "external",
            debits_pending=0,
            debits_posted=0,
            credits_pending=0,
            credits_posted=0,
            created_at_ms=now_ms(),
        ).on_conflict_do_nothing(index_elements=["id"])
    )


async def lock_accounts(conn: AsyncConnection, ids: Iterable[str]) -> None:
    """Row-locks accounts in id order (PostgreSQL; a no-op on SQLite)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(select(A.c.id).where(A.c.id.in_(sorted(set(ids)))).order_by(A.c.id).with_for_update())


async def available(conn: AsyncConnection, account: str, lock: bool = False) -> int:
    q = select(A.c.credits_posted - A.c.debits_posted - A.c.debits_pending).where(A.c.id == account)
    if lock:
        q = q.with_for_update()
    value = (await conn.execute(q)).scalar_one_or_none()
    if value is None:
        raise NotFound(f"account {account!r} not found")
    return int(value)


async def exists(conn: AsyncConnection, account: str) -> bool:
    return (await conn.execute(select(A.c.id).where(A.c.id == account))).first() is not None


async def debit(conn: AsyncConnection, account: str, posted: int = 0, pending: int = 0) -> bool:
    """Adds to an account's debit counters unless that would overdraw it."""
    result = await conn.execute(
        update(A)
        .where(A.c.id == account)
        .where(
            (A.c.debits_must_not_exceed_credits == False)  # noqa: E712
            | (A.c.credits_posted - A.c.debits_posted - A.c.debits_pending >= posted + pending)
        )
        .values(debits_posted=A.c.debits_posted + posted, debits_pending=A.c.debits_pending + pending)
    )
    return result.rowcount == 1


async def credit(conn: AsyncConnection, account: str, posted: int) -> None:
    await conn.execute(update(A).where(A.c.id == account).values(credits_posted=A.c.credits_posted + posted))


async def post_pending(conn: AsyncConnection, account: str, held: int, posted: int) -> None:
    """Releases ``held`` from the pending debits and posts ``posted`` (<= held)."""
    await conn.execute(
        update(A)
        .where(A.c.id == account)
        .values(debits_pending=A.c.debits_pending - held, debits_posted=A.c.debits_posted + posted)
    )


async def stored_transfer(conn: AsyncConnection, idempotency_id: str):
    return (await conn.execute(select(T).where(T.c.idempotency_id == idempotency_id))).first()


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
    result = await conn.execute(
        T.insert().values(
            idempotency_id=idempotency_id,
            kind=kind,
            outcome=outcome,
            debit_account=debit_account,
            credit_account=credit_account,
            amount_ucr=amount,
            request_id=request_id,
            memo=memo[:200],
            created_at_ms=now_ms(),
        )
    )
    return int(result.inserted_primary_key[0])
