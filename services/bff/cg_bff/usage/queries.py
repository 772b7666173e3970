"""Reads of the usage read model, always inside one tenant's ``Scope``.

Every query takes a ``Scope``: the partner (``principal.partner_id``, never an id from
the request) and, for a customer principal, the customer, so rows of another partner or
another customer are never even selected.

- ``series``: sums per hour or day (UTC) from the hourly aggregates, dense (a bucket
  without usage is zeros), for the whole scope or one key, customer or model. A bucket
  is counted whole: ``start`` rounds down to its hour (day), and every bucket that
  starts before ``end`` is in.
- ``request_page`` / ``request_chunks``: the request log, newest first, keyset-paged by
  (time, request id), with filters.
- ``key_spend``: what keys spent since an instant (the runway's recent rate).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cg_bff.models.usage import HOUR_MS, HOURLY, REQUESTS
from cglib.db import READ

DAY_MS = 86_400_000
Granularity = Literal["hour", "day"]
SeriesBy = Literal["partner", "key", "customer", "model"]
BUCKET_MS = {"hour": HOUR_MS, "day": DAY_MS}
_SUBJECT_COLUMN = {"key": "key_id", "customer": "customer_id", "model": "model"}


@dataclass(frozen=True)
class Scope:
    partner_id: str
    customer_id: str | None = None  # a customer principal sees only its own rows


@dataclass(frozen=True)
class Period:
    start_ms: int  # inclusive
    end_ms: int  # exclusive


@dataclass
class Sums:
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_ucr: int = 0
    customer_charged_uai: int = 0
    estimated_requests: int = 0
    error_requests: int = 0
    latency_ms_total: int = 0
    # Customer-billed requests only: their provider cost, and their revenue (AI credits
    # times the price each was billed at), exactly.
    billed_cost_ucr: int = 0
    revenue_ucr_exact: Decimal = field(default_factory=Decimal)


@dataclass
class Bucket:
    start_ms: int
    sums: Sums


_SUM_COLUMNS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cost_ucr",
    "customer_charged_uai",
    "estimated_requests",
    "error_requests",
    "latency_ms_total",
)


def revenue_ucr(uai: int, cents: str) -> Decimal:
    """AI credits at a price in US cents each, in micro-credits, exactly: 1 AI credit at
    c cents is c/100 USD = c credits, so 1 µai at c cents is c µcr."""
    return Decimal(uai) * Decimal(cents) if cents and uai else Decimal(0)


def scoped(q: Select[Any], table: Any, scope: Scope) -> Select[Any]:
    q = q.where(table.c.partner_id == scope.partner_id)
    if scope.customer_id is not None:
        q = q.where(table.c.customer_id == scope.customer_id)
    return q


def add_row(sums: Sums, row: Any) -> None:
    """Adds one grouped row (the sums, ``billed`` and ``ai_credit_cents``) to ``sums``."""
    for name in _SUM_COLUMNS:
        setattr(sums, name, getattr(sums, name) + int(getattr(row, name) or 0))
    if row.billed:
        sums.billed_cost_ucr += int(row.cost_ucr or 0)
        sums.revenue_ucr_exact += revenue_ucr(int(row.customer_charged_uai or 0), row.ai_credit_cents)


def grouped_sums(*group_by: Any) -> Select[Any]:
    """SELECT the group columns, ``billed``, the price, and the sums, from the aggregates."""
    billed = case((HOURLY.c.customer_id == "", 0), else_=1).label("billed")
    sums = [func.sum(HOURLY.c[name]).label(name) for name in _SUM_COLUMNS]
    return select(*group_by, billed, HOURLY.c.ai_credit_cents, *sums).group_by(
        *group_by, billed, HOURLY.c.ai_credit_cents
    )


async def series(
    engine: AsyncEngine,
    scope: Scope,
    granularity: Granularity,
    period: Period,
    by: SeriesBy = "partner",
    subject_id: str = "",
) -> list[Bucket]:
    step = BUCKET_MS[granularity]
    first = period.start_ms - period.start_ms % step
    hour = HOURLY.c.hour_ms
    q = grouped_sums((hour if step == HOUR_MS else hour - hour % step).label("bucket"))
    q = scoped(q, HOURLY, scope).where(hour >= first, hour < period.end_ms)
    if by != "partner":
        q = q.where(HOURLY.c[_SUBJECT_COLUMN[by]] == subject_id)
    async with engine.connect() as conn:
        await conn.execution_options(**READ)
        rows = (await conn.execute(q)).all()
    buckets = {start: Bucket(start, Sums()) for start in range(first, period.end_ms, step)}
    for row in rows:
        target = buckets.get(int(row.bucket))
        if target is not None:
            add_row(target.sums, row)
    return list(buckets.values())


@dataclass(frozen=True)
class RequestFilters:
    period: Period
    key_id: str | None = None
    customer_id: str | None = None
    model: str | None = None
    outcome: str | None = None
    source: str | None = None


def _requests_query(scope: Scope, f: RequestFilters) -> Select[Any]:
    q = scoped(select(REQUESTS), REQUESTS, scope)
    q = q.where(REQUESTS.c.time_ms >= f.period.start_ms, REQUESTS.c.time_ms < f.period.end_ms)
    for name in ("key_id", "customer_id", "model", "outcome", "source"):
        value = getattr(f, name)
        if value is not None:
            q = q.where(REQUESTS.c[name] == value)
    return q


def _after(q: Select[Any], cursor: tuple[int, str] | None) -> Select[Any]:
    if cursor is None:
        return q
    t, rid = cursor
    return q.where(or_(REQUESTS.c.time_ms < t, and_(REQUESTS.c.time_ms == t, REQUESTS.c.request_id < rid)))


async def request_page(
    engine: AsyncEngine, scope: Scope, f: RequestFilters, cursor: tuple[int, str] | None, limit: int
) -> tuple[list[Any], tuple[int, str] | None]:
    """One page, newest first, and the cursor of the next (None: the last page)."""
    q = _after(_requests_query(scope, f), cursor)
    q = q.order_by(REQUESTS.c.time_ms.desc(), REQUESTS.c.request_id.desc()).limit(limit + 1)
    async with engine.connect() as conn:
        await conn.execution_options(**READ)
        rows = list((await conn.execute(q)).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, ((rows[-1].time_ms, rows[-1].request_id) if more and rows else None)


async def request_chunks(
    engine: AsyncEngine, scope: Scope, f: RequestFilters, chunk: int = 1000
) -> AsyncIterator[list[Any]]:
    """Every matching row, newest first, a chunk (one short read) at a time."""
    cursor: tuple[int, str] | None = None
    while True:
        rows, cursor = await request_page(engine, scope, f, cursor, chunk)
        if rows:
            yield rows
        if cursor is None:
            return


async def key_spend(engine: AsyncEngine, partner_id: str, key_ids: list[str], since_ms: int) -> dict[str, int]:
    """Micro-credits each key spent (settled requests) since ``since_ms``."""
    if not key_ids:
        return {}
    q = (
        select(REQUESTS.c.key_id, func.sum(REQUESTS.c.cost_ucr).label("spent"))
        .where(REQUESTS.c.partner_id == partner_id, REQUESTS.c.key_id.in_(key_ids), REQUESTS.c.time_ms >= since_ms)
        .group_by(REQUESTS.c.key_id)
    )
    async with engine.connect() as conn:
        await conn.execution_options(**READ)
        rows = (await conn.execute(q)).all()
    spent = dict.fromkeys(key_ids, 0)
    spent.update({r.key_id: int(r.spent or 0) for r in rows})
    return spent
