"""How far a durable JetStream consumer is behind: its ``num_pending`` (messages in the
stream not yet delivered to it), read on a timer and set on a gauge, whether or not the
consumer is making progress (a stuck consumer is exactly the one whose lag must show)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.js import JetStreamContext
from prometheus_client import Gauge

log = logging.getLogger(__name__)

EVERY_S = 5.0


async def watch_lag(
    js: JetStreamContext, stream: str, durable: str, gauge: Gauge, stop: asyncio.Event, every_s: float = EVERY_S
) -> None:
    """Sets ``gauge.labels(stream)`` to the consumer's pending count every ``every_s``
    until ``stop``; a failed read (NATS down, consumer not declared yet) leaves the last value."""
    child = gauge.labels(stream)
    while not stop.is_set():
        try:
            info = await asyncio.wait_for(js.consumer_info(stream, durable), timeout=every_s)
            child.set(info.num_pending)
        except Exception as e:  # reported by the readiness check and the logs of the consumer itself
            log.debug("consumer lag not read", extra={"stream": stream, "durable": durable, "error": repr(e)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
