"""What a reservation holds and charges: customer billing terms, token bounds, costs.

A hold or a charge is priced from tokens (``pricing``) and is one amount like any
other: at most ``MAX_AMOUNT`` (``OutOfRange`` above it, nothing written). Prices and
terms are decimals the reservation stores as text (``limits``).
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal

from cg_ledger import accounts
from cg_ledger.errors import InvalidArgument, OutOfRange
from cg_ledger.limits import check_bound, decimal_or_invalid
from cglib.pricing import CustomerBilling, ai_credits_uai, customer_price_usd, provider_cost_usd, usd_to_ucr

MAX_TOKENS = 10**12


@dataclass(frozen=True)
class Billing:
    customer_account: str
    revenue_account: str
    terms: CustomerBilling


def parse_billing(customer_account: str, revenue_account: str, multiplier: str, cents: str, floor: str) -> Billing:
    customer = accounts.parse(customer_account, "customer.customer_account", kinds={"customer"})
    revenue = accounts.parse(revenue_account, "customer.revenue_account", kinds={"partnerrev"})
    try:
        terms = CustomerBilling(
            decimal_or_invalid(multiplier, "customer.profit_multiplier"),
            decimal_or_invalid(cents, "customer.price_per_ai_credit_cents"),
            decimal_or_invalid(floor, "customer.floor_usd_per_mtok", default="0"),
        )
    except ValueError as e:
        raise InvalidArgument(f"customer.{e}") from e
    return Billing(customer.id, revenue.id, terms)


def billing_of(r) -> Billing | None:
    """The billing a stored reservation row was made with (None: not billed to a customer)."""
    if not r.customer_account:
        return None
    return Billing(
        r.customer_account,
        r.revenue_account,
        CustomerBilling(
            Decimal(r.profit_multiplier), Decimal(r.price_per_ai_credit_cents), Decimal(r.floor_usd_per_mtok)
        ),
    )


def tokens(value: int, field: str) -> int:
    if value < 0 or value > MAX_TOKENS:
        raise InvalidArgument(f"{field}: between 0 and {MAX_TOKENS}")
    return value


def costs(
    r_in: str, r_out: str, billing: Billing | None, input_tokens: int, output_tokens: int, what: str = "charge"
) -> tuple[int, int]:
    """(provider cost in ucr, customer price in uai) for these token counts, each at most
    ``MAX_AMOUNT``. A decimal too large for the arithmetic is out of range as well."""
    try:
        usd = provider_cost_usd(input_tokens, output_tokens, Decimal(r_in), Decimal(r_out))
        ucr = check_bound(usd_to_ucr(usd), f"{what} (ucr)")
        uai = 0
        if billing is not None:
            price = customer_price_usd(usd, input_tokens + output_tokens, billing.terms)
            uai = check_bound(ai_credits_uai(price, billing.terms), f"customer {what} (uai)")
    except decimal.DecimalException as e:
        raise OutOfRange(f"{what}: too large to price ({type(e).__name__})") from e
    return ucr, uai
