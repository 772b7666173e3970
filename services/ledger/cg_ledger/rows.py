"""The ledger's row primitives: ``sql``'s statements on the driver's own cursor, in one
transaction. Every operation of the ledger — deposits, funding, refunds, reservations,
settlements, reads — is a synchronous function of a ``Rows`` that ``txrunner`` runs in a
worker thread.

Why plain SQL on the driver's cursor: through the async drivers every statement cost a
thread hop (aiosqlite) or a round trip scheduled by a busy event loop (asyncpg) while
holding SQLite's single write lock, and SQLAlchemy's execution layer cost more per
statement than SQLite itself (docs/benchmarks.md, "The hot path on plain SQL in a writer
thread"). Row locks (``FOR UPDATE``) are added on PostgreSQL only; SQLite serializes
writers with ``BEGIN IMMEDIATE``.

Lock order (PostgreSQL row locks): a reservation row first, then debited accounts
(``lock_accounts`` sorts them: a key before its partner), a customer's account, and
credit-only sinks (``platform:*``, ``partnerrev:*``) last, right before commit. The
release of a closed key's hold credits its partner right after the key, which keeps that
order. No transaction takes them in another order, so two never wait on each other in a
cycle.

Rows come back as named tuples (``row.id``, ``row[0]``), whichever the driver.
"""

from __future__ import annotations

import functools
import time
from collections import namedtuple
from collections.abc import Iterable, Sequence
from typing import Any

from cg_ledger import sql
from cg_ledger.accounts import AccountId
from cg_ledger.errors import NotFound

_PSYCOPG = sql.psycopg_style(sql.STATEMENTS)
_PSYCOPG_BATCH = sql.psycopg_style(sql.BATCH)
_PSYCOPG_ARRAYS = sql.psycopg_style(sql.PG_ARRAYS)
_PSYCOPG_LOCK = sql.psycopg_style(sql.PG_LOCK)


def now_ms() -> int:
    return int(time.time() * 1000)


def _distinct(params: Sequence[dict], key: str) -> bool:
    return len({p[key] for p in params}) == len(params)


@functools.lru_cache(maxsize=256)
def _row_type(columns: tuple[str, ...]) -> type:
    return namedtuple("Row", columns, rename=True)


class Rows:
    """The primitives on one synchronous connection (one transaction)."""

    def __init__(self, dbapi_conn: Any, postgres: bool) -> None:
        self.pg = postgres
        self.sql = _PSYCOPG if postgres else sql.STATEMENTS
        self.batch_sql = _PSYCOPG_BATCH if postgres else sql.BATCH
        self.conn = dbapi_conn
        self.cur = dbapi_conn.cursor()

    # -- running statements ------------------------------------------------------------

    def _run(self, name: str, lock: bool = False, **params: Any) -> Any:
        if lock and self.pg:
            name = f"{name}_lock"
        self.cur.execute(self.sql[name], params)
        return self.cur

    def run_named(self, name: str, **params: Any) -> int:
        """Runs ``sql.STATEMENTS[name]``; returns the rows it changed."""
        return int(self._run(name, **params).rowcount)

    def _stmt(self, stmt: sql.Stmt) -> Any:
        return self._run(stmt.name, **stmt.params)

    def _rows(self, cur: Any) -> list:
        rows = cur.fetchall()
        if not rows:
            return []
        make = _row_type(tuple(d[0] for d in cur.description))
        return [make(*r) for r in rows]

    def _one(self, name: str, lock: bool = False, **params: Any) -> Any:
        rows = self._rows(self._run(name, lock, **params))
        return rows[0] if rows else None

    def query(self, text: str, **params: Any) -> list:
        """A read written where it is used (statements, the audit): ``:name`` parameters,
        literals never holding a ``:``."""
        self.cur.execute(sql.psycopg_text(text) if self.pg else text, params)
        return self._rows(self.cur) if self.cur.description else []

    def many(self, name: str, params: Sequence[dict], locked: bool = False) -> int:
        """Runs ``sql.BATCH[name]`` once per parameter set (psycopg pipelines them: one
        round trip), in the order given; or on PostgreSQL ``sql.PG_ARRAYS[name]`` once with
        every parameter an array: always for an INSERT, for an UPDATE only when the caller
        holds the rows' locks already (``locked``: the statement reaches them in its plan's
        order) and their keys are distinct (it changes a row once). Returns the rows they
        changed in all."""
        if not params:
            return 0
        key = sql.PG_ARRAY_KEYS.get(name)
        if self.pg and name in _PSYCOPG_ARRAYS and (key is None or (locked and _distinct(params, key))):
            self.cur.execute(_PSYCOPG_ARRAYS[name], {k: [p[k] for p in params] for k in params[0]})
        else:
            self.cur.executemany(self.batch_sql[name], params)
        return self.cur.rowcount

    def by_key_only(self) -> None:
        """PostgreSQL, for the rest of this transaction: find rows by index, never by
        scanning a table. The planner costs each of a batch's 256 primary-key probes as a
        random disk read (``random_page_cost`` 4) and so scans a reservations table of up to
        tens of thousands of rows whole, comparing every row with the 256 keys (several
        times slower than the probes, and worse as the table grows). A batch finds every
        row it touches by key; ``SET LOCAL`` ends with the transaction."""
        if self.pg:
            self.cur.execute("SET LOCAL enable_seqscan = off")

    # -- accounts ------------------------------------------------------------------------

    def state(self, account: str, lock: bool = False) -> tuple[int, str]:
        """(available, closed_to) of an account."""
        row = self._run("available", lock, id=account).fetchone()
        if row is None or row[0] is None:
            raise NotFound(f"account {account!r} not found")
        return int(row[0]), row[1]

    def available(self, account: str, lock: bool = False) -> int:
        return self.state(account, lock)[0]

    def exists(self, account: str) -> bool:
        return self._run("exists", id=account).fetchone() is not None

    def lock_accounts(self, ids: Iterable[str]) -> list:
        """Row-locks accounts in id order (PostgreSQL; SQLite holds its write lock
        already); returns their ``(id, closed_to)`` on both."""
        return self._locked("accounts", ids, "SELECT id, closed_to FROM accounts WHERE id IN ({}) ORDER BY id")

    def ensure_account(self, account: AccountId) -> None:
        self._run("ensure_account", **sql.new_account(account, now_ms()))

    def hold(self, account: str, amount: int) -> bool:
        """False: not enough available, or the account is closed (nothing was held)."""
        return self._stmt(sql.hold(account, amount)).rowcount == 1

    def debit(self, account: str, amount: int) -> bool:
        """Adds to an account's posted debits unless that would overdraw it (or, for an
        unguarded account, pass int64)."""
        return self._stmt(sql.debit(account, amount)).rowcount == 1

    def credit(self, account: str, amount: int) -> bool:
        """False if there is no such account or its credits would pass int64 (nothing was credited)."""
        return self._stmt(sql.credit(account, amount)).rowcount == 1

    def release(self, account: str, held: int, posted: int) -> str:
        """Frees a hold, posting part of it; returns the account's ``closed_to`` ("" if open)."""
        rows = self._stmt(sql.release(account, held, posted)).fetchall()
        return rows[0][0] if rows else ""

    def close(self, account: str, closed_to: str) -> None:
        self._run("close", id=account, closed_to=closed_to)

    # -- transfers -----------------------------------------------------------------------

    def transfer(self, idempotency_id: str) -> Any:
        return self._one("transfer", iid=idempotency_id)

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
        params = sql.new_transfer(idempotency_id, kind, debit, credit, amount, request_id, memo, outcome, now_ms())
        return int(self._run("insert_transfer", **params).fetchall()[0][0])

    # -- reservations --------------------------------------------------------------------

    def reservation(self, request_id: str, lock: bool = False) -> Any:
        return self._one("reservation", lock, rid=request_id)

    def reservations(self, request_ids: Iterable[str], lock: bool = False) -> list:
        """Reservation rows of these request ids, locked in request-id order on PostgreSQL."""
        text = "SELECT * FROM reservations WHERE request_id IN ({})"
        if lock:
            return self._locked("reservations", request_ids, text)
        names, params = sql.in_list("r", set(request_ids))
        return self.query(text.format(names), **params) if params else []

    def _locked(self, table: str, ids: Iterable[str], sqlite_text: str) -> list:
        """``sql.PG_LOCK[table]`` on PostgreSQL (one array parameter); on SQLite (its write
        lock held already) ``sqlite_text`` with an ``IN`` list."""
        keys = sorted(set(ids))
        if not keys:
            return []
        if self.pg:
            self.cur.execute(_PSYCOPG_LOCK[table], {"ids": keys})
            return self._rows(self.cur)
        names, params = sql.in_list("k", keys)
        return self.query(sqlite_text.format(names), **params)

    def insert_reservation(self, **values: Any) -> None:
        values.setdefault("kind", "request")
        self._run("insert_reservation", **values)

    def mark_settled(self, request_id: str, **values: Any) -> None:
        self._run("settled", rid=request_id, **values)

    def set_status(self, request_id: str, status: str) -> None:
        self._run("status", rid=request_id, status=status)

    def due(self, now: int, limit: int) -> list[str]:
        return [r[0] for r in self._run("due", now=now, limit=limit).fetchall()]

    def window(self, key: str, since_ms: int) -> list[tuple[int, int, int]]:
        """The key's window entries ending after ``since_ms``: (end_ms, requests, settled
        tokens), oldest end first (``ratelimits``)."""
        rows = self._run("window", key=key, since=since_ms).fetchall()
        return [(int(t), int(n), int(tokens)) for t, n, tokens in rows]

    def insert_slots(self, grant_id: str, key: str, lease_id: str, requests: int, end_ms: int, now: int) -> None:
        self._run("insert_slots", gid=grant_id, key=key, lease_id=lease_id, requests=requests, end_ms=end_ms, now=now)

    def slots(self, grant_id: str) -> tuple[int, int]:
        """(requests, end_ms) of a slot grant; (0, 0) when it granted none."""
        row = self._run("slots", gid=grant_id).fetchone()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    def return_slots(self, lease_id: str, count: int, now: int) -> int:
        """Takes up to ``count`` unused slots back from the lease's open grants; returns how many."""
        back = 0
        for grant_id, requests in self._run("open_slots", lease_id=lease_id, now=now).fetchall():
            n = min(int(requests), count - back)
            if n <= 0:
                break
            back += n * self.run_named("return_slots", gid=grant_id, n=n)
        return back
