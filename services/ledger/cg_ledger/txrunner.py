"""Where the ledger's transactions run: off the event loop, in threads, on the driver
itself (sqlite3 or psycopg). The ledger's one connection pool per database.

Every operation hands a synchronous function of a ``Rows`` to ``run`` (a write
transaction) or ``read`` (a read-only one) and awaits its result, which is only
delivered once the transaction holding it has committed.

- SQLite: one writer thread owns one connection and commits in groups. Operations
  queued while it works run in ONE transaction, each inside its own savepoint (an
  operation that fails rolls back alone), so one fsync covers the whole group: under
  load the commit cost is shared, at concurrency 1 nothing waits for company. Every
  caller still gets its answer only after the group's COMMIT, so durability is as
  with ``synchronous=FULL`` per transaction. Reads run on a second connection in a
  reader thread (WAL: a reader never waits for the writer, nor holds it up).
- PostgreSQL: a pool of threads, each with its own psycopg connection (opened on first
  use, opened again when broken), one transaction per operation (the server groups
  concurrent commits itself).

Whatever a transaction raises reaches the caller after it rolled back, a driver's error
translated by ``dberrors.translated`` (``OutOfRange``, ``Duplicate``), in this one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import psycopg

from cg_ledger.dberrors import translated
from cg_ledger.rows import Rows
from cglib.db import SQLITE_PRAGMAS, sync_url

log = logging.getLogger(__name__)

Op = Callable[..., Any]
# The most operations one group commit takes from the queue.
GROUP_MAX = 128


class Runner(Protocol):
    postgres: bool

    async def run(self, fn: Op, *args: Any) -> Any: ...

    async def read(self, fn: Op, *args: Any, snapshot: bool = False) -> Any: ...

    def close(self) -> None: ...


def _deliver(fut: asyncio.Future, ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


async def _in_thread(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
    except Exception as e:
        err = translated(e)
        if err is e:
            raise
        raise err from e


def _sqlite_connect(path: str, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    for pragma in (*SQLITE_PRAGMAS, f"synchronous={synchronous}"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


class SQLiteRunner:
    postgres = False

    def __init__(self, path: str, synchronous: str = "FULL") -> None:
        self.conn = _sqlite_connect(path, synchronous)
        self.db = Rows(self.conn, postgres=False)
        self._reader = Rows(_sqlite_connect(path, synchronous), postgres=False)
        self._reads = ThreadPoolExecutor(1, thread_name_prefix="ledger-reader")
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="ledger-writer", daemon=True)
        self._thread.start()

    async def run(self, fn: Op, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((loop, fut, fn, args))
        return await fut

    async def read(self, fn: Op, *args: Any, snapshot: bool = False) -> Any:
        """A deferred transaction: one consistent WAL snapshot whether or not ``snapshot``."""
        return await _in_thread(self._reads, self._read, fn, args)

    def _read(self, fn: Op, args: tuple) -> Any:
        conn = self._reader.conn
        conn.execute("BEGIN")
        try:
            return fn(self._reader, *args)
        finally:
            conn.execute("ROLLBACK")

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            while len(group) < GROUP_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(item)
            try:
                outcomes = self._commit_group(group)
            except BaseException as e:  # never let the writer die with callers waiting
                log.exception("writer group failed", extra={"operations": len(group)})
                outcomes = [(False, e if isinstance(e, Exception) else RuntimeError(repr(e)))] * len(group)
            for (loop, fut, _, _), (ok, value) in zip(group, outcomes, strict=True):
                with contextlib.suppress(RuntimeError):  # that caller's loop is closed: nobody to answer
                    loop.call_soon_threadsafe(_deliver, fut, ok, value)

    def _commit_group(self, group: list) -> list[tuple[bool, Any]]:
        execute = self.conn.execute
        outcomes: list[tuple[bool, Any]] = []
        try:
            execute("BEGIN IMMEDIATE")
            for _, _, fn, args in group:
                execute("SAVEPOINT op")
                try:
                    value = fn(self.db, *args)
                except Exception as e:
                    execute("ROLLBACK TO op")
                    execute("RELEASE op")
                    outcomes.append((False, translated(e)))
                else:
                    execute("RELEASE op")
                    outcomes.append((True, value))
            execute("COMMIT")
            return outcomes
        except Exception as e:  # BEGIN or COMMIT failed: nothing of the group was stored
            log.exception("group commit failed", extra={"operations": len(group)})
            with contextlib.suppress(sqlite3.Error):
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            return [(False, e)] * len(group)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._reads.shutdown(wait=True)
        self._reader.conn.close()
        self.conn.close()


class PostgresRunner:
    postgres = True

    def __init__(self, conninfo: str, threads: int = 8) -> None:
        self.conninfo = conninfo
        self._local = threading.local()
        self._opened: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ledger-tx")

    def _rows(self) -> tuple[Rows, bool]:
        """This thread's connection, and whether it was opened just now."""
        rows: Rows | None = getattr(self._local, "rows", None)
        if rows is None or rows.conn.closed or rows.conn.broken:
            conn = psycopg.connect(self.conninfo)
            with self._lock:
                self._opened.append(conn)
            rows = self._local.rows = Rows(conn, postgres=True)
            return rows, True
        return rows, False

    def _transaction(self, fn: Op, args: tuple, begin: str = "") -> Any:
        db, fresh = self._rows()
        try:
            return self._attempt(db, fn, args, begin)
        except psycopg.OperationalError:
            # A connection that sat idle in the pool may have died with its server (a
            # restart, a failover): nothing ran on it, or what ran rolled back with it, or
            # its commit's answer was lost. Every operation is idempotent (its ids replay
            # the stored outcome), so it runs once more on a new connection; a connection
            # opened just now that fails means the database is down: that error stands.
            if fresh or not db.conn.broken:
                raise
            log.warning("database connection lost; the operation runs again on a new one")
        db, _ = self._rows()
        return self._attempt(db, fn, args, begin)

    @staticmethod
    def _attempt(db: Rows, fn: Op, args: tuple, begin: str) -> Any:
        try:
            if begin:
                db.cur.execute(begin)
            value = fn(db, *args)
            db.conn.commit()
            return value
        except BaseException:
            if not db.conn.broken:
                with contextlib.suppress(psycopg.Error):
                    db.conn.rollback()
            raise

    async def run(self, fn: Op, *args: Any) -> Any:
        return await _in_thread(self._pool, self._transaction, fn, args)

    async def read(self, fn: Op, *args: Any, snapshot: bool = False) -> Any:
        """``snapshot``: every statement sees the same committed state (REPEATABLE READ)."""
        begin = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY" if snapshot else ""
        return await _in_thread(self._pool, self._transaction, fn, args, begin)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()


def runner_for(dsn: str, sqlite_synchronous: str = "FULL") -> SQLiteRunner | PostgresRunner:
    """The runner for a database DSN (plain, or a SQLAlchemy URL of either driver)."""
    url = sync_url(dsn)
    if url.startswith("sqlite"):
        return SQLiteRunner(url.split(":///", 1)[1], sqlite_synchronous)
    return PostgresRunner("postgresql://" + url.split("://", 1)[1])
