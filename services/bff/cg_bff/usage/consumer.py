"""The usage read model's JetStream consumer: the USAGE stream into ``ingest.store``.

- **Durable and shared.** One durable pull consumer, ``bff-usage`` (its own: the worker's
  ``worker-usage`` sees every event too), declared idempotently at every start by every
  replica; the replicas pull from it, so JetStream splits the work between them. Its
  first start reads the stream from the beginning (what the stream still holds).
- **Batches.** A fetch waits up to a second for a first event, then lingers a moment
  for the rest of a burst (``natsx.fetch_batch``): a burst from the proxy is one
  transaction, not one per request.
- **Exactly once in effect.** ``ingest.store`` commits the batch, then every message is
  acknowledged. A redelivery (an ack lost, a replica killed between commit and ack,
  ``ack_wait`` passed) finds its request id stored and changes nothing.
- **Failures.** An event that can never be stored (it does not decode, it is invalid:
  ``ingest.Invalid``) is terminated and logged. A database that is busy or down
  (``transient``) gets the batch back with a delay (nak), and the consumer waits,
  doubling the pause up to ``MAX_PAUSE_S``; any other failure of a batch is retried
  event by event, so one bad event cannot hold back the others. NATS down: fetches fail
  and are retried every half second while the client reconnects; what was not
  acknowledged is redelivered.
- **Retention.** An event older than the retention period is acknowledged without being
  stored: its row would be deleted at once, and a second delivery must not re-create
  aggregates that retention removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from prometheus_client import Counter, Gauge
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from cg_bff.usage import ingest
from cglib import natsx, usage_batch
from cglib.consumerlag import watch_lag
from cglib.faults import crash_point
from cglib.retry import Stopped, retrying

log = logging.getLogger(__name__)

DURABLE = "bff-usage"
EVENTS = Counter("cg_bff_usage_events_total", "Usage events by outcome", ["outcome"])
LAG = Gauge("cg_bff_consumer_pending", "Messages not yet delivered to the bff's consumer", ["stream"])
FIRST_PAUSE_S = 0.2
MAX_PAUSE_S = 5.0
DAY_MS = 86_400_000
# PostgreSQL SQLSTATE classes worth retrying: connection (08), transaction rollback
# (40: serialization failure, deadlock), insufficient resources (53), object not
# available (55: lock not available), operator intervention (57: a cancelled statement).
_TRANSIENT_SQLSTATE = ("08", "40", "53", "55", "57")


def transient(error: BaseException) -> bool:
    """A database failure that the same batch may get past later."""
    if isinstance(error, OperationalError | InterfaceError | TimeoutError | OSError):
        return True  # SQLite busy or locked, a lost connection, a pool timeout
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = str(getattr(error.orig, "sqlstate", "") or getattr(error.orig, "pgcode", "") or "")
        return sqlstate.startswith(_TRANSIENT_SQLSTATE)
    return False


class UsageConsumer:
    def __init__(
        self,
        nc: Client,
        engine: AsyncEngine,
        *,
        retention_days: int = 0,
        durable: str = DURABLE,
        batch: int = 256,
        ack_wait_s: float = 30.0,
        linger_s: float = 0.02,
        after_commit: Callable[[list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.nc = nc
        self.engine = engine
        self.retention_days = retention_days
        self.durable = durable
        self.batch = batch
        self.ack_wait_s = ack_wait_s
        self.linger_s = linger_s
        # Called after a batch's commit, before its acks (tests crash the consumer here).
        self.after_commit = after_commit
        self._pause_s = FIRST_PAUSE_S

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        js = self.nc.jetstream()
        await natsx.ensure_usage_stream(js)  # whoever starts first declares it
        await js.add_consumer(
            natsx.USAGE_STREAM,
            ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait_s,
                max_deliver=-1,
            ),
        )
        return await js.pull_subscribe_bind(self.durable, stream=natsx.USAGE_STREAM)

    async def run(self, stop: asyncio.Event) -> None:
        """Consumes until ``stop``; each batch is finished (stored and acknowledged, or
        handed back) before ``stop`` is looked at."""
        try:
            sub = await retrying(self._subscribe, what="usage consumer declaration", stop=stop, first_delay_s=0.2)
        except Stopped:
            return
        log.info("consuming usage events", extra={"durable": self.durable})
        lag = asyncio.create_task(watch_lag(self.nc.jetstream(), natsx.USAGE_STREAM, self.durable, LAG, stop))
        try:
            while not stop.is_set():
                try:
                    await self.round(sub)
                except Exception:  # never end: the next round may succeed
                    log.exception("usage consumer round failed; continuing")
                    await self._pause(stop)
        finally:
            lag.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _pause(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self._pause_s)
        self._pause_s = min(self._pause_s * 2, MAX_PAUSE_S)

    def _cutoff_ms(self, now_ms: int) -> int:
        return now_ms - self.retention_days * DAY_MS if self.retention_days > 0 else 0

    async def round(self, sub: JetStreamContext.PullSubscription) -> int:
        """Fetch one batch, store it, acknowledge it. Returns how many rows were new."""
        try:
            msgs = await natsx.fetch_batch(sub, self.batch, timeout=1, linger_s=self.linger_s)
        except nats.errors.TimeoutError:
            return 0
        except nats.errors.Error as e:  # NATS down or reconnecting
            log.warning("usage fetch failed", extra={"error": repr(e)})
            await asyncio.sleep(0.5)
            return 0
        now_ms = int(time.time() * 1000)
        cutoff_ms = self._cutoff_ms(now_ms)
        good: list[tuple[Msg, list[ingest.Row]]] = []
        for msg in msgs:
            rows = await self._rows(msg, now_ms)
            if rows is None:
                continue
            kept = [row for row in rows if row["time_ms"] >= cutoff_ms]
            if len(kept) < len(rows):
                EVENTS.labels("expired").inc(len(rows) - len(kept))
            if not kept:
                await msg.ack()
                continue
            good.append((msg, kept))
        if not good:
            return 0
        rows = [row for _, kept in good for row in kept]
        try:
            new = await ingest.store(self.engine, rows, now_ms)
        except Exception as e:
            if transient(e):
                log.warning("usage store unavailable; redelivering", extra={"error": repr(e), "events": len(rows)})
                EVENTS.labels("retried").inc(len(rows))
                for msg, _ in good:
                    await msg.nak(delay=1)
                await asyncio.sleep(self._pause_s)
                self._pause_s = min(self._pause_s * 2, MAX_PAUSE_S)
                return 0
            log.warning("usage batch failed; storing its messages one by one", exc_info=True)
            return await self._one_by_one(good, now_ms)
        self._pause_s = FIRST_PAUSE_S
        crash_point("usage:after_commit")  # crash tests: committed, not acknowledged
        if self.after_commit is not None:
            await self.after_commit(new)
        for msg, _ in good:
            await msg.ack()
        EVENTS.labels("stored").inc(len(new))
        EVENTS.labels("duplicate").inc(len(rows) - len(new))
        return len(new)

    async def _rows(self, msg: Msg, now_ms: int) -> list[ingest.Row] | None:
        """The message's rows (one per event: a proxy batches a key's events under load,
        cglib.usage_batch), or None when it is terminated (nothing in it can be stored).
        An event that can never be stored is dropped alone, not with its batch."""
        try:
            events = usage_batch.events_of(msg.data, msg.headers)
        except DecodeError as e:
            log.error("usage event dropped: it can never be stored", extra={"subject": msg.subject, "error": str(e)})
            EVENTS.labels("invalid").inc()
            events = []
        rows = []
        for event in events:
            try:
                rows.append(ingest.row_of(event, msg.subject, _published_ms(msg, now_ms)))
            except ingest.Invalid as e:
                log.error(
                    "usage event dropped: it can never be stored",
                    extra={"subject": msg.subject, "request_id": event.request_id[:120], "error": str(e)},
                )
                EVENTS.labels("invalid").inc()
        if rows:
            return rows
        await msg.term()
        return None

    async def _one_by_one(self, good: list[tuple[Msg, list[ingest.Row]]], now_ms: int) -> int:
        stored = 0
        for msg, rows in good:
            try:
                stored += len(await ingest.store(self.engine, rows, now_ms))
            except Exception as e:
                if transient(e):
                    await msg.nak(delay=1)
                    continue
                log.exception(
                    "usage events dropped: the database refused them",
                    extra={"request_ids": [row["request_id"] for row in rows][:20]},
                )
                EVENTS.labels("failed").inc(len(rows))
                await msg.term()
                continue
            await msg.ack()
        return stored


def _published_ms(msg: Msg, now_ms: int) -> int:
    """When JetStream stored the message (for an event without its own time)."""
    try:
        return int(msg.metadata.timestamp.timestamp() * 1000)
    except Exception:  # not a JetStream message (a test calling round directly)
        return now_ms
