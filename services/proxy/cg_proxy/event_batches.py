"""Usage events published in batches, per subject, while JetStream acknowledges the last.

An event whose subject has no publication in flight waits ``LINGER_S`` for others of its
subject, then goes out: alone as a plain ``UsageEvent`` (``Nats-Msg-Id`` = its request id,
exactly as before batching), or with them in one message (``cglib.usage_batch``: up to
``MAX_EVENTS``). Events that come while a publication awaits its acknowledgement go in
the next one. So a busy key sends one message per round trip (or per linger) instead of
one per request, and every consumer (worker, keys, bff, JetStream itself) handles one
message instead of many; the events reach them ``LINGER_S`` later, the clients nothing.
Each caller learns its own event's fate: acknowledged, or the publication's error (the
recorder then stores it in the outbox, as for a single event).

With tracing on, every event is published alone from its request's task, so that its
trace context (``traceparent``) travels with it to the consumers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import Histogram

from cg_proxy.collaborators import EventBus
from cglib import tracing, usage_batch

log = logging.getLogger(__name__)

# How long the first event of a subject waits for others before it is published (as the
# leased settlements' linger, ``ledger_client.LEASED_SETTLE_LINGER_S``).
LINGER_S = 0.1

BATCH_SIZE = Histogram(
    "cg_proxy_usage_batch_events",
    "Usage events per published message",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


@dataclass
class _Pending:
    request_id: str
    payload: bytes
    done: asyncio.Future[None]


@dataclass
class _Subject:
    queue: deque[_Pending] = field(default_factory=deque)
    flying: bool = False


class EventBatcher:
    def __init__(
        self, bus: EventBus, timeout_s: float, max_events: int = usage_batch.MAX_EVENTS, linger_s: float = LINGER_S
    ) -> None:
        self.bus = bus
        self.timeout_s = timeout_s
        self.max_events = max_events
        self.linger_s = linger_s
        self._subjects: dict[str, _Subject] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def publish(self, subject: str, payload: bytes, request_id: str) -> None:
        """Returns once the event is acknowledged (alone or in a batch); raises what its
        publication raised."""
        if tracing.ENABLED:
            await self.bus.publish(subject, payload, request_id, self.timeout_s)
            BATCH_SIZE.observe(1)
            return
        state = self._subjects.get(subject)
        if state is None:
            state = self._subjects[subject] = _Subject()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        state.queue.append(_Pending(request_id, payload, done))
        if not state.flying:
            state.flying = True
            task = asyncio.create_task(self._send(subject, state))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await done

    async def _send(self, subject: str, state: _Subject) -> None:
        """Publishes the subject's queue, one message per round trip, until it is empty."""
        try:
            if self.linger_s > 0:
                await asyncio.sleep(self.linger_s)
            while state.queue:
                n = min(len(state.queue), self.max_events)
                items = [state.queue.popleft() for _ in range(n)]
                try:
                    await self._publish(subject, items)
                except BaseException as e:
                    for item in items:
                        if not item.done.done():
                            item.done.set_exception(e if isinstance(e, Exception) else ConnectionError(repr(e)))
                    if not isinstance(e, Exception):
                        raise  # cancelled: the queue's rest is failed below
                    continue
                BATCH_SIZE.observe(n)
                for item in items:
                    if not item.done.done():
                        item.done.set_result(None)
        finally:
            state.flying = False
            while state.queue:  # only when cancelled (shutdown): their callers store them
                item = state.queue.popleft()
                if not item.done.done():
                    item.done.set_exception(ConnectionError("publication cancelled"))
            if self._subjects.get(subject) is state:
                del self._subjects[subject]

    async def _publish(self, subject: str, items: list[_Pending]) -> None:
        if len(items) == 1:
            await self.bus.publish(subject, items[0].payload, items[0].request_id, self.timeout_s)
            return
        ids = [item.request_id for item in items]
        await self.bus.publish(
            subject,
            usage_batch.batch([item.payload for item in items]),
            usage_batch.batch_id(ids),
            self.timeout_s,
            headers={usage_batch.HEADER: str(len(items))},
        )
