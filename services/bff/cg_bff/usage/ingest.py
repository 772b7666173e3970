"""From ``UsageEvent`` to the read model: validate an event, store a batch exactly once.

``row_of`` turns an event into a request-log row, or raises ``Invalid`` for an event that
can never be stored (no request id, a subject that names another tenant than the event,
a field too long for its column, a negative amount): the consumer terminates those.

``store`` writes a batch in ONE transaction: the request-log rows first, with
``ON CONFLICT (request_id) DO NOTHING ... RETURNING request_id``, so the database says
which rows are new; then the hourly aggregates of exactly those rows, with ``ON
CONFLICT DO UPDATE SET n = n + excluded.n``. A redelivered or duplicated event inserts
no row and so adds nothing; a crash before the commit leaves nothing, one after it
leaves an event that the redelivery finds already stored. Rows and aggregates are
written in key order, so two replicas writing overlapping batches take their locks in
the same order (no deadlock on PostgreSQL).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cg_bff.models.usage import HOUR_MS, HOURLY, REQUESTS
from cglib import natsx
from creditgate.events.v1 import events_pb2 as epb
from creditgate.ledger.v1 import ledger_pb2 as lpb

Row = dict[str, Any]

SOURCES = {lpb.USAGE_SOURCE_PROVIDER: "reported", lpb.USAGE_SOURCE_ESTIMATED: "estimated"}
OUTCOMES = {
    epb.USAGE_OUTCOME_OK: "ok",
    epb.USAGE_OUTCOME_UPSTREAM_ERROR: "upstream_error",
    epb.USAGE_OUTCOME_CLIENT_DISCONNECTED: "client_disconnected",
}
UNKNOWN = "unknown"
# Column widths (models.usage), checked before the database sees a value.
_LENGTHS = {
    "request_id": 120,
    "partner_id": 64,
    "key_id": 64,
    "customer_id": 64,
    "model": 120,
    "price_book_version": 60,
}
_MAX_CENTS_LEN = 40
# Rows per INSERT statement (SQLite allows 32,766 bound values; a row has 17).
_CHUNK = 500
_SUMS = (
    "requests",
    "input_tokens",
    "output_tokens",
    "cost_ucr",
    "customer_charged_uai",
    "estimated_requests",
    "error_requests",
    "latency_ms_total",
)
_GRAIN = ("partner_id", "hour_ms", "key_id", "customer_id", "model", "ai_credit_cents")


class Invalid(ValueError):
    """An event the read model can never store."""


def normalize_cents(value: str) -> str:
    """A price per AI credit as one canonical decimal string ("1.50" and "1.5" are one
    price), or "" when there is none or it is not a finite, non-negative decimal."""
    if not value:
        return ""
    try:
        cents = Decimal(value)
    except InvalidOperation:
        return ""
    if not cents.is_finite() or cents < 0:
        return ""
    text = f"{cents.normalize():f}"
    return text if len(text) <= _MAX_CENTS_LEN else ""


def row_of(event: epb.UsageEvent, subject: str | None, fallback_time_ms: int) -> Row:
    """The request-log row of an event that arrived on ``subject`` (None: not checked)."""
    for name, limit in _LENGTHS.items():
        value = getattr(event, name)
        if len(value) > limit or not value.isprintable():
            raise Invalid(f"{name}: longer than {limit} characters or not printable")
    for name in ("request_id", "partner_id", "key_id"):
        if not getattr(event, name):
            raise Invalid(f"{name}: missing")
    if subject is not None and subject != natsx.usage_subject(event.partner_id, event.key_id):
        raise Invalid(f"subject {subject!r} does not name the event's partner and key")
    amounts = ("input_tokens", "output_tokens", "charged_ucr", "customer_charged_uai", "latency_ms")
    for name in amounts:
        if getattr(event, name) < 0:
            raise Invalid(f"{name}: negative")
    return {
        "request_id": event.request_id,
        "partner_id": event.partner_id,
        "key_id": event.key_id,
        "customer_id": event.customer_id,
        "model": event.model,
        "time_ms": event.time_unix_ms if event.time_unix_ms > 0 else fallback_time_ms,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "cost_ucr": event.charged_ucr,
        "customer_charged_uai": event.customer_charged_uai,
        "ai_credit_cents": normalize_cents(event.price_per_ai_credit_cents),
        "source": SOURCES.get(event.source, UNKNOWN),
        "outcome": OUTCOMES.get(event.outcome, UNKNOWN),
        "latency_ms": event.latency_ms,
        "stream": event.stream,
        "price_book_version": event.price_book_version,
    }


def hourly_sums(rows: Iterable[Row]) -> dict[tuple[Any, ...], dict[str, int]]:
    """The rows' contributions to the hourly aggregates, by the aggregates' grain."""
    sums: dict[tuple[Any, ...], dict[str, int]] = {}
    for r in rows:
        grain = (r["partner_id"], r["time_ms"] - r["time_ms"] % HOUR_MS, r["key_id"], r["customer_id"], r["model"])
        s = sums.setdefault((*grain, r["ai_credit_cents"]), dict.fromkeys(_SUMS, 0))
        s["requests"] += 1
        s["input_tokens"] += r["input_tokens"]
        s["output_tokens"] += r["output_tokens"]
        s["cost_ucr"] += r["cost_ucr"]
        s["customer_charged_uai"] += r["customer_charged_uai"]
        s["estimated_requests"] += r["source"] == "estimated"
        s["error_requests"] += r["outcome"] != "ok"
        s["latency_ms_total"] += r["latency_ms"]
    return sums


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


async def store(engine: AsyncEngine, rows: Iterable[Row], now_ms: int | None = None) -> list[str]:
    """Stores the rows not stored yet, and their aggregates, in one transaction. Returns
    the request ids that were new (a duplicate within the batch counts once)."""
    recorded = now_ms if now_ms is not None else int(time.time() * 1000)
    unique: dict[str, Row] = {}
    for r in rows:
        unique.setdefault(r["request_id"], {**r, "recorded_at_ms": recorded})
    if not unique:
        return []
    ordered = [unique[k] for k in sorted(unique)]
    async with engine.begin() as conn:
        insert = _insert(conn)
        new_ids: list[str] = []
        for chunk in _chunks(ordered):
            stmt = insert(REQUESTS).values(list(chunk))
            stmt = stmt.on_conflict_do_nothing(index_elements=["request_id"]).returning(REQUESTS.c.request_id)
            new_ids += (await conn.execute(stmt)).scalars().all()
        sums = sorted(hourly_sums(unique[i] for i in new_ids).items())
        for chunk in _chunks(sums):
            stmt = insert(HOURLY).values([dict(zip(_GRAIN, grain, strict=True)) | s for grain, s in chunk])
            stmt = stmt.on_conflict_do_update(
                index_elements=list(_GRAIN), set_={c: HOURLY.c[c] + stmt.excluded[c] for c in _SUMS}
            )
            await conn.execute(stmt)
    return sorted(new_ids)
