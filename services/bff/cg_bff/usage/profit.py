"""Profit of customer-billed usage: what a partner's customers paid it, what the
providers cost it, and the margin, per customer, key or model over a period.

Definitions (a request is *customer-billed* when its event names a customer, i.e. its
key bills the customer's AI credits):

    revenue_ucr = floor( Σ customer_charged_uai × price_per_ai_credit_cents )
    cost_ucr    = Σ cost_ucr                      (the provider cost the ledger charged)
    margin_ucr  = revenue_ucr - cost_ucr
    margin_pct  = margin_ucr / revenue_ucr × 100  (2 places, half-even; null at 0 revenue)

Each request's AI credits are valued at the price per AI credit it was billed at (the
proxy puts the key's terms in the usage event, the read model keeps them per request and
in the aggregates' grain), so changing the price later does not revalue the past. 1 µai
at c cents per AI credit is exactly c µcr (1 AI credit at c cents = c/100 USD = c
credits); the sum is exact, and rounded down to a whole µcr once per row and once for
the total (revenue is never overstated). Only what the customer was actually charged
counts (``customer_charged_uai``: AI credits the customer did not have are not revenue).
The period is whole UTC hours (``queries.series``' rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from cg_bff.models.usage import HOUR_MS, HOURLY
from cg_bff.usage.queries import Period, Scope, Sums, add_row, grouped_sums, scoped
from cglib.db import READ

ProfitBy = Literal["customer", "key", "model"]
_COLUMN = {"customer": "customer_id", "key": "key_id", "model": "model"}


@dataclass
class Profit:
    id: str  # the customer, key or model ("" for the total)
    sums: Sums = field(default_factory=Sums)

    @property
    def revenue_ucr(self) -> int:
        return int(self.sums.revenue_ucr_exact.to_integral_value(ROUND_FLOOR))

    @property
    def cost_ucr(self) -> int:
        return self.sums.billed_cost_ucr

    @property
    def margin_ucr(self) -> int:
        return self.revenue_ucr - self.cost_ucr

    @property
    def margin_pct(self) -> Decimal | None:
        if self.revenue_ucr == 0:
            return None
        return (Decimal(self.margin_ucr) * 100 / Decimal(self.revenue_ucr)).quantize(
            Decimal("0.01"), rounding=ROUND_HALF_EVEN
        )


async def profit(engine: AsyncEngine, partner_id: str, by: ProfitBy, period: Period) -> tuple[list[Profit], Profit]:
    """Rows per ``by`` (highest revenue first) and the total, of customer-billed usage."""
    column = HOURLY.c[_COLUMN[by]]
    first = period.start_ms - period.start_ms % HOUR_MS
    q = scoped(grouped_sums(column.label("subject")), HOURLY, Scope(partner_id))
    q = q.where(HOURLY.c.customer_id != "", HOURLY.c.hour_ms >= first, HOURLY.c.hour_ms < period.end_ms)
    async with engine.connect() as conn:
        await conn.execution_options(**READ)
        rows = (await conn.execute(q)).all()
    by_subject: dict[str, Profit] = {}
    total = Profit("")
    for row in rows:
        add_row(by_subject.setdefault(row.subject, Profit(row.subject)).sums, row)
        add_row(total.sums, row)
    ordered = sorted(by_subject.values(), key=lambda p: (-p.revenue_ucr, p.id))
    return ordered, total
