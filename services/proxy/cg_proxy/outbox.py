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

An entry JetStream refuses for good (``cg_proxy.deadletter``: too large, no stream for
its subject) is moved, in one transaction, to the ``dead_letters`` table of the same
file, with the reason, so it no longer holds back the entries behind it; an operator
reads it there (``sqlite3 FILE 'SELECT * FROM dead_letters'``) and may move it back.

One file per process (``cg_proxy.slots`` names each worker's): two proxies sharing a
file would both relay it (harmless, wasteful).
Writes are tiny but a WAL checkpoint can stall for milliseconds, so they run in
a worker thread; the healthy hot path never touches the file.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from cg_proxy import deadletter
from cglib.retry import retrying

log = logging.getLogger(__name__)

# livesum: with several worker processes (prometheus multiprocess mode) the sum of the live ones
DEPTH = Gauge("cg_proxy_outbox_events", "Usage events waiting in the local outbox", multiprocess_mode="livesum")
DEAD = Gauge(
    "cg_proxy_outbox_dead_letters", "Usage events in the outbox's dead-letter table", multiprocess_mode="livesum"
)
DEAD_LETTERED = Counter(
    "cg_proxy_outbox_dead_lettered_total", "Usage events JetStream refused for good, by error", ["error"]
)

# subject, payload, message id (the request id)
Publish = Callable[[str, bytes, str], Awaitable[None]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    request_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dead_letters (
    request_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_unix_ms INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL,
    dead_unix_ms INTEGER NOT NULL
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
        self._db.executescript(_SCHEMA)
        self.depth: int = self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        self.dead: int = self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        DEPTH.set(self.depth)
        DEAD.set(self.dead)
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

    def _move_to_dead_letters(self, e: Entry, attempts: int, reason: str) -> tuple[int, int]:
        """Rows taken from the outbox (0 or 1), and the dead letters now held."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (e.request_id, e.subject, e.payload, e.created_unix_ms, attempts, reason, int(time.time() * 1000)),
                )
                moved = self._db.execute("DELETE FROM outbox WHERE request_id = ?", (e.request_id,)).rowcount
                dead = self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return moved, dead

    async def dead_letter(self, e: Entry, attempts: int, error: BaseException) -> None:
        """Moves ``e`` out of the way, into the dead-letter table (one transaction)."""
        reason = deadletter.describe(error)
        moved, self.dead = await asyncio.to_thread(self._move_to_dead_letters, e, attempts, reason)
        if moved:
            self._count(-1)
        DEAD.set(self.dead)
        DEAD_LETTERED.labels(type(error).__name__).inc()
        log.error(
            "usage event refused for good by JetStream: moved to the outbox's dead letters",
            extra={"request_id": e.request_id, "subject": e.subject, "reason": reason, "attempts": attempts},
        )

    async def dead_letters(self) -> list[tuple[str, str, bytes, int, int, str]]:
        """(request id, subject, payload, created, attempts, reason) of each dead letter, oldest first."""
        rows, _ = await asyncio.to_thread(
            self._exec,
            "SELECT request_id, subject, payload, created_unix_ms, attempts, reason FROM dead_letters "
            "ORDER BY created_unix_ms, rowid",
        )
        return [(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]

    async def put_dead(self, row: tuple[str, str, bytes, int, int, str]) -> None:
        """Keeps a dead letter taken from another file (``cg_proxy.slots.adopt``)."""
        _, changed = await asyncio.to_thread(
            self._exec,
            "INSERT OR IGNORE INTO dead_letters VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*row, int(time.time() * 1000)),
        )
        if changed == 1:
            self.dead += 1
            DEAD.set(self.dead)

    async def _deliver(
        self, publish: Publish, e: Entry, connected: Callable[[], bool], poll_s: float, max_backoff_s: float
    ) -> bool:
        """Publishes ``e`` (retrying transient failures while connected) and deletes it, or
        moves it to the dead letters if JetStream refuses it for good. False: stop this
        round (disconnected, or the file failed)."""
        tries = e.attempts

        async def attempt() -> None:
            nonlocal tries
            tries += 1
            await self._send(publish, e)

        try:
            await retrying(
                attempt,
                what="outbox publish",
                # disconnected: wait for NATS in the relay; refused for good: set aside below
                retry_on=lambda exc: connected() and not deadletter.permanent(exc, tries),
                first_delay_s=poll_s,
                max_delay_s=max_backoff_s,
                extra={"request_id": e.request_id},
            )
        except Exception as exc:
            if not deadletter.permanent(exc, tries):
                return False
            try:
                await self.dead_letter(e, tries, exc)
            except Exception:
                log.exception("outbox dead-letter failed", extra={"request_id": e.request_id})
                await asyncio.sleep(poll_s)
                return False
            return True
        try:
            await self.delete(e.request_id)
        except Exception:  # sent but still stored: it goes again (JetStream drops the duplicate)
            log.exception("outbox delete failed", extra={"request_id": e.request_id})
            await asyncio.sleep(poll_s)
            return False
        return True

    async def flush(self, publish: Publish, timeout_s: float) -> int:
        """On shutdown: one attempt per entry, oldest first, for at most ``timeout_s``;
        stops at the first transient failure (what is left stays in the file for the
        next run). Returns how many entries left the outbox."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        done = 0
        while (left := deadline - loop.time()) > 0:
            entries = await self.oldest()
            if not entries:
                break
            for e in entries:
                left = deadline - loop.time()
                if left <= 0:
                    return done
                try:
                    await asyncio.wait_for(self._send(publish, e), timeout=left)
                except Exception as exc:
                    if not deadletter.permanent(exc, e.attempts + 1):
                        return done
                    await self.dead_letter(e, e.attempts + 1, exc)
                else:
                    await self.delete(e.request_id)
                done += 1
        return done

    async def relay(
        self, publish: Publish, connected: Callable[[], bool], poll_s: float = 0.5, max_backoff_s: float = 5.0
    ) -> None:
        """Publishes entries oldest first whenever ``connected()``, deleting each after its
        ack; a failed publish is retried (``cglib.retry``, from ``poll_s`` doubling up to
        ``max_backoff_s``) while connected, its attempts counted in the file; one refused for
        good goes to the dead letters and the next is sent. Runs until cancelled."""
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
                if not await self._deliver(publish, e, connected, poll_s, max_backoff_s):
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
