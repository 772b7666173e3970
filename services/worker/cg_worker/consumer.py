"""The durable pull consumer on the USAGE stream."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

import nats.errors
from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cglib import natsx
from creditgate.events.v1 import events_pb2

log = logging.getLogger(__name__)

Handler = Callable[[events_pb2.UsageEvent], Awaitable[None]]


async def run_usage_consumer(nc: Client, durable: str, batch: int, handler: Handler, stop: asyncio.Event) -> None:
    js = nc.jetstream()
    await natsx.ensure_usage_stream(js)
    await js.add_consumer(
        natsx.USAGE_STREAM,
        ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=30,
            max_deliver=-1,
        ),
    )
    sub = await js.pull_subscribe_bind(durable, stream=natsx.USAGE_STREAM)
    log.info("consuming usage events", extra={"durable": durable})
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=1)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.NoRespondersError, nats.errors.Error) as e:
                log.warning("fetch failed", extra={"error": repr(e)})
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                try:
                    event = events_pb2.UsageEvent.FromString(msg.data)
                except DecodeError:
                    log.error("poison usage message dropped", extra={"subject": msg.subject})
                    await msg.term()
                    continue
                try:
                    await handler(event)
                except Exception:
                    log.exception("handling failed; redelivering", extra={"request_id": event.request_id})
                    await msg.nak(delay=2)
                    continue
                await msg.ack()
    finally:
        await sub.unsubscribe()
