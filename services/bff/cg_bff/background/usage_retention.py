"""Job: deletes usage rows and aggregates past ``settings.usage_retention_days``,
shortly after start and then every hour (``cg_bff.usage.retention``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from cg_bff.state import BffState
from cg_bff.usage.retention import purge

log = logging.getLogger(__name__)

FIRST_RUN_S = 5.0
EVERY_S = 3600.0


async def run(state: BffState, stop: asyncio.Event) -> None:
    delay = FIRST_RUN_S
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return
        delay = EVERY_S
        try:
            await purge(state.engine, state.settings.usage_retention_days, int(time.time() * 1000))
        except Exception:  # the database busy or down: the next run catches up
            log.exception("usage retention failed; retrying in an hour")
