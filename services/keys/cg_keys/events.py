"""NATS for the keys service.

- ``KeyEvents.publish``: a ``KeyChanged`` on ``keys.<partner>.<key>`` after every
  lifecycle change (JetStream stream KEYS, so the worker can consume it durably;
  proxies subscribe to the subject and drop the key from their caches at once).
  Published in the background and retried; the proxies' short cache TTL bounds
  staleness if NATS is away.
- ``run_last_used``: a durable consumer of the usage stream that keeps each key's
  last-used time current in one UPDATE per key per batch, not a write per request.
"""

from __future__ import annotations

import asyncio
import logging
import time

import nats.errors
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from sqlalchemy import update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from cg_keys.models import VirtualKey
from cg_keys.transitions import suspension_pb
from cglib import natsx, usage_batch
from cglib.retry import retrying
from creditgate.events.v1 import events_pb2

log = logging.getLogger(__name__)

# Last used is kept to the second: a second's usage events make one UPDATE per key.
LAST_USED_LINGER_S = 1.0
# How long an event is retried before it is dropped (and logged as such): past that, the
# proxies' cache TTL has long made it moot.
PUBLISH_GIVE_UP_S = 270.0


class KeyEvents:
    def __init__(self) -> None:
        self.nc: Client | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def publish(
        self, key: VirtualKey, change: events_pb2.KeyChange.ValueType, stale_hashes: list[str] | None = None
    ) -> None:
        event = events_pb2.KeyChanged(
            key_id=key.id,
            partner_id=key.partner_id,
            change=change,
            status=key.status,
            suspension=suspension_pb(key.suspension),
            stale_key_hashes=stale_hashes or [],
            time_unix_ms=int(time.time() * 1000),
        )
        if self.nc is None:
            return
        task = asyncio.create_task(self._send(self.nc, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, nc: Client, event: events_pb2.KeyChanged) -> None:
        subject = natsx.key_subject(event.partner_id, event.key_id)

        async def send() -> None:
            await nc.jetstream().publish(subject, event.SerializeToString(), timeout=2)

        try:
            await retrying(
                send,
                what="key event publish",
                give_up_after_s=PUBLISH_GIVE_UP_S,
                first_delay_s=0.05,
                extra={"key_id": event.key_id},
            )
        except Exception as e:  # nats raises several unrelated types
            change = events_pb2.KeyChange.Name(event.change)
            log.error("key event dropped", extra={"key_id": event.key_id, "change": change, "error": repr(e)})

    async def drain(self, timeout_s: float = 5) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)


async def run_last_used(
    nc: Client, sessions: async_sessionmaker[AsyncSession], stop: asyncio.Event, durable: str = "keys-last-used"
) -> None:
    js = nc.jetstream()
    await natsx.ensure_usage_stream(js)
    await js.add_consumer(
        natsx.USAGE_STREAM,
        ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.NEW,
            ack_wait=30,
        ),
    )
    sub = await js.pull_subscribe_bind(durable, stream=natsx.USAGE_STREAM)
    try:
        while not stop.is_set():
            try:
                msgs = await natsx.fetch_batch(sub, 1024, timeout=1, linger_s=LAST_USED_LINGER_S)
            except nats.errors.TimeoutError:
                continue
            except nats.errors.Error as e:
                log.warning("last-used fetch failed", extra={"error": repr(e)})
                await asyncio.sleep(0.5)
                continue
            latest: dict[str, int] = {}
            for msg in msgs:
                try:
                    events = usage_batch.events_of(msg.data, msg.headers)
                except Exception:
                    continue
                for event in events:
                    t = event.time_unix_ms // 1000
                    latest[event.key_id] = max(latest.get(event.key_id, 0), t)
            try:
                async with sessions() as session:
                    for key_id, t in latest.items():
                        await session.exec(
                            update(VirtualKey)
                            .where(col(VirtualKey.id) == key_id, col(VirtualKey.last_used_at) < t)
                            .values(last_used_at=t)
                        )
                    await session.commit()
            except Exception:
                log.exception("last-used update failed; redelivering")
                for msg in msgs:
                    await msg.nak(delay=2)
                continue
            for msg in msgs:
                await msg.ack()
    finally:
        await sub.unsubscribe()
