"""Reads of the book: balances (with what a closed account has refunded) and statements."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cg_ledger import accounts, store
from cg_ledger.errors import InvalidArgument, NotFound
from cg_ledger.limits import MAX_COUNTER
from cglib.db import READ

A, T = store.A, store.T


@dataclass(frozen=True)
class BalanceView:
    account: str
    posted: int
    pending: int
    available: int
    # where a closed account's releases go ("" while open), and all it moved there so far
    closed_to: str = ""
    refunded: int = 0


def _view(row, refunded: dict[str, int]) -> BalanceView:
    posted = row.credits_posted - row.debits_posted
    return BalanceView(
        row.id, posted, row.debits_pending, posted - row.debits_pending, row.closed_to, refunded.get(row.id, 0)
    )


async def _refunded(conn: AsyncConnection, rows) -> dict[str, int]:
    """What each closed account among ``rows`` moved to its ``closed_to``: the refund at
    closing and every release since (transfers of kind refund). Open accounts: skipped."""
    closed = [r.id for r in rows if r.closed_to]
    if not closed:
        return {}
    q = (
        select(T.c.debit_account, func.sum(T.c.amount_ucr))
        .join(A, and_(A.c.id == T.c.debit_account, A.c.closed_to == T.c.credit_account))
        .where(T.c.debit_account.in_(closed), T.c.kind == "refund", T.c.outcome == "ok")
        .group_by(T.c.debit_account)
    )
    return {account: int(total) for account, total in (await conn.execute(q)).all()}


class Balances:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def balance(self, account: str) -> BalanceView:
        if account not in accounts.EXTERNAL.values():
            accounts.parse(account)
        async with self.engine.connect() as conn:
            await conn.execution_options(**READ)
            row = (await conn.execute(select(A).where(A.c.id == account))).first()
            if row is None:
                raise NotFound(f"account {account!r} not found")
            return _view(row, await _refunded(conn, [row]))

    async def balances(self, account_ids: list[str]) -> list[BalanceView]:
        if len(account_ids) > 1000:
            raise InvalidArgument("accounts: at most 1000")
        for account in account_ids:
            accounts.parse(account)
        async with self.engine.connect() as conn:
            await conn.execution_options(**READ)
            rows = (await conn.execute(select(A).where(A.c.id.in_(set(account_ids))))).all()
            refunded = await _refunded(conn, rows)
        return [_view(r, refunded) for r in rows]

    async def statement(self, account: str, page_size: int = 50, page_token: str = ""):
        """Transfers that moved money in or out of ``account``, newest first.
        Returns ``(rows, next_page_token)``; the token is the last id seen."""
        accounts.parse(account)
        if not 0 <= page_size <= 1000:
            raise InvalidArgument("page_size: between 1 and 1000")
        page_size = page_size or 50
        before = None
        if page_token:
            if len(page_token) > 19 or not page_token.isdigit() or not 0 < int(page_token) <= MAX_COUNTER:
                raise InvalidArgument("page_token: not a token from this API")
            before = int(page_token)
        q = select(T).where(or_(T.c.debit_account == account, T.c.credit_account == account), T.c.outcome == "ok")
        if before is not None:
            q = q.where(T.c.id < before)
        q = q.order_by(T.c.id.desc()).limit(page_size + 1)
        async with self.engine.connect() as conn:
            await conn.execution_options(**READ)
            if not await store.exists(conn, account):
                raise NotFound(f"account {account!r} not found")
            rows = (await conn.execute(q)).all()
        more = len(rows) > page_size
        rows = rows[:page_size]
        return rows, (str(rows[-1].id) if more else "")
