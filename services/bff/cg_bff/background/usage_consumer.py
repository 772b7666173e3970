"""Job: the usage read model's JetStream consumer (``cg_bff.usage.consumer``).

Waits for the app's NATS connection (made in the background), then consumes the USAGE
stream until the app stops. Every replica runs it; they share the durable consumer.
"""

from __future__ import annotations

import asyncio
import contextlib

from cg_bff.state import BffState
from cg_bff.usage.consumer import UsageConsumer

NATS_POLL_S = 0.2


async def wait_for_nats(state: BffState, stop: asyncio.Event) -> bool:
    """True once ``state.nats`` is connected, False if ``stop`` comes first."""
    while state.nats is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=NATS_POLL_S)
        if stop.is_set():
            return False
    return True


async def run(state: BffState, stop: asyncio.Event) -> None:
    if not await wait_for_nats(state, stop):
        return
    assert state.nats is not None
    consumer = UsageConsumer(
        state.nats,
        state.engine,
        retention_days=state.settings.usage_retention_days,
        ack_wait_s=state.settings.usage_ack_wait_s,
    )
    await consumer.run(stop)
