"""After the reply: settle the real usage in the ledger, then publish the usage event.

Both run off the client's critical path as background tasks, retried with backoff
until acknowledged (the ledger dedups by request id, JetStream by ``Nats-Msg-Id``),
and awaited on shutdown. What is still pending when the process is killed outright is
bounded by the reservation's expiry; a durable local outbox is future work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import grpc
from prometheus_client import Counter, Gauge

from cg_proxy.bus import Bus
from cg_proxy.metering import RETRYABLE, Meter, Usage
from cglib import natsx
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2

log = logging.getLogger(__name__)

SETTLED = Counter("cg_proxy_settlements_total", "Settlements by outcome", ["outcome"])
PUBLISHED = Counter("cg_proxy_usage_events_total", "Usage events by outcome", ["outcome"])
PENDING = Gauge("cg_proxy_background_tasks", "Settlements and publications not yet acknowledged")
CHARGED = Counter("cg_proxy_charged_ucr_total", "Micro-credits charged")


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
        except (asyncio.TimeoutError, OSError, ConnectionError) as e:
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
    def __init__(self, meter: Meter, bus: Bus) -> None:
        self.meter = meter
        self.bus = bus
        self._tasks: set[asyncio.Task] = set()

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
        try:
            await _retry("publish usage", f.request_id, lambda: self._publish(event))
            PUBLISHED.labels("ok").inc()
        except Exception:
            PUBLISHED.labels("failed").inc()
            log.exception("usage event lost", extra={"request_id": f.request_id})

    async def _publish(self, event: events_pb2.UsageEvent) -> None:
        await asyncio.wait_for(self.bus.ready.wait(), timeout=5)
        await self.bus.nc.jetstream().publish(
            natsx.usage_subject(event.partner_id, event.key_id),
            event.SerializeToString(),
            timeout=2,
            headers={"Nats-Msg-Id": event.request_id},
        )

    async def drain(self, timeout_s: float) -> None:
        """Waits (bounded) for pending settlements and events."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
