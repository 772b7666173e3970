"""Where money comes into a partner's balance: the payment hook.

Today a platform admin records a payment it received (``POST
/admin/partners/{id}/deposits``): ``ManualPayments`` confirms it as declared, and the
ledger deposits the credits under ``bff:<partner>:deposit:<Idempotency-Key>``, so a
retried request deposits once.

A payment provider plugs in HERE: implement ``PaymentProvider.confirm`` (look the
payment up by its reference — a Stripe PaymentIntent, an invoice — check it succeeded,
that its amount and currency cover the credits, and that it was not already used) and
set it as ``state.extras["payments"]`` in the app's lifespan. A provider's webhook (a
"payment succeeded" event) would call the same ``deposit`` with the payment's id as the
idempotency key. Nothing else changes: the deposit route and the ledger call stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cg_bff import errors
from cg_bff.state import BffState


@dataclass(frozen=True)
class Payment:
    partner_id: str
    amount_ucr: int
    reference: str  # the payment's id at its provider ("" for a manual deposit)


class PaymentProvider(Protocol):
    name: str

    async def confirm(self, payment: Payment) -> None:
        """Returns when the payment is confirmed; raises ``ApiError`` (402
        ``payment_not_confirmed``, or 503) when it is not."""
        ...


class ManualPayments:
    """The platform admin's word: a payment received outside the platform."""

    name = "manual"

    async def confirm(self, payment: Payment) -> None:
        return None


def provider(state: BffState) -> PaymentProvider:
    found = state.extras.get("payments")
    return found if found is not None else ManualPayments()


def payment_refused(message: str) -> errors.ApiError:
    return errors.ApiError(402, "payment_not_confirmed", message)
