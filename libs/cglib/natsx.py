"""NATS: connection and the JetStream streams Creditgate declares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable

import nats
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

log = logging.getLogger(__name__)

USAGE_STREAM = "USAGE"
USAGE_SUBJECTS = ["usage.>"]
# Key lifecycle changes: durable for the worker, and seen live by every proxy replica.
KEYS_STREAM = "KEYS"
KEYS_SUBJECTS = ["keys.>"]
# Partner balance changes, for the worker.
LEDGER_STREAM = "LEDGER"
LEDGER_SUBJECTS = ["ledger.>"]
# Webhooks (creditgate.bff.v1): events the worker publishes, delivery jobs the BFF publishes.
WEBHOOKS_STREAM = "WEBHOOKS"
WEBHOOKS_SUBJECTS = ["webhooks.>"]
WEBHOOK_EVENTS_FILTER = "webhooks.events.>"
WEBHOOK_JOBS_FILTER = "webhooks.jobs.>"
# How many copies of each stream a JetStream cluster keeps (1 on a single server; 3 on a
# three-node cluster survives losing any one node). Read when a stream is declared, so
# every service declares the same streams alike; a stream declared with fewer is scaled up.
STREAM_REPLICAS_ENV = "CG_NATS_STREAM_REPLICAS"


def usage_subject(partner_id: str, key_id: str) -> str:
    return f"usage.{partner_id}.{key_id}"


def key_subject(partner_id: str, key_id: str) -> str:
    return f"keys.{partner_id}.{key_id}"


def balance_subject(partner_id: str) -> str:
    return f"ledger.balance.{partner_id}"


def webhook_event_subject(partner_id: str) -> str:
    return f"webhooks.events.{partner_id}"


def webhook_job_subject(partner_id: str) -> str:
    return f"webhooks.jobs.{partner_id}"


async def connect(url: str, name: str, reconnected: Callable[[], Awaitable[None]] | None = None) -> Client:
    """Connects and keeps reconnecting forever; callers see errors, not a dead client.
    ``reconnected`` is awaited after each reconnection (plain subscriptions missed what was
    published meanwhile)."""

    async def on_error(e: Exception) -> None:
        log.warning("nats error", extra={"error": repr(e)})

    async def on_reconnected() -> None:
        log.info("nats reconnected", extra={"client": name})
        if reconnected is not None:
            await reconnected()

    return await nats.connect(
        servers=url.split(","),
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        error_cb=on_error,
        reconnected_cb=on_reconnected,
    )


async def ensure_usage_stream(js: JetStreamContext) -> None:
    await ensure_stream(js, USAGE_STREAM, USAGE_SUBJECTS)


async def ensure_keys_stream(js: JetStreamContext) -> None:
    await ensure_stream(js, KEYS_STREAM, KEYS_SUBJECTS)


async def ensure_ledger_stream(js: JetStreamContext) -> None:
    await ensure_stream(js, LEDGER_STREAM, LEDGER_SUBJECTS)


async def ensure_webhooks_stream(js: JetStreamContext) -> None:
    await ensure_stream(js, WEBHOOKS_STREAM, WEBHOOKS_SUBJECTS)


def stream_replicas() -> int:
    """``CG_NATS_STREAM_REPLICAS`` (1 to 5; default 1); anything else stops the caller with a
    message that says what to set."""
    raw = os.environ.get(STREAM_REPLICAS_ENV, "1").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= 5:
        raise ValueError(f"{STREAM_REPLICAS_ENV}={raw!r}: a whole number from 1 to 5 (JetStream's limit)")
    return int(raw)


async def ensure_stream(js: JetStreamContext, name: str, subjects: list[str]) -> None:
    """Declares a stream with ``stream_replicas()`` copies; safe to call from every replica at every start."""
    config = StreamConfig(
        name=name,
        subjects=subjects,
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=7 * 24 * 3600,
        duplicate_window=120,
        num_replicas=stream_replicas(),
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


async def fetch_batch(
    sub: JetStreamContext.PullSubscription, batch: int, timeout: float, linger_s: float = 0.0
) -> list:
    """Waits up to ``timeout`` for a first message (``nats.errors.TimeoutError`` if none),
    then lets ``linger_s`` pass and takes what else arrived, up to ``batch`` in all: a
    burst becomes one round of work (one database write, one check per key) instead of
    one round per message, for at most ``linger_s`` of added delay.

    nats-py sometimes reports "nothing yet" as a plain ``TimeoutError`` (when its deadline
    ran out between its two pull requests: a busy process, a clustered server a little
    slower to answer); it is raised as ``nats.errors.TimeoutError`` like the others, so
    callers see one "nothing yet" and not a failure."""
    try:
        msgs = await sub.fetch(batch, timeout=timeout)
    except nats.errors.TimeoutError:
        raise
    except TimeoutError:
        raise nats.errors.TimeoutError from None
    if linger_s > 0 and len(msgs) < batch:
        await asyncio.sleep(linger_s)
        with contextlib.suppress(Exception):  # nothing more (or the connection is going): the first batch stands
            msgs += await sub.fetch(batch - len(msgs), timeout=0.05)
    return msgs
