"""The reservation hot path's row primitives: plain SQL on a synchronous connection.

The same operations and lock order as ``store`` (which the rest of the book uses on
the async engine), written for ``Reservations``, which runs each reserve, settle and
void as ONE synchronous transaction in a worker thread. Through the async drivers a
reservation cost a thread hop (aiosqlite) or a round trip scheduled by a busy event
loop (asyncpg) per statement, while holding SQLite's single write lock: the gateway
benchmark measured ~13 ms of ledger CPU and a ~80 req/s ceiling per reserve+settle.
The statements run on the driver's own cursor: SQLAlchemy's execution layer cost
more per statement than SQLite itself (an in-process reserve + settle pair fell from
1.09 to 0.72 ms of CPU without it; ``txrunner`` then shares the commit). Each statement is valid SQLite and
PostgreSQL (``:name`` parameters, rewritten to ``%(name)s`` for psycopg); row locks
(``FOR UPDATE``) are added on PostgreSQL only, SQLite serializes writers with
``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

from cg_ledger.accounts import AccountId
from cg_ledger.errors import NotFound

_AVAILABLE = "SELECT credits_posted - debits_posted - debits_pending FROM accounts WHERE id = :id"
_SQL = {
    "available": _AVAILABLE,
    "available_lock": _AVAILABLE + " FOR UPDATE",
    "reservation": "SELECT * FROM reservations WHERE request_id = :rid",
    "reservation_lock": "SELECT * FROM reservations WHERE request_id = :rid FOR UPDATE",
    "transfer": "SELECT id, outcome FROM transfers WHERE idempotency_id = :iid",
    # The no-overdraft rule, as in store.debit (and a CHECK constraint behind it).
    "debit": (
        "UPDATE accounts SET debits_posted = debits_posted + :posted, debits_pending = debits_pending + :pending"
        " WHERE id = :id AND (NOT debits_must_not_exceed_credits"
        " OR credits_posted - debits_posted - debits_pending >= :posted + :pending)"
    ),
    "credit": "UPDATE accounts SET credits_posted = credits_posted + :amount WHERE id = :id",
    "post_pending": (
        "UPDATE accounts SET debits_pending = debits_pending - :held, debits_posted = debits_posted + :posted"
        " WHERE id = :id"
    ),
    "ensure_account": (
        "INSERT INTO accounts (id, kind, unit, debits_must_not_exceed_credits, debits_pending, debits_posted,"
        " credits_pending, credits_posted, created_at_ms)"
        " VALUES (:id, :kind, :unit, :guarded, 0, 0, 0, 0, :now) ON CONFLICT (id) DO NOTHING"
    ),
    "insert_transfer": (
        "INSERT INTO transfers (idempotency_id, kind, outcome, debit_account, credit_account, amount_ucr,"
        " request_id, memo, created_at_ms)"
        " VALUES (:iid, :kind, :outcome, :debit, :credit, :amount, :rid, :memo, :now)"
    ),
    "insert_reservation": (
        "INSERT INTO reservations (request_id, account, credit_account, model, input_usd_per_mtok,"
        " output_usd_per_mtok, price_book_version, held_ucr, customer_account, revenue_account,"
        " profit_multiplier, price_per_ai_credit_cents, floor_usd_per_mtok, customer_held_uai,"
        " customer_charged_uai, customer_unpaid_uai, input_tokens, output_tokens, status, charged_ucr,"
        " unpaid_ucr, usage_source, expires_at_ms, created_at_ms, rate_key)"
        " VALUES (:request_id, :account, :credit_account, :model, :input_usd_per_mtok, :output_usd_per_mtok,"
        " :price_book_version, :held_ucr, :customer_account, :revenue_account, :profit_multiplier,"
        " :price_per_ai_credit_cents, :floor_usd_per_mtok, :customer_held_uai, 0, 0, 0, 0, 'pending', 0, 0, '',"
        " :expires_at_ms, :created_at_ms, :rate_key)"
    ),
    "settled": (
        "UPDATE reservations SET status = 'posted', charged_ucr = :charged_ucr, unpaid_ucr = :unpaid_ucr,"
        " customer_charged_uai = :customer_charged_uai, customer_unpaid_uai = :customer_unpaid_uai,"
        " usage_source = :usage_source, input_tokens = :input_tokens, output_tokens = :output_tokens"
        " WHERE request_id = :rid"
    ),
    "status": "UPDATE reservations SET status = :status WHERE request_id = :rid",
    "due": (
        "SELECT request_id FROM reservations WHERE status = 'pending' AND expires_at_ms <= :now LIMIT :limit"
    ),
    # A rate-limited key's window, oldest first (index rate_key, created_at_ms).
    "window": (
        "SELECT created_at_ms, input_tokens + output_tokens FROM reservations"
        " WHERE rate_key = :key AND created_at_ms > :since ORDER BY created_at_ms"
    ),
}


_PSYCOPG = {name: re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql) for name, sql in _SQL.items()}


def now_ms() -> int:
    return int(time.time() * 1000)


class HotSQL:
    """The primitives on one synchronous connection (one transaction)."""

    def __init__(self, dbapi_conn: Any, postgres: bool) -> None:
        self.pg = postgres
        self.sql = _PSYCOPG if postgres else _SQL
        self.cur = dbapi_conn.cursor()

    def _run(self, name: str, lock: bool = False, **params):
        if lock and self.pg:
            name = f"{name}_lock"
        self.cur.execute(self.sql[name], params)
        return self.cur

    def _one(self, name: str, lock: bool = False, **params):
        cur = self._run(name, lock, **params)
        row = cur.fetchone()
        if row is None:
            return None
        return SimpleNamespace(**dict(zip((d[0] for d in cur.description), row)))

    def reservation(self, request_id: str, lock: bool = False):
        return self._one("reservation", lock, rid=request_id)

    def transfer(self, idempotency_id: str):
        return self._one("transfer", iid=idempotency_id)

    def available(self, account: str, lock: bool = False) -> int:
        row = self._run("available", lock, id=account).fetchone()
        if row is None or row[0] is None:
            raise NotFound(f"account {account!r} not found")
        return int(row[0])

    def debit(self, account: str, posted: int = 0, pending: int = 0) -> bool:
        return self._run("debit", id=account, posted=posted, pending=pending).rowcount == 1

    def credit(self, account: str, amount: int) -> bool:
        """False if there is no such account (nothing was credited)."""
        return self._run("credit", id=account, amount=amount).rowcount == 1

    def post_pending(self, account: str, held: int, posted: int) -> None:
        self._run("post_pending", id=account, held=held, posted=posted)

    def ensure_account(self, account: AccountId) -> None:
        self._run("ensure_account", id=account.id, kind=account.kind, unit=account.unit,
                  guarded=account.kind != "external", now=now_ms())

    def insert_transfer(self, idempotency_id: str, kind: str, debit: str, credit: str, amount: int,
                        request_id: str | None = None, memo: str = "", outcome: str = "ok") -> None:
        self._run("insert_transfer", iid=idempotency_id, kind=kind, outcome=outcome, debit=debit, credit=credit,
                  amount=amount, rid=request_id, memo=memo[:200], now=now_ms())

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
