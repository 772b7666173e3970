"""A durable local outbox for usage events the proxy could not publish.

The guarantee: an event in the outbox reaches JetStream at least once, sent by this
process or by the next one started with the same file (the relay runs from start-up).
Entries go out oldest first with ``Nats-Msg-Id`` = the request id, so JetStream drops
a re-send within the stream's duplicate window (and consumers dedup by request id
beyond it); an entry is deleted only after JetStream acknowledged it.

An event is written here only when a publish fails or on a graceful stop; one still in
memory when the process dies outright (SIGKILL, OOM) is not lost either: its request is
still open in the journal (``cg_proxy.journal``), which settles (idempotently) and
publishes it again at the next start. Commits use WAL with ``synchronous=NORMAL``: they
survive a process crash, not a power cut.

One file per process (``cg_proxy.slots`` names each worker's): two proxies sharing a
file would both relay it (harmless, wasteful).
Writes are tiny but a WAL checkpoint can stall for milliseconds, so they run in
a worker thread; the healthy hot path never touches the file.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Gauge

from cglib.retry import retrying

log = logging.getLogger(__name__)

DEPTH = Gauge("cg_proxy_outbox_events", "Usage events waiting in the local outbox")

# subject, payload, message id (the request id)
Publish = Callable[[str, bytes, str], Awaitable[None]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    request_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
)"""


@dataclass(frozen=True)
class Entry:
    request_id: str
    subject: str
    payload: bytes
    created_unix_ms: int
    attempts: int


class Outbox:
    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self.depth: int = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        DEPTH.set(self.depth)
        self._wake = asyncio.Event()  # set while the relay may have work
        if self.depth:
            self._wake.set()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[list[Any], int]:
        """Runs one statement (its own transaction): the rows and the count of rows changed."""
        with self._lock:
            cur = self._db.execute(sql, args)
            return cur.fetchall(), cur.rowcount

    def _count(self, change: int) -> None:
        self.depth += change
        DEPTH.set(self.depth)

    async def put(self, request_id: str, subject: str, payload: bytes) -> None:
        """Stores an event durably; a second put of the same request id is a no-op."""
        _, changed = await asyncio.to_thread(
            self._exec,
            "INSERT OR IGNORE INTO outbox VALUES (?, ?, ?, ?, 0)",
            (request_id, subject, payload, int(time.time() * 1000)),
        )
        if changed == 1:
            self._count(+1)
        self._wake.set()

    async def oldest(self, limit: int = 100) -> list[Entry]:
        rows, _ = await asyncio.to_thread(
            self._exec,
            "SELECT request_id, subject, payload, created_unix_ms, "
            "attempts FROM outbox ORDER BY created_unix_ms, rowid LIMIT ?",
            (limit,),
        )
        return [Entry(r[0], r[1], bytes(r[2]), r[3], r[4]) for r in rows]

    async def delete(self, request_id: str) -> None:
        _, changed = await asyncio.to_thread(self._exec, "DELETE FROM outbox WHERE request_id = ?", (request_id,))
        if changed == 1:
            self._count(-1)

    async def relay(
        self, publish: Publish, connected: Callable[[], bool], poll_s: float = 0.5, max_backoff_s: float = 5.0
    ) -> None:
        """Publishes entries oldest first whenever ``connected()``, deleting each after its
        ack; a failed publish is retried (``cglib.retry``, from ``poll_s`` doubling up to
        ``max_backoff_s``) while connected, its attempts counted in the file. Runs until cancelled."""
        while True:
            await self._wake.wait()
            if not connected():
                await asyncio.sleep(poll_s)
                continue
            self._wake.clear()  # before reading: a put from now on sets it again
            try:
                entries = await self.oldest()
            except Exception:  # e.g. a locked or failing disk: try again later, never stop
                log.exception("outbox read failed, retrying")
                self._wake.set()
                await asyncio.sleep(max_backoff_s)
                continue
            for e in entries:
                try:
                    await retrying(
                        functools.partial(self._send, publish, e),
                        what="outbox publish",
                        retry_on=lambda _: connected(),  # disconnected: wait for NATS above
                        first_delay_s=poll_s,
                        max_delay_s=max_backoff_s,
                        extra={"request_id": e.request_id},
                    )
                except Exception:
                    break
                try:
                    await self.delete(e.request_id)
                except Exception:  # sent but still stored: it goes again (JetStream drops the duplicate)
                    log.exception("outbox delete failed", extra={"request_id": e.request_id})
                    await asyncio.sleep(poll_s)
                    break
            if entries:
                self._wake.set()  # there may be more; the next read tells
                if not self.depth:
                    log.info("outbox emptied")

    async def _send(self, publish: Publish, e: Entry) -> None:
        """One attempt at publishing ``e``; a failure is counted on its row."""
        try:
            await publish(e.subject, e.payload, e.request_id)
        except Exception:
            await asyncio.to_thread(
                self._exec, "UPDATE outbox SET attempts = attempts + 1 WHERE request_id = ?", (e.request_id,)
            )
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()
