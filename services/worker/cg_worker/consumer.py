"""A durable JetStream pull consumer: fetch a batch, decode, hand it to the handler,
ack once the handler's effects are committed."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

import nats.errors
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cg_worker.metrics import EVENTS, LAG

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


class Transient(Exception):
    """A dependency is unavailable: redeliver the batch later."""


async def run_consumer(
    nc: Client,
    stream: str,
    durable: str,
    message_type: type[M],
    handler: Callable[[list[M]], Awaitable[None]],
    stop: asyncio.Event,
    batch: int = 64,
    ack_wait_s: float = 30.0,
) -> None:
    js = nc.jetstream()
    delay = 0.2
    while True:  # declared idempotently; a slow or restarting server is waited out
        try:
            await js.add_consumer(stream, ConsumerConfig(
                durable_name=durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait_s, max_deliver=-1,
            ))
            sub = await js.pull_subscribe_bind(durable, stream=stream)
            break
        except Exception as e:
            if stop.is_set():
                return
            log.warning("consumer not declared yet", extra={"stream": stream, "error": repr(e)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)
    log.info("consuming", extra={"stream": stream, "durable": durable})
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(batch, timeout=1)
            except nats.errors.TimeoutError:
                continue
            except nats.errors.Error as e:
                log.warning("fetch failed", extra={"stream": stream, "error": repr(e)})
                await asyncio.sleep(0.5)
                continue
            good, events = [], []
            for msg in msgs:
                try:
                    events.append(message_type.FromString(msg.data))
                    good.append(msg)
                except DecodeError:
                    log.error("poison message dropped", extra={"stream": stream, "subject": msg.subject})
                    EVENTS.labels(stream, "poison").inc()
                    await msg.term()
            if not good:
                continue
            try:
                await handler(events)
            except Transient as e:
                log.warning("dependency unavailable; redelivering", extra={"stream": stream, "error": str(e)})
                EVENTS.labels(stream, "retried").inc(len(good))
                for msg in good:
                    await msg.nak(delay=1)
                continue
            except Exception:
                log.exception("handler failed; redelivering", extra={"stream": stream})
                EVENTS.labels(stream, "failed").inc(len(good))
                for msg in good:
                    await msg.nak(delay=2)
                continue
            for msg in good:
                await msg.ack()
            EVENTS.labels(stream, "ok").inc(len(good))
            try:
                info = await js.consumer_info(stream, durable)
                LAG.labels(stream).set(info.num_pending)
            except Exception:
                pass
    finally:
        await sub.unsubscribe()
