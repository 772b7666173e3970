"""After the reply: settle the real usage in the ledger, then publish the usage event.

Both run off the client's critical path as background tasks. Settlement (and a void)
is retried with backoff (``cglib.retry``) until acknowledged, the ledger deduplicating
by request id; after ``GIVE_UP_AFTER_S`` it is given up and logged as an error, never
silently. The event (``usage_event``: the outcome, the token source and the customer
billed, in the proto's enums) gets one short publish attempt when NATS is connected (with the
key's other events of the same 100 ms or JetStream round trip, in one message:
``event_batches``); if NATS is down or the publish fails, it goes to the durable local outbox (``outbox.py``),
whose relay sends it, deduplicated by ``Nats-Msg-Id`` = request id, once NATS is back,
in this run or the next. On shutdown pending work is awaited (bounded), and events not
yet acknowledged are written to the outbox.

Nothing answered is lost with the process: ``record`` appends the request's usage to the
journal (``journal.Journal``) before it returns, so before the client's last byte, and
marks it done once it is settled and its event published or in the outbox. ``start``
settles and publishes again whatever a previous run (or a worker that no longer exists,
``slots.adopt``) left in the journal without its ``done``: killed outright, or stopped
while the ledger was unreachable.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import grpc
from prometheus_client import Counter, Gauge

from cg_proxy.collaborators import EventBus, Finished, Ledger
from cg_proxy.event_batches import EventBatcher
from cg_proxy.journal import Journal, requested_at_ms, stamped
from cg_proxy.outbox import Outbox
from cglib import faults, natsx
from cglib.grpc_client import TRANSIENT
from cglib.retry import retrying
from creditgate.events.v1 import events_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")

SETTLED = Counter("cg_proxy_settlements_total", "Settlements by outcome", ["outcome"])
PUBLISHED = Counter("cg_proxy_usage_events_total", "Usage events by outcome (ok, outbox, failed)", ["outcome"])
PENDING = Gauge(
    "cg_proxy_background_tasks", "Settlements and publications not yet acknowledged", multiprocess_mode="livesum"
)
CHARGED = Counter("cg_proxy_charged_ucr_total", "Micro-credits charged")
JOURNAL_FAILED = Counter("cg_proxy_journal_failures_total", "Answered requests whose usage could not be journaled")
# The most a shutdown spends relaying the outbox (after the drain), NATS permitting.
OUTBOX_FLUSH_S = 2.0
# The one publish attempt on the hot path; after it, the event waits in the outbox.
PUBLISH_TIMEOUT_S = 2.0
# On shutdown, how long the settlements of streams cut off by the grace period may take.
LATE_SETTLEMENT_S = 2.0
# A settlement (or void) is retried this long, then given up and logged as an error (the
# ledger still posts a settlement that comes after its hold expired; a void is moot by then).
GIVE_UP_AFTER_S = 3600.0
# Settle and void are idempotent by request id and must not be lost, so beyond the
# transient codes INTERNAL and UNKNOWN are retried too: the ledger answers them for a
# failure of its own (a database error, a crash mid-call) and ``SettleBatcher`` for a
# reply it cannot match up, none of them a decision about the request.
RETRIED_CODES = TRANSIENT | {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# The first pause after a failed call, doubling up to the longest.
RETRY_FIRST_DELAY_S = 0.1
RETRY_MAX_DELAY_S = 5.0


def worth_retrying(error: BaseException) -> bool:
    """A ledger call's failure that the same call (same request id) may get past."""
    if isinstance(error, grpc.aio.AioRpcError):
        return error.code() in RETRIED_CODES
    return True  # no answer from the ledger at all (a closed channel, a timeout): try again


async def _until_acknowledged(what: str, request_id: str, call: Callable[[], Awaitable[T]]) -> T:
    return await retrying(
        call,
        what=what,
        retry_on=worth_retrying,
        give_up_after_s=GIVE_UP_AFTER_S,
        first_delay_s=RETRY_FIRST_DELAY_S,
        max_delay_s=RETRY_MAX_DELAY_S,
        extra={"request_id": request_id},
    )


def usage_event(
    f: Finished, charged_ucr: int, price_book_version: str, customer_charged_uai: int = 0
) -> events_pb2.UsageEvent:
    """The event of a settled request. A request billed to a customer also carries the AI
    credits the ledger charged it and the price per AI credit it was billed at (the key's
    terms, which ``AuthenticateKey`` gave with the very billing the hold was made with),
    so a read model values each request at its own rate."""
    billed = bool(f.customer_id)
    return events_pb2.UsageEvent(
        request_id=f.request_id,
        key_id=f.key.id,
        partner_id=f.key.partner_id,
        customer_id=f.customer_id,
        model=f.model,
        input_tokens=f.usage.input_tokens,
        output_tokens=f.usage.output_tokens,
        charged_ucr=charged_ucr,
        outcome=f.outcome,
        source=f.usage.source,
        latency_ms=f.latency_ms if f.latency_ms is not None else int((time.perf_counter() - f.started) * 1000),
        time_unix_ms=f.time_unix_ms if f.time_unix_ms is not None else int(time.time() * 1000),
        stream=f.stream,
        price_book_version=price_book_version,
        customer_charged_uai=customer_charged_uai if billed else 0,
        price_per_ai_credit_cents=f.key.billing.price_per_ai_credit_cents if billed else "",
    )


class UsageRecorder:
    def __init__(self, ledger: Ledger, bus: EventBus, outbox: Outbox, journal: Journal | None = None) -> None:
        self.ledger = ledger
        self.bus = bus
        self.outbox = outbox
        self.journal = journal
        # the live path's publications: many requests of a key in one message under load
        self.batcher = EventBatcher(bus, PUBLISH_TIMEOUT_S)
        self._tasks: set[asyncio.Task[None]] = set()
        # events built but neither acknowledged nor in the outbox: request id -> (subject, payload)
        self._unsent: dict[str, tuple[str, bytes]] = {}
        self._relay: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts relaying the outbox, events left by an earlier run included, and settles
        what the journal holds unsettled (an earlier run's answered requests)."""
        self._relay = asyncio.create_task(self.outbox.relay(self._publish, lambda: self.bus.connected))
        if self.journal is not None:
            unsettled = self.journal.unsettled()
            if unsettled:
                log.info("settling the journal's unsettled requests", extra={"count": len(unsettled)})
            replays = [asyncio.ensure_future(self._record(f)) for f in unsettled]
            leases = sorted({f.lease[0] for f in unsettled if f.lease})
            self._spawn(self._after_replay(replays, leases))

    async def _after_replay(self, replays: Sequence[Awaitable[None]], leases: list[str]) -> None:
        """Once the journal's requests are settled, the leases they were taken from (an
        earlier run's: no live worker holds them) are released: their unused part goes back
        now rather than at their expiry."""
        await asyncio.gather(*replays, return_exceptions=True)
        for lease_id in leases:
            try:
                await _until_acknowledged(
                    "release lease", lease_id, functools.partial(self.ledger.release_lease, lease_id)
                )
            except Exception:
                log.exception("a replayed lease not released; it will expire", extra={"lease_id": lease_id})

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        PENDING.set(len(self._tasks))

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            PENDING.set(len(self._tasks))

        task.add_done_callback(done)

    def track(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs work that must finish before shutdown (e.g. a stream's reader)."""
        self._spawn(work)

    def record(self, finished: Finished) -> None:
        """Journals the usage (synchronously: the caller sends its last byte after this) and
        settles and publishes it in the background."""
        finished = stamped(finished)
        if finished.lease is None:
            lease = self.ledger.lease_of(finished.request_id)
            if lease is not None:  # the journal keeps the lease, to settle from it after a restart
                finished = replace(finished, lease=lease)
        if self.journal is not None:
            try:
                self.journal.answered(finished)
            except OSError:  # e.g. a full disk: still settled, but not safe from a kill
                JOURNAL_FAILED.inc()
                log.exception("usage not journaled", extra={"request_id": finished.request_id})
        self._spawn(self._record(finished))

    def _done(self, request_id: str) -> None:
        if self.journal is not None:
            try:
                self.journal.done(request_id)
            except OSError:  # the entry is settled again at the next start: harmless
                log.exception("journal done line not written", extra={"request_id": request_id})

    def void(self, request_id: str, reason: str) -> None:
        self._spawn(self._void(request_id, reason))

    async def _void(self, request_id: str, reason: str) -> None:
        try:
            await _until_acknowledged("void", request_id, lambda: self.ledger.void(request_id, reason))
        except Exception:
            log.exception("void failed for good; the reservation will expire", extra={"request_id": request_id})

    async def _record(self, f: Finished) -> None:
        await faults.hold_point("settle:before_send")
        try:
            settled = await _until_acknowledged(
                "settle", f.request_id, lambda: self.ledger.settle(f.request_id, f.usage, f.lease, requested_at_ms(f))
            )
            SETTLED.labels("ok").inc()
            CHARGED.inc(settled.charged_ucr)
        except Exception as e:
            SETTLED.labels("failed").inc()
            log.exception("settlement failed for good", extra={"request_id": f.request_id})
            if not worth_retrying(e):  # the ledger's refusal: settling it again cannot change it
                self._done(f.request_id)
            return  # else (the ledger unreachable for GIVE_UP_AFTER_S) the next start tries again
        event = usage_event(f, settled.charged_ucr, settled.price_book_version, settled.customer_charged_uai)
        subject = natsx.usage_subject(f.key.partner_id, f.key.id)
        if await self._deliver(f.request_id, subject, event.SerializeToString()):
            self._done(f.request_id)

    async def _deliver(self, request_id: str, subject: str, payload: bytes) -> bool:
        """Publishes if NATS is connected, else (or on failure) stores in the outbox;
        whether the event is acknowledged or stored."""
        self._unsent[request_id] = (subject, payload)
        if self.bus.connected:
            try:
                await self.batcher.publish(subject, payload, request_id)
                del self._unsent[request_id]
                PUBLISHED.labels("ok").inc()
                return True
            except Exception as e:  # nats errors have no common base worth naming
                log.warning(
                    "usage event not published, to the outbox", extra={"request_id": request_id, "error": repr(e)}
                )
        stored = await self._store(request_id, subject, payload)
        del self._unsent[request_id]
        return stored

    async def _store(self, request_id: str, subject: str, payload: bytes) -> bool:
        try:
            await self.outbox.put(request_id, subject, payload)
            PUBLISHED.labels("outbox").inc()
            return True
        except Exception:  # e.g. a full disk: the journal keeps the request for the next start
            PUBLISHED.labels("failed").inc()
            log.exception("usage event not stored: the outbox refused it", extra={"request_id": request_id})
            return False

    async def _publish(self, subject: str, payload: bytes, request_id: str) -> None:
        await self.bus.publish(subject, payload, request_id, PUBLISH_TIMEOUT_S)

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
            if await self._store(request_id, subject, payload):
                self._done(request_id)
        if self._unsent:
            log.info("unsent usage events written to the outbox", extra={"count": len(self._unsent)})
        self._unsent.clear()
        await self._flush_outbox()

    async def _flush_outbox(self) -> None:
        """A last, bounded pass over the outbox while NATS is still connected: a proxy
        stopped for good (scaled down) leaves as little as it can in its file."""
        if not self.outbox.depth or not self.bus.connected:
            return
        try:
            sent = await self.outbox.flush(self._publish, OUTBOX_FLUSH_S)
        except Exception:
            log.exception("outbox flush on shutdown failed; the events stay in the file")
            return
        log.info("outbox flushed on shutdown", extra={"sent": sent, "left": self.outbox.depth})
