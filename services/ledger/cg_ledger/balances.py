"""Reads of the book: balances (with what a closed account has refunded) and statements.

``platform:usage`` is read as one account although it is kept in shards
(``accounts.USAGE_SHARDS``, plus the single row of books older than the shards): its
balance is the sum of theirs, its statement the transfers of any of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from cg_ledger import accounts, sql
from cg_ledger.errors import InvalidArgument, NotFound
from cg_ledger.limits import MAX_COUNTER
from cg_ledger.rows import Rows
from cg_ledger.txrunner import Runner

_ACCOUNT = "SELECT id, debits_pending, debits_posted, credits_posted, closed_to FROM accounts"


@dataclass(frozen=True)
class BalanceView:
    account: str
    posted: int
    pending: int
    available: int
    # where a closed account's releases go ("" while open), and all it moved there so far
    closed_to: str = ""
    refunded: int = 0


def _view(account: str, rows: list, refunded: dict[str, int]) -> BalanceView:
    """One account's balance from its rows (several for the sharded usage sink)."""
    posted = sum(int(r.credits_posted) - int(r.debits_posted) for r in rows)
    pending = sum(int(r.debits_pending) for r in rows)
    closed_to = rows[0].closed_to if len(rows) == 1 else ""
    return BalanceView(account, posted, pending, posted - pending, closed_to, refunded.get(account, 0))


def _rows_of(db: Rows, ids: list[str]) -> dict[str, list]:
    """Each asked account's rows: the usage sink's shards, or the account's one row."""
    names, params = sql.in_list("a", {s for a in ids for s in accounts.stored_ids(a)})
    by_id = {row.id: row for row in db.query(f"{_ACCOUNT} WHERE id IN ({names})", **params)}
    found = {a: [by_id[s] for s in accounts.stored_ids(a) if s in by_id] for a in ids}
    return {a: rows for a, rows in found.items() if rows}


def _refunded(db: Rows, rows: list) -> dict[str, int]:
    """What each closed account among ``rows`` moved to its ``closed_to``: the refund at
    closing and every release since (transfers of kind refund). Open accounts: skipped."""
    closed = {r.id: r.closed_to for r in rows if r.closed_to}
    if not closed:
        return {}
    names, params = sql.in_list("a", closed)
    totals = db.query(
        "SELECT t.debit_account, SUM(t.amount_ucr) AS total FROM transfers t"
        " JOIN accounts a ON a.id = t.debit_account AND a.closed_to = t.credit_account"
        f" WHERE t.debit_account IN ({names}) AND t.kind = 'refund' AND t.outcome = 'ok'"
        " GROUP BY t.debit_account",
        **params,
    )
    return {account: int(total) for account, total in totals}


class Balances:
    def __init__(self, db: Runner) -> None:
        self.db = db

    async def balance(self, account: str) -> BalanceView:
        if account not in accounts.EXTERNAL.values():
            accounts.parse(account)

        def read(db: Rows) -> BalanceView:
            rows = _rows_of(db, [account]).get(account)
            if not rows:
                raise NotFound(f"account {account!r} not found")
            return _view(account, rows, _refunded(db, rows))

        return await self.db.read(read)

    async def balances(self, account_ids: list[str]) -> list[BalanceView]:
        if len(account_ids) > 1000:
            raise InvalidArgument("accounts: at most 1000")
        for account in account_ids:
            accounts.parse(account)

        def read(db: Rows) -> list[BalanceView]:
            found = _rows_of(db, list(set(account_ids)))
            refunded = _refunded(db, [r for rows in found.values() for r in rows])
            return [_view(account, rows, refunded) for account, rows in found.items()]

        return await self.db.read(read)

    async def statement(self, account: str, page_size: int = 50, page_token: str = ""):
        """Transfers that moved money in or out of ``account``, newest first.
        Returns ``(rows, next_page_token)``; the token is the last id seen."""
        accounts.parse(account)
        if not 0 <= page_size <= 1000:
            raise InvalidArgument("page_size: between 1 and 1000")
        page_size = page_size or 50
        before = MAX_COUNTER
        if page_token:
            if len(page_token) > 19 or not page_token.isdigit() or not 0 < int(page_token) <= MAX_COUNTER:
                raise InvalidArgument("page_token: not a token from this API")
            before = int(page_token)
        names, params = sql.in_list("a", accounts.stored_ids(account))
        q = (
            "SELECT * FROM transfers"
            f" WHERE (debit_account IN ({names}) OR credit_account IN ({names})) AND outcome = 'ok' AND id < :before"
            " ORDER BY id DESC LIMIT :limit"
        )

        def read(db: Rows) -> list:
            if not _rows_of(db, [account]):
                raise NotFound(f"account {account!r} not found")
            return db.query(q, before=before, limit=page_size + 1, **params)

        rows = await self.db.read(read)
        more = len(rows) > page_size
        rows = rows[:page_size]
        return rows, (str(rows[-1].id) if more else "")
