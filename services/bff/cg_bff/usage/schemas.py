"""The usage API's answers. Money is integers (``*_ucr`` micro-credits, ``*_uai``
millionths of an AI credit) and, for display, exact decimal strings (credits, USD, AI
credits); never floats. Times are UTC: ISO 8601 and Unix milliseconds.

A customer's answers (``Customer*``) leave out what the partner pays its providers
(``cost_*``) and its margin: a customer sees its own AI credits, nothing of its partner's
economics.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from cg_bff.usage.profit import Profit
from cg_bff.usage.queries import Bucket, Granularity, Sums
from cg_bff.usage.runway import Runway

Outcome = Literal["ok", "upstream_error", "client_disconnected", "unknown"]
Source = Literal["reported", "estimated", "unknown"]


def credits(ucr: int) -> str:
    """Micro-credits as credits, exactly ("1.250000")."""
    return f"{Decimal(ucr).scaleb(-6):f}"


def usd(ucr: int) -> str:
    """Micro-credits as US dollars, exactly ($1 = 10^8 µcr: "0.01250000")."""
    return f"{Decimal(ucr).scaleb(-8):f}"


def ai_credits(uai: int) -> str:
    return f"{Decimal(uai).scaleb(-6):f}"


def utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _avg(total: int, n: int) -> int | None:
    return total // n if n else None


# -- series ---------------------------------------------------------------------------


class CustomerSeriesPoint(BaseModel):
    start: datetime
    start_ms: int
    requests: int
    input_tokens: int
    output_tokens: int
    ai_credits_uai: int = Field(description="AI credits charged, millionths.")
    ai_credits: str = Field(description="AI credits charged, a decimal string.")
    estimated_requests: int = Field(description="Requests whose tokens were estimated (the provider reported none).")
    error_requests: int = Field(description="Requests that did not end ok.")
    avg_latency_ms: int | None

    @classmethod
    def of(cls, b: Bucket) -> CustomerSeriesPoint:
        return cls(**_customer_sums(b.sums), start=utc(b.start_ms), start_ms=b.start_ms)


class SeriesPoint(CustomerSeriesPoint):
    cost_ucr: int = Field(description="Provider cost charged to the paying account, micro-credits.")
    cost_credits: str
    revenue_ucr: int = Field(description="Customer-billed requests: AI credits at the price each was billed at.")
    margin_ucr: int = Field(description="revenue_ucr minus the provider cost of the customer-billed requests.")

    @classmethod
    def of(cls, b: Bucket) -> SeriesPoint:
        p = Profit("", b.sums)
        return cls(
            **_customer_sums(b.sums),
            start=utc(b.start_ms),
            start_ms=b.start_ms,
            cost_ucr=b.sums.cost_ucr,
            cost_credits=credits(b.sums.cost_ucr),
            revenue_ucr=p.revenue_ucr,
            margin_ucr=p.margin_ucr,
        )


def _customer_sums(s: Sums) -> dict[str, Any]:
    return {
        "requests": s.requests,
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "ai_credits_uai": s.customer_charged_uai,
        "ai_credits": ai_credits(s.customer_charged_uai),
        "estimated_requests": s.estimated_requests,
        "error_requests": s.error_requests,
        "avg_latency_ms": _avg(s.latency_ms_total, s.requests),
    }


class SeriesPublic(BaseModel):
    by: Literal["partner", "key", "customer", "model"]
    id: str | None
    granularity: Granularity
    start: datetime = Field(description="The first bucket's start.")
    end: datetime = Field(description="The end of the period (exclusive).")
    points: list[SeriesPoint]


class CustomerSeriesPublic(BaseModel):
    key_id: str | None
    granularity: Granularity
    start: datetime
    end: datetime
    points: list[CustomerSeriesPoint]


# -- the request log ------------------------------------------------------------------


class CustomerRequestPublic(BaseModel):
    request_id: str
    time: datetime
    time_ms: int
    key_id: str
    model: str
    input_tokens: int
    output_tokens: int
    ai_credits_uai: int
    ai_credits: str
    source: Source = Field(description="Token counts reported by the provider, or estimated by the gateway.")
    outcome: Outcome
    latency_ms: int
    stream: bool

    @classmethod
    def of(cls, r: Any) -> CustomerRequestPublic:
        return cls(**_customer_row(r))


class RequestPublic(CustomerRequestPublic):
    customer_id: str | None
    cost_ucr: int
    cost_credits: str
    ai_credit_price_cents: str | None = Field(description="The price per AI credit the customer was billed at.")
    price_book_version: str

    @classmethod
    def of(cls, r: Any) -> RequestPublic:
        return cls(
            **_customer_row(r),
            customer_id=r.customer_id or None,
            cost_ucr=r.cost_ucr,
            cost_credits=credits(r.cost_ucr),
            ai_credit_price_cents=r.ai_credit_cents or None,
            price_book_version=r.price_book_version,
        )


def _customer_row(r: Any) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "time": utc(r.time_ms),
        "time_ms": r.time_ms,
        "key_id": r.key_id,
        "model": r.model,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "ai_credits_uai": r.customer_charged_uai,
        "ai_credits": ai_credits(r.customer_charged_uai),
        "source": r.source,
        "outcome": r.outcome,
        "latency_ms": r.latency_ms,
        "stream": bool(r.stream),
    }


# -- profit ---------------------------------------------------------------------------


class ProfitRow(BaseModel):
    id: str | None = Field(description="The customer, key or model (null in the total).")
    requests: int
    input_tokens: int
    output_tokens: int
    ai_credits_uai: int
    ai_credits: str
    revenue_ucr: int
    revenue_credits: str
    revenue_usd: str
    cost_ucr: int
    cost_credits: str
    cost_usd: str
    margin_ucr: int
    margin_credits: str
    margin_usd: str
    margin_pct: str | None = Field(description="margin / revenue × 100, 2 places; null without revenue.")

    @classmethod
    def of(cls, p: Profit) -> ProfitRow:
        s = p.sums
        return cls(
            id=p.id or None,
            requests=s.requests,
            input_tokens=s.input_tokens,
            output_tokens=s.output_tokens,
            ai_credits_uai=s.customer_charged_uai,
            ai_credits=ai_credits(s.customer_charged_uai),
            revenue_ucr=p.revenue_ucr,
            revenue_credits=credits(p.revenue_ucr),
            revenue_usd=usd(p.revenue_ucr),
            cost_ucr=p.cost_ucr,
            cost_credits=credits(p.cost_ucr),
            cost_usd=usd(p.cost_ucr),
            margin_ucr=p.margin_ucr,
            margin_credits=credits(p.margin_ucr),
            margin_usd=usd(p.margin_ucr),
            margin_pct=None if p.margin_pct is None else f"{p.margin_pct:f}",
        )


class ProfitPublic(BaseModel):
    by: Literal["customer", "key", "model"]
    start: datetime
    end: datetime
    rows: list[ProfitRow]
    total: ProfitRow


# -- runway ---------------------------------------------------------------------------


class RunwayPublic(BaseModel):
    key_id: str
    event: Literal["auto_topup", "exhausted"] | None = Field(
        description="What happens first at the recent rate: auto top-up fires, or the budget runs out."
    )
    at: datetime | None
    at_ms: int | None
    in_days: str | None = Field(description='Days from now, 1 place ("in ~N days").')
    reason: str | None = Field(
        description="Why there is no event: pay_as_you_go, revoked, suspended, expired, exhausted, no_recent_usage."
    )
    settled_remaining_ucr: int
    settled_remaining_credits: str
    line_ucr: int | None = Field(description="The auto top-up threshold or the cheapest request: the event's line.")
    spent_ucr: int = Field(description="Settled spend in the look-back window.")
    window_hours: str
    rate_ucr_per_day: int
    rate_credits_per_day: str

    @classmethod
    def of(cls, r: Runway) -> RunwayPublic:
        return cls(
            key_id=r.key_id,
            event=r.event,
            at=None if r.at_ms is None else utc(r.at_ms),
            at_ms=r.at_ms,
            in_days=None if r.in_days is None else f"{r.in_days:f}",
            reason=r.reason,
            settled_remaining_ucr=r.settled_remaining_ucr,
            settled_remaining_credits=credits(r.settled_remaining_ucr),
            line_ucr=r.line_ucr,
            spent_ucr=r.spent_ucr,
            window_hours=f"{(Decimal(r.window_ms) / 3_600_000).quantize(Decimal('0.01')):f}",
            rate_ucr_per_day=r.rate_ucr_per_day,
            rate_credits_per_day=credits(r.rate_ucr_per_day),
        )
