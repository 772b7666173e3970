"""After the reply: settle the real usage in the ledger, then publish the usage event.

Both run off the client's critical path as background tasks. Settlement is retried
with backoff until acknowledged (the ledger dedups by request id). The event gets one
short publish attempt when NATS is connected; if NATS is down or the publish fails, it
goes to the durable local outbox (``outbox.py``), whose relay sends it, deduplicated by
``Nats-Msg-Id`` = request id, once NATS is back, in this run or the next. On shutdown
pending work is awaited (bounded), and events not yet acknowledged are written to the
outbox. What a process killed outright still holds in memory is lost: an unsettled
request is bounded by the reservation's expiry, a settled one only misses its event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from prometheus_client import Counter, Gauge

from cg_proxy.bus import Bus
from cg_proxy.metering import RETRYABLE, Meter, Usage
from cg_proxy.outbox import Outbox
from cglib import natsx
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2

log = logging.getLogger(__name__)

SETTLED = Counter("cg_proxy_settlements_total", "Settlements by outcome", ["outcome"])
PUBLISHED = Counter("cg_proxy_usage_events_total", "Usage events by outcome (ok, outbox, failed)", ["outcome"])
PENDING = Gauge("cg_proxy_background_tasks", "Settlements and publications not yet acknowledged")
CHARGED = Counter("cg_proxy_charged_ucr_total", "Micro-credits charged")
# The one publish attempt on the hot path; after it, the event waits in the outbox.
PUBLISH_TIMEOUT_S = 2.0
# On shutdown, how long the settlements of streams cut off by the grace period may take.
LATE_SETTLEMENT_S = 2.0


@dataclass
class Finished:
    request_id: str
    key: keys_pb2.Key
    model: str
    usage: Usage
    status: str
    started: float
    stream: bool


async def _retry(what: str, request_id: str, call: Callable[[], Awaitable], give_up_after_s: float = 3600) -> object:
    delay, deadline = 0.1, time.monotonic() + give_up_after_s
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as e:
            if e.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            err = e.code().name
        except (TimeoutError, OSError, ConnectionError) as e:
            if time.monotonic() > deadline:
                raise
            err = type(e).__name__
        except Exception as e:  # nats errors have no common base worth naming
            if time.monotonic() > deadline:
                raise
            err = repr(e)
        log.warning(f"{what} failed, retrying", extra={"request_id": request_id, "error": err, "delay_s": delay})
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


class UsageRecorder:
    def __init__(self, meter: Meter, bus: Bus, outbox: Outbox) -> None:
        self.meter = meter
        self.bus = bus
        self.outbox = outbox
        self._tasks: set[asyncio.Task] = set()
        # events built but neither acknowledged nor in the outbox: request id -> (subject, payload)
        self._unsent: dict[str, tuple[str, bytes]] = {}
        self._relay: asyncio.Task | None = None

    def start(self) -> None:
        """Starts relaying the outbox, events left by an earlier run included."""
        self._relay = asyncio.create_task(self.outbox.relay(self._publish, lambda: self.bus.connected))

    def _spawn(self, coro: Awaitable) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        PENDING.set(len(self._tasks))

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            PENDING.set(len(self._tasks))

        task.add_done_callback(done)

    def track(self, coro: Awaitable) -> None:
        """Runs work that must finish before shutdown (e.g. a stream's reader)."""
        self._spawn(coro)

    def record(self, finished: Finished) -> None:
        self._spawn(self._record(finished))

    def void(self, request_id: str, reason: str) -> None:
        self._spawn(self._void(request_id, reason))

    async def _void(self, request_id: str, reason: str) -> None:
        try:
            await _retry("void", request_id, lambda: self.meter.void(request_id, reason))
        except Exception:
            log.exception("void failed for good; the reservation will expire", extra={"request_id": request_id})

    async def _record(self, f: Finished) -> None:
        try:
            settled = await _retry("settle", f.request_id, lambda: self.meter.settle(f.request_id, f.usage))
            SETTLED.labels("ok").inc()
            CHARGED.inc(settled.charged_ucr)
        except Exception:
            SETTLED.labels("failed").inc()
            log.exception("settlement failed for good", extra={"request_id": f.request_id})
            return
        event = events_pb2.UsageEvent(
            request_id=f.request_id,
            key_id=f.key.id,
            partner_id=f.key.partner_id,
            model=f.model,
            input_tokens=f.usage.input_tokens,
            output_tokens=f.usage.output_tokens,
            charged_ucr=settled.charged_ucr,
            status=f.status,
            usage_source=f.usage.source_name,
            latency_ms=int((time.perf_counter() - f.started) * 1000),
            time_unix_ms=int(time.time() * 1000),
            stream=f.stream,
            price_book_version=settled.price_book_version,
        )
        await self._deliver(f.request_id, natsx.usage_subject(f.key.partner_id, f.key.id), event.SerializeToString())

    async def _deliver(self, request_id: str, subject: str, payload: bytes) -> None:
        """Publishes if NATS is connected, else (or on failure) stores in the outbox."""
        self._unsent[request_id] = (subject, payload)
        if self.bus.connected:
            try:
                await self._publish(subject, payload, request_id)
                del self._unsent[request_id]
                PUBLISHED.labels("ok").inc()
                return
            except Exception as e:  # nats errors have no common base worth naming
                log.warning(
                    "usage event not published, to the outbox", extra={"request_id": request_id, "error": repr(e)}
                )
        await self._store(request_id, subject, payload)
        del self._unsent[request_id]

    async def _store(self, request_id: str, subject: str, payload: bytes) -> None:
        try:
            await self.outbox.put(request_id, subject, payload)
            PUBLISHED.labels("outbox").inc()
        except Exception:  # e.g. a full disk: nothing left to try
            PUBLISHED.labels("failed").inc()
            log.exception("usage event lost: the outbox refused it", extra={"request_id": request_id})

    async def _publish(self, subject: str, payload: bytes, request_id: str) -> None:
        nc = self.bus.nc
        if nc is None:
            raise ConnectionError("nats not connected")
        await nc.jetstream().publish(subject, payload, timeout=PUBLISH_TIMEOUT_S, headers={"Nats-Msg-Id": request_id})

    async def drain(self, timeout_s: float) -> None:
        """Waits (bounded) for pending settlements and events, stops what is left, and
        writes the events not yet acknowledged to the outbox."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # looped: a stream that finishes meanwhile spawns its settlement
        while (pending := {t for t in self._tasks if not t.done()}) and (left := deadline - loop.time()) > 0:
            await asyncio.wait(pending, timeout=left)
        leftovers = [t for t in (self._relay, *self._tasks) if t is not None and not t.done()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        # a stream cut off just now records its usage in a new task: give it a moment
        late = {t for t in self._tasks if not t.done()}
        if late:
            await asyncio.wait(late, timeout=LATE_SETTLEMENT_S)
        for request_id, (subject, payload) in list(self._unsent.items()):
            await self._store(request_id, subject, payload)
        if self._unsent:
            log.info("unsent usage events written to the outbox", extra={"count": len(self._unsent)})
        self._unsent.clear()
