"""The units money is counted in, in one place.

Ledger amounts are integers in micro-credits (``ucr``): 100 credits = $1, so $1 = 10^8 ucr.
A customer's AI credits are kept in millionths too (``uai``). Rates and prices are
``Decimal``; only the ledger's ``pricing`` turns them into amounts (rounding up, once).
"""

from __future__ import annotations

UCR_PER_CREDIT = 1_000_000
CREDITS_PER_USD = 100
UCR_PER_USD = UCR_PER_CREDIT * CREDITS_PER_USD
UAI_PER_AI_CREDIT = 1_000_000

# The deposit a customer-created key holds from its partner, and the line below which a
# partner's customer-created keys are suspended (the product's "1,000 credits").
KEY_DEPOSIT_CREDITS = 1_000

__all__ = ["CREDITS_PER_USD", "KEY_DEPOSIT_CREDITS", "UAI_PER_AI_CREDIT", "UCR_PER_CREDIT", "UCR_PER_USD"]
