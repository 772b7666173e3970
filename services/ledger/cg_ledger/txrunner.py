"""Where the reservation hot path's transactions run: off the event loop, in threads.

``Reservations`` hands a synchronous function of a ``HotSQL`` to ``run`` and awaits
its result, which is only delivered once the transaction holding it has committed.

- SQLite: one writer thread owns one connection and commits in groups. Operations
  queued while it works run in ONE transaction, each inside its own savepoint (an
  operation that fails rolls back alone), so one fsync covers the whole group: under
  load the commit cost is shared, at concurrency 1 nothing waits for company. Every
  caller still gets its answer only after the group's COMMIT, so durability is as
  with ``synchronous=FULL`` per transaction.
- PostgreSQL: a pool of threads, one transaction per operation (the server groups
  concurrent commits itself).

Either way a database error that means "out of range" (an overflow, a CHECK constraint:
``dberrors``) reaches the caller as ``OutOfRange``, after its transaction rolled back.
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
from typing import Any, TypeVar

from cg_ledger.dberrors import out_of_range
from cg_ledger.hotsql import HotSQL
from cglib.db import SQLITE_PRAGMAS, make_sync_engine, sync_url

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[..., Any]
# The most operations one group commit takes from the queue.
GROUP_MAX = 128


def _translated(e: Exception) -> Exception:
    err = out_of_range(e)
    if err is None:
        return e
    err.__cause__ = e
    return err


def _deliver(fut: asyncio.Future, ok: bool, value: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class SQLiteGroupWriter:
    def __init__(self, path: str, synchronous: str = "FULL") -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        for pragma in (*SQLITE_PRAGMAS, f"synchronous={synchronous}"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.db = HotSQL(self.conn, postgres=False)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="ledger-writer", daemon=True)
        self._thread.start()

    async def run(self, fn: Op, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((loop, fut, fn, args))
        return await fut

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
                    outcomes.append((False, _translated(e)))
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
        self.conn.close()


class PostgresThreads:
    def __init__(self, dsn: str, threads: int = 8) -> None:
        self.engine = make_sync_engine(dsn, pool_size=threads)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ledger-tx")

    def _transaction(self, fn: Op, args: tuple) -> Any:
        with self.engine.begin() as conn:
            db = HotSQL(conn.connection.dbapi_connection, postgres=True)
            try:
                return fn(db, *args)
            finally:
                db.cur.close()

    async def run(self, fn: Op, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._transaction, fn, args)
        except Exception as e:
            err = _translated(e)
            if err is e:
                raise
            raise err from e

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.engine.dispose()


def runner_for(dsn: str, sqlite_synchronous: str = "FULL") -> SQLiteGroupWriter | PostgresThreads:
    url = sync_url(dsn)
    if url.startswith("sqlite"):
        return SQLiteGroupWriter(url.split(":///", 1)[1], sqlite_synchronous)
    return PostgresThreads(dsn)
