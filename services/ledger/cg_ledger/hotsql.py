"""The reservation hot path's row primitives: ``sql``'s statements on a synchronous connection.

``Reservations`` runs each reserve, settle and void as ONE synchronous transaction in a
worker thread. Through the async drivers a reservation cost a thread hop (aiosqlite)
or a round trip scheduled by a busy event loop (asyncpg) per statement, while holding
SQLite's single write lock, which capped a reserve+settle pair far below what the proxy
needs. The statements run on the driver's own cursor: SQLAlchemy's execution layer cost
more per statement than SQLite itself; ``txrunner`` then shares the commit. (The figures
before and after: docs/benchmarks.md, "The hot path on plain SQL in a writer thread".) The statements themselves, and the money rules in them, are
``sql``'s, the same texts ``store`` runs for the rest of the book. Row locks (``FOR
UPDATE``) are added on PostgreSQL only; SQLite serializes writers with ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from cg_ledger import sql
from cg_ledger.accounts import AccountId
from cg_ledger.errors import NotFound

_PSYCOPG = sql.psycopg_style(sql.STATEMENTS)


def now_ms() -> int:
    return int(time.time() * 1000)


class HotSQL:
    """The primitives on one synchronous connection (one transaction)."""

    def __init__(self, dbapi_conn: Any, postgres: bool) -> None:
        self.pg = postgres
        self.sql = _PSYCOPG if postgres else sql.STATEMENTS
        self.cur = dbapi_conn.cursor()

    def _run(self, name: str, lock: bool = False, **params):
        if lock and self.pg:
            name = f"{name}_lock"
        self.cur.execute(self.sql[name], params)
        return self.cur

    def _stmt(self, stmt: sql.Stmt):
        return self._run(stmt.name, **stmt.params)

    def _one(self, name: str, lock: bool = False, **params):
        cur = self._run(name, lock, **params)
        row = cur.fetchone()
        if row is None:
            return None
        return SimpleNamespace(**dict(zip((d[0] for d in cur.description), row, strict=True)))

    def reservation(self, request_id: str, lock: bool = False):
        return self._one("reservation", lock, rid=request_id)

    def transfer(self, idempotency_id: str):
        return self._one("transfer", iid=idempotency_id)

    def state(self, account: str, lock: bool = False) -> tuple[int, str]:
        """(available, closed_to) of an account."""
        row = self._run("available", lock, id=account).fetchone()
        if row is None or row[0] is None:
            raise NotFound(f"account {account!r} not found")
        return int(row[0]), row[1]

    def available(self, account: str, lock: bool = False) -> int:
        return self.state(account, lock)[0]

    def hold(self, account: str, amount: int) -> bool:
        """False: not enough available, or the account is closed (nothing was held)."""
        return self._stmt(sql.hold(account, amount)).rowcount == 1

    def debit(self, account: str, amount: int) -> bool:
        return self._stmt(sql.debit(account, amount)).rowcount == 1

    def credit(self, account: str, amount: int) -> bool:
        """False if there is no such account or its credits would pass int64 (nothing was credited)."""
        return self._stmt(sql.credit(account, amount)).rowcount == 1

    def release(self, account: str, held: int, posted: int) -> str:
        """Frees a hold, posting part of it; returns the account's ``closed_to`` ("" if open)."""
        rows = self._stmt(sql.release(account, held, posted)).fetchall()
        return rows[0][0] if rows else ""

    def ensure_account(self, account: AccountId) -> None:
        self._run(
            "ensure_account",
            id=account.id,
            kind=account.kind,
            unit=account.unit,
            guarded=account.kind != "external",
            now=now_ms(),
        )

    def insert_transfer(
        self,
        idempotency_id: str,
        kind: str,
        debit: str,
        credit: str,
        amount: int,
        request_id: str | None = None,
        memo: str = "",
        outcome: str = "ok",
    ) -> int:
        rows = self._run(
            "insert_transfer",
            iid=idempotency_id,
            kind=kind,
            outcome=outcome,
            debit=debit,
            credit=credit,
            amount=amount,
            rid=request_id,
            memo=memo,
            now=now_ms(),
        ).fetchall()
        return int(rows[0][0])

    def insert_reservation(self, **values) -> None:
        self._run("insert_reservation", **values)

    def mark_settled(self, request_id: str, **values) -> None:
        self._run("settled", rid=request_id, **values)

    def set_status(self, request_id: str, status: str) -> None:
        self._run("status", rid=request_id, status=status)

    def due(self, now: int, limit: int) -> list[str]:
        return [r[0] for r in self._run("due", now=now, limit=limit).fetchall()]

    def window(self, key: str, since_ms: int) -> list[tuple[int, int]]:
        """(created_at_ms, settled tokens) of the key's reservations after ``since_ms``, oldest first."""
        return [(int(t), int(n)) for t, n in self._run("window", key=key, since=since_ms).fetchall()]
