"""A durable JetStream pull consumer: fetch a batch, decode, hand it to the handler,
ack once the handler's effects are committed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
from google.protobuf.message import DecodeError, Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cg_worker.health import ConsumerHealth
from cg_worker.metrics import EVENTS, LAG
from cglib import natsx, tracing, usage_batch
from cglib.consumerlag import watch_lag
from cglib.retry import Stopped, retrying
from creditgate.events.v1 import events_pb2 as epb

log = logging.getLogger(__name__)


M = TypeVar("M", bound=Message)


class Transient(Exception):
    """A dependency is unavailable: redeliver the batch later."""


async def _one_by_one(
    stream: str, good: list[tuple[Msg, list[M]]], handler: Callable[[list[M]], Awaitable[None]]
) -> None:
    """Acks what succeeds, redelivers what meets an unavailable dependency, and
    terminates (and logs) a message that fails by itself: events are only triggers, so the
    next event about the same key or partner re-reads the state it would have acted on."""
    for msg, events in good:
        try:
            await handler(events)
        except Transient:
            EVENTS.labels(stream, "retried").inc(len(events))
            await msg.nak(delay=1)
            continue
        except Exception:
            log.exception("event failed; dropped", extra={"stream": stream, "subject": msg.subject})
            EVENTS.labels(stream, "failed").inc(len(events))
            await msg.term()
            continue
        EVENTS.labels(stream, "ok").inc(len(events))
        await msg.ack()


def single(message_type: type[M]) -> Callable[[Msg], list[M]]:
    """The decoder of a stream whose messages hold one event each."""

    def decode(msg: Msg) -> list[M]:
        return [message_type.FromString(msg.data)]

    return decode


def usage_events(msg: Msg) -> list[epb.UsageEvent]:
    """The decoder of the usage stream: one event, or a proxy's batch (cglib.usage_batch)."""
    return usage_batch.events_of(msg.data, msg.headers)


async def run_consumer(
    nc: Client,
    stream: str,
    durable: str,
    decode: Callable[[Msg], list[M]],
    handler: Callable[[list[M]], Awaitable[None]],
    stop: asyncio.Event,
    batch: int = 64,
    ack_wait_s: float = 30.0,
    linger_s: float = 0.0,
    health: ConsumerHealth | None = None,
) -> None:
    js = nc.jetstream()

    async def declare() -> JetStreamContext.PullSubscription:
        # idempotent: every replica declares the same consumer at every start
        await js.add_consumer(
            stream,
            ConsumerConfig(
                durable_name=durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ack_wait_s,
                max_deliver=-1,
            ),
        )
        return await js.pull_subscribe_bind(durable, stream=stream)

    try:  # a slow or restarting server is waited out
        sub = await retrying(
            declare, what="consumer declaration", stop=stop, first_delay_s=0.2, extra={"stream": stream}
        )
    except Stopped:
        return
    log.info("consuming", extra={"stream": stream, "durable": durable})
    if health is not None:
        health.subscribed(durable)
    lag = asyncio.create_task(watch_lag(js, stream, durable, LAG, stop))  # cg_worker_consumer_pending
    try:
        while not stop.is_set():
            try:
                await _one_round(stream, sub, decode, handler, batch, linger_s)
            except Exception:  # never let one consumer end: the others share its connection
                log.exception("consumer round failed; continuing", extra={"stream": stream})
                await asyncio.sleep(0.5)
    finally:
        lag.cancel()
        if health is not None:
            health.unsubscribed(durable)
        await sub.unsubscribe()


async def _one_round(
    stream: str,
    sub: JetStreamContext.PullSubscription,
    decode: Callable[[Msg], list[M]],
    handler: Callable[[list[M]], Awaitable[None]],
    batch: int,
    linger_s: float,
) -> None:
    """Fetch one batch, handle it, acknowledge it."""
    try:
        msgs = await natsx.fetch_batch(sub, batch, timeout=1, linger_s=linger_s)
    except TimeoutError:  # nats.errors.TimeoutError, or asyncio's when a fetch finds nothing
        return
    except nats.errors.Error as e:
        log.warning("fetch failed", extra={"stream": stream, "error": repr(e)})
        await asyncio.sleep(0.5)
        return
    good: list[tuple[Msg, list[M]]] = []
    for msg in msgs:
        try:
            good.append((msg, decode(msg)))
        except DecodeError:
            log.error("poison message dropped", extra={"stream": stream, "subject": msg.subject})
            EVENTS.labels(stream, "poison").inc()
            await msg.term()
    if not good:
        return
    events = [event for _, decoded in good for event in decoded]
    try:
        if tracing.ENABLED:  # one span per batch, linked to the trace of each event
            with tracing.consumer_span(f"{stream} process", (m.headers for m, _ in good)):
                await handler(events)
        else:
            await handler(events)
    except Transient as e:
        log.warning("dependency unavailable; redelivering", extra={"stream": stream, "error": str(e)})
        EVENTS.labels(stream, "retried").inc(len(events))
        for msg, _ in good:
            await msg.nak(delay=1)
        return
    except Exception:
        # one event may be at fault: handle them one by one so it cannot hold the others back
        log.warning("batch failed; handling its events one by one", extra={"stream": stream}, exc_info=True)
        await _one_by_one(stream, good, handler)
        return
    for msg, _ in good:
        await msg.ack()
    EVENTS.labels(stream, "ok").inc(len(events))
