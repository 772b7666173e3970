"""The usage read model: one row per metered request, and hourly aggregates.

Written only by the usage consumer (``cg_bff.usage.ingest``) from the USAGE stream's
``UsageEvent``s, read by the usage routes; migration ``0002_usage``.

- ``usage_requests``: the request log, one row per request id (the primary key is what
  makes a redelivered or duplicated event change nothing).
- ``usage_hourly``: sums per UTC hour at the finest grain the queries need — partner,
  key, customer, model and the AI-credit price the customer was billed at. Series per
  key, customer, model or the whole partner, and profit per customer, key or model, are
  ``GROUP BY``s of it; the price is part of the grain so that revenue (AI credits × the
  price they were billed at) stays exact when a partner changes its price mid-hour. A row
  is added to only in the transaction that inserts a new request-log row.

Amounts are integers: ``*_ucr`` micro-credits, ``*_uai`` millionths of an AI credit;
times are Unix milliseconds (UTC).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index
from sqlmodel import BigInteger, Column, Field, SQLModel

HOUR_MS = 3_600_000


def _big(primary_key: bool = False) -> Any:
    return Column(BigInteger, nullable=False, primary_key=primary_key)


class UsageRequest(SQLModel, table=True):
    __tablename__ = "usage_requests"
    __table_args__ = (
        Index("ix_usage_requests_partner_time", "partner_id", "time_ms", "request_id"),
        Index("ix_usage_requests_partner_key_time", "partner_id", "key_id", "time_ms"),
        Index("ix_usage_requests_partner_customer_time", "partner_id", "customer_id", "time_ms"),
        Index("ix_usage_requests_time", "time_ms"),
    )

    request_id: str = Field(primary_key=True, max_length=120)
    partner_id: str = Field(max_length=64)
    key_id: str = Field(max_length=64)
    # The customer billed in AI credits ("" when none).
    customer_id: str = Field(default="", max_length=64)
    model: str = Field(max_length=120)
    # When the gateway finished the request (the event's time).
    time_ms: int = Field(sa_column=_big())
    input_tokens: int = Field(sa_column=_big())
    output_tokens: int = Field(sa_column=_big())
    # Charged to the paying account (the key's budget, or the partner's balance for a
    # customer-created key): the provider cost, in micro-credits.
    cost_ucr: int = Field(sa_column=_big())
    # Charged to the customer, in millionths of an AI credit (0 when none).
    customer_charged_uai: int = Field(sa_column=_big())
    # The price the customer was billed at, US cents per AI credit, a normalized decimal
    # string ("" when none).
    ai_credit_cents: str = Field(default="", max_length=40)
    # reported (by the provider) | estimated (by the gateway) | unknown
    source: str = Field(max_length=16)
    # ok | upstream_error | client_disconnected | unknown
    outcome: str = Field(max_length=24)
    latency_ms: int = Field(sa_column=_big())
    stream: bool = False
    price_book_version: str = Field(default="", max_length=60)
    # When the BFF stored the row (for lag, not for queries).
    recorded_at_ms: int = Field(sa_column=_big())


class UsageHourly(SQLModel, table=True):
    __tablename__ = "usage_hourly"
    __table_args__ = (Index("ix_usage_hourly_hour", "hour_ms"),)

    partner_id: str = Field(primary_key=True, max_length=64)
    # The hour's first millisecond (UTC).
    hour_ms: int = Field(sa_column=_big(primary_key=True))
    key_id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(primary_key=True, max_length=64)
    model: str = Field(primary_key=True, max_length=120)
    ai_credit_cents: str = Field(primary_key=True, max_length=40)
    requests: int = Field(sa_column=_big())
    input_tokens: int = Field(sa_column=_big())
    output_tokens: int = Field(sa_column=_big())
    cost_ucr: int = Field(sa_column=_big())
    customer_charged_uai: int = Field(sa_column=_big())
    # Requests whose tokens the gateway estimated (the provider reported none).
    estimated_requests: int = Field(sa_column=_big())
    # Requests that did not end ok (the provider failed mid-stream, the client left).
    error_requests: int = Field(sa_column=_big())
    latency_ms_total: int = Field(sa_column=_big())


REQUESTS = UsageRequest.__table__  # type: ignore[attr-defined]  # SQLModel sets it on table models
HOURLY = UsageHourly.__table__  # type: ignore[attr-defined]
