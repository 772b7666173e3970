"""Pricing: the only module that turns tokens and prices into money.

Units: catalog prices are USD per 1M tokens (``Decimal``); ledger amounts are integer
micro-credits (``ucr``). 100 credits = $1, 1 credit = 1,000,000 ucr, so $1 = 10^8 ucr
and one token at ``p`` USD per 1M tokens costs ``p * 100`` ucr. Each charge is
computed exactly and rounded **up** once, to the next whole micro-credit.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_CEILING, Decimal

UCR_PER_CREDIT = 1_000_000
CREDITS_PER_USD = 100
UCR_PER_USD = UCR_PER_CREDIT * CREDITS_PER_USD
TOKENS_PER_MTOK = 1_000_000
MAX_UCR = 2**63 - 1  # what an int64 column and proto field hold

_CTX = decimal.Context(prec=60, rounding=ROUND_CEILING)


def round_up_ucr(amount_ucr: Decimal) -> int:
    """The one rounding rule: up to the next whole micro-credit."""
    return int(amount_ucr.to_integral_value(rounding=ROUND_CEILING, context=_CTX))


def usd_to_ucr(usd: Decimal) -> int:
    return round_up_ucr(_CTX.multiply(usd, UCR_PER_USD))


def provider_cost_ucr(
    input_tokens: int,
    output_tokens: int,
    input_usd_per_mtok: Decimal,
    output_usd_per_mtok: Decimal,
) -> int:
    """input_tokens x input price + output_tokens x output price, in ucr, rounded up."""
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts must be non-negative")
    usd_times_mtok = _CTX.add(
        _CTX.multiply(Decimal(input_tokens), input_usd_per_mtok),
        _CTX.multiply(Decimal(output_tokens), output_usd_per_mtok),
    )
    return round_up_ucr(_CTX.divide(_CTX.multiply(usd_times_mtok, UCR_PER_USD), TOKENS_PER_MTOK))


def parse_price(raw: str, field: str) -> Decimal:
    """A catalog price from its decimal string; refuses floats' friends (nan, inf, <0)."""
    try:
        value = Decimal(raw)
    except decimal.InvalidOperation as e:
        raise ValueError(f"{field}: not a decimal number") from e
    if not value.is_finite() or value < 0:
        raise ValueError(f"{field}: must be a non-negative number")
    return value
