"""Webhook events into deliveries: a durable JetStream consumer of the worker's
``WebhookEvent``s (``webhooks.events.>``, stream WEBHOOKS) that records each once and
publishes a ``WebhookJob`` per subscribed endpoint, acking after both. A malformed event
is dropped (logged); anything else is retried. Every minute it also republishes the job
of a delivery overdue by ``OVERDUE_S`` (lost between a commit and its publish), and
every hour drops what is older than ``CG_BFF_WEBHOOKS_RETENTION_DAYS``. Several BFF
replicas split the events (one durable consumer) and may all sweep: a repeated job is
harmless (the delivery's lease and state decide who attempts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from cg_bff.state import BffState
from cg_bff.webhooks import service
from cg_bff.webhooks.service import BadEvent, Webhooks
from cg_bff.webhooks.store import now_ms
from cglib import natsx
from cglib.retry import Stopped, retrying
from creditgate.bff.v1 import bff_pb2

log = logging.getLogger(__name__)

DURABLE = "bff-webhook-events"
SWEEP_EVERY_S = 60.0
OVERDUE_S = 15 * 60
PRUNE_EVERY_S = 3600.0
# An event that keeps failing for something other than a dependency is dropped after this many tries.
MAX_TRIES = 50


async def _connection(state: BffState, stop: asyncio.Event) -> Client | None:
    while not stop.is_set():
        if state.nats is not None and state.nats.is_connected:
            return state.nats
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.2)
    return None


async def run(state: BffState, stop: asyncio.Event) -> None:
    hooks = service.of(state)
    nc = await _connection(state, stop)
    if nc is None:
        return
    js = nc.jetstream()

    async def declare() -> JetStreamContext.PullSubscription:
        await natsx.ensure_webhooks_stream(js)
        await js.add_consumer(
            natsx.WEBHOOKS_STREAM,
            ConsumerConfig(
                durable_name=DURABLE,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                filter_subject=natsx.WEBHOOK_EVENTS_FILTER,
                ack_wait=30,
                max_deliver=-1,
            ),
        )
        return await js.pull_subscribe_bind(DURABLE, stream=natsx.WEBHOOKS_STREAM)

    try:
        sub = await retrying(declare, what="webhook events consumer declaration", stop=stop, first_delay_s=0.2)
    except Stopped:
        return
    log.info("consuming webhook events", extra={"durable": DURABLE})
    retention_ms = state.settings.webhooks_retention_days * 86_400_000
    swept = pruned = 0.0
    try:
        while not stop.is_set():
            try:
                for msg in await natsx.fetch_batch(sub, 64, timeout=1):
                    await _handle(hooks, msg)
            except TimeoutError:  # nothing new (nats.errors.TimeoutError is one too)
                pass
            except Exception:  # never end: keep consuming (a NATS hiccup, a database restart)
                log.warning("webhook events round failed; continuing", exc_info=True)
                await asyncio.sleep(0.5)
            now = time.monotonic()
            if now - swept >= SWEEP_EVERY_S:
                swept = now
                await _sweep(hooks)
            if now - pruned >= PRUNE_EVERY_S and retention_ms > 0:
                pruned = now
                with contextlib.suppress(Exception):
                    dropped = await hooks.store.prune(now_ms() - retention_ms)
                    if dropped:
                        log.info("old webhook events dropped", extra={"events": dropped})
    finally:
        await sub.unsubscribe()


async def _handle(hooks: Webhooks, msg: Msg) -> None:
    try:
        event = bff_pb2.WebhookEvent.FromString(msg.data)
    except DecodeError:
        log.error("poison webhook event dropped", extra={"subject": msg.subject})
        await msg.term()
        return
    try:
        made = await hooks.on_event(event)
    except BadEvent as e:
        log.error("webhook event dropped", extra={"event_id": event.id, "error": str(e)})
        await msg.term()
        return
    except Exception as e:
        tries = msg.metadata.num_delivered or 0
        if tries >= MAX_TRIES:
            log.exception("webhook event failed too often; dropped", extra={"event_id": event.id})
            await msg.term()
            return
        log.warning("webhook event not recorded; retrying", extra={"event_id": event.id, "error": repr(e)})
        await msg.nak(delay=min(30, 1 + tries))
        return
    await msg.ack()
    if made:
        log.info("webhook event fanned out", extra={"event_id": event.id, "deliveries": made})


async def _sweep(hooks: Webhooks) -> None:
    try:
        for d in await hooks.store.overdue(now_ms() - OVERDUE_S * 1000):
            await hooks.publish_job(d)
            log.warning("overdue webhook delivery republished", extra={"delivery_id": d.id})
    except Exception as e:
        log.warning("webhook sweep failed", extra={"error": repr(e)})
