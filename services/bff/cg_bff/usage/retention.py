"""Retention of the usage read model (``settings.usage_retention_days``; 0 keeps all).

``purge`` deletes request-log rows older than the cutoff (now - the retention period)
and the hourly aggregates of hours that ended before the cutoff's hour began, in chunks
so that no transaction holds the database for long (SQLite has one writer). Safe to run
on every replica at once: a row is deleted once whoever gets there first. The consumer
stores no event older than the same cutoff, so a late redelivery cannot re-create what
was deleted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cg_bff.models.usage import HOUR_MS, HOURLY, REQUESTS

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
CHUNK_ROWS = 5000


@dataclass(frozen=True)
class Purged:
    requests: int
    hourly: int


def cutoff_ms(retention_days: int, now_ms: int) -> int:
    """Rows before this are past retention (0: none, retention is off)."""
    return now_ms - retention_days * DAY_MS if retention_days > 0 else 0


async def purge(engine: AsyncEngine, retention_days: int, now_ms: int) -> Purged:
    cut = cutoff_ms(retention_days, now_ms)
    if cut <= 0:
        return Purged(0, 0)
    requests = 0
    while True:
        oldest = select(REQUESTS.c.request_id).where(REQUESTS.c.time_ms < cut).limit(CHUNK_ROWS)
        async with engine.begin() as conn:
            n = (
                await conn.execute(delete(REQUESTS).where(REQUESTS.c.request_id.in_(oldest.scalar_subquery())))
            ).rowcount
        requests += n
        if n < CHUNK_ROWS:
            break
    cut_hour = cut - cut % HOUR_MS
    hourly = 0
    while True:
        async with engine.begin() as conn:
            first = (await conn.execute(select(func.min(HOURLY.c.hour_ms)))).scalar()
            if first is None or first >= cut_hour:
                break
            upto = min(first + DAY_MS, cut_hour)  # a day of hours per transaction
            hourly += (await conn.execute(delete(HOURLY).where(HOURLY.c.hour_ms < upto))).rowcount
    if requests or hourly:
        log.info("usage retention", extra={"requests_deleted": requests, "hourly_deleted": hourly, "cutoff_ms": cut})
    return Purged(requests, hourly)
