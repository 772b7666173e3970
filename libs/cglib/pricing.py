"""Pricing: the only module that turns tokens and prices into money.

Units: catalog prices are USD per 1M tokens (``Decimal``); ledger amounts are integer
micro-credits (``ucr``). 100 credits = $1, 1 credit = 1,000,000 ucr, so $1 = 10^8 ucr
and one token at ``p`` USD per 1M tokens costs ``p * 100`` ucr. Customer AI credits
are kept in millionths too (``uai``). Every amount is computed exactly in ``Decimal``
and rounded **up** once, to the next whole millionth, at the end:

    provider_usd = input_tokens * input_price / 1M + output_tokens * output_price / 1M
    customer_usd = max(provider_usd * profit_multiplier, floor_usd_per_mtok * total_tokens / 1M)
    ai_credits   = customer_usd / (price_per_ai_credit_cents / 100)
    platform_fee = budget * fee_rate

The arithmetic context stops at 10^41 (``Emax``): far above any amount the ledger
accepts (``limits.MAX_AMOUNT`` = 10^15), and low enough that a price like ``1e999980``
fails at once with ``decimal.Overflow`` instead of building a million-digit integer
(which took ~40 s of CPU when it was allowed). Callers turn that into ``OutOfRange``.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from cglib.money import UAI_PER_AI_CREDIT, UCR_PER_USD

TOKENS_PER_MTOK = 1_000_000
CENTS_PER_USD = 100

_CTX = decimal.Context(prec=60, rounding=ROUND_CEILING, Emax=40)


def round_up_ucr(amount_ucr: Decimal) -> int:
    """The one rounding rule: up to the next whole micro-credit."""
    if amount_ucr.is_finite() and amount_ucr.adjusted() > _CTX.Emax:
        raise decimal.Overflow(f"{amount_ucr:.3e} is beyond the pricing context")
    return int(amount_ucr.to_integral_value(rounding=ROUND_CEILING, context=_CTX))


def usd_to_ucr(usd: Decimal) -> int:
    return round_up_ucr(_CTX.multiply(usd, UCR_PER_USD))


def provider_cost_usd(
    input_tokens: int, output_tokens: int, input_usd_per_mtok: Decimal, output_usd_per_mtok: Decimal
) -> Decimal:
    """The exact provider cost in USD (not rounded)."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts must be non-negative")
    usd_times_mtok = _CTX.add(
        _CTX.multiply(Decimal(input_tokens), input_usd_per_mtok),
        _CTX.multiply(Decimal(output_tokens), output_usd_per_mtok),
    )
    return _CTX.divide(usd_times_mtok, TOKENS_PER_MTOK)


def provider_cost_ucr(
    input_tokens: int,
    output_tokens: int,
    input_usd_per_mtok: Decimal,
    output_usd_per_mtok: Decimal,
) -> int:
    """input_tokens x input price + output_tokens x output price, in ucr, rounded up."""
    return usd_to_ucr(provider_cost_usd(input_tokens, output_tokens, input_usd_per_mtok, output_usd_per_mtok))


@dataclass(frozen=True)
class CustomerBilling:
    """How a customer is charged for a key's usage, in the partner's AI credits."""

    profit_multiplier: Decimal
    price_per_ai_credit_cents: Decimal
    floor_usd_per_mtok: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if not self.profit_multiplier.is_finite() or self.profit_multiplier <= 0:
            raise ValueError("profit_multiplier: must be greater than zero")
        if not self.price_per_ai_credit_cents.is_finite() or self.price_per_ai_credit_cents <= 0:
            raise ValueError("price_per_ai_credit_cents: must be greater than zero")
        if not self.floor_usd_per_mtok.is_finite() or self.floor_usd_per_mtok < 0:
            raise ValueError("floor_usd_per_mtok: must be zero or more")


def customer_price_usd(provider_usd: Decimal, total_tokens: int, billing: CustomerBilling) -> Decimal:
    marked_up = _CTX.multiply(provider_usd, billing.profit_multiplier)
    floor = _CTX.divide(_CTX.multiply(billing.floor_usd_per_mtok, Decimal(total_tokens)), TOKENS_PER_MTOK)
    return max(marked_up, floor)


def ai_credits_uai(customer_usd: Decimal, billing: CustomerBilling) -> int:
    """Millionths of an AI credit for a customer price in USD, rounded up."""
    usd_per_ai_credit = _CTX.divide(billing.price_per_ai_credit_cents, CENTS_PER_USD)
    return round_up_ucr(_CTX.multiply(_CTX.divide(customer_usd, usd_per_ai_credit), UAI_PER_AI_CREDIT))


def platform_fee_ucr(budget_ucr: int, fee_rate: Decimal) -> int:
    """The tier's platform fee on funding a key: ``budget x rate``, rounded up."""
    if not fee_rate.is_finite() or fee_rate < 0 or fee_rate > 1:
        raise ValueError("fee_rate: must be between 0 and 1")
    return round_up_ucr(_CTX.multiply(Decimal(budget_ucr), fee_rate))


@dataclass(frozen=True)
class Quote:
    provider_cost_ucr: int
    customer_price_ucr: int  # the customer's price in credits (0 without billing)
    customer_price_uai: int  # ... and in the partner's AI credits
    partner_margin_ucr: int  # customer price - provider cost, in credits


def quote(
    input_tokens: int,
    output_tokens: int,
    input_usd_per_mtok: Decimal,
    output_usd_per_mtok: Decimal,
    billing: CustomerBilling | None,
) -> Quote:
    provider_usd = provider_cost_usd(input_tokens, output_tokens, input_usd_per_mtok, output_usd_per_mtok)
    provider_ucr = usd_to_ucr(provider_usd)
    if billing is None:
        return Quote(provider_ucr, 0, 0, 0)
    customer_usd = customer_price_usd(provider_usd, input_tokens + output_tokens, billing)
    customer_ucr = usd_to_ucr(customer_usd)
    return Quote(provider_ucr, customer_ucr, ai_credits_uai(customer_usd, billing), customer_ucr - provider_ucr)


def parse_price(raw: str, field: str) -> Decimal:
    """A decimal from its string; refuses nan, inf and negatives."""
    try:
        value = Decimal(raw)
    except decimal.InvalidOperation as e:
        raise ValueError(f"{field}: not a decimal number") from e
    if not value.is_finite() or value < 0:
        raise ValueError(f"{field}: must be a non-negative number")
    return value
