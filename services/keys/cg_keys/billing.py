"""The terms a key's usage is billed to a customer at: one function, used by every read
of a key and by AuthenticateKey (which hands them to the proxy), so what a partner
reads is what applies.

- A partner key billed to a customer: the terms stored on the key (profit multiplier,
  price per AI credit, optional cost floor).
- A customer-created key: pay-as-you-go at the partner's *current* self-service
  terms (default profit multiplier and AI-credit price), never a floor; a change of
  those settings applies to the key's next request, and its reads show it at once.
- Otherwise no customer is billed (``None``).

``ledger_terms`` is what the proxy hands the ledger with each reservation: the account
that pays the provider cost and, when a customer is billed, the customer's AI-credit
account, the partner's revenue account and the terms.
"""

from __future__ import annotations

from dataclasses import dataclass

from cg_keys.funding import customer_account, revenue_account
from cg_keys.models import Partner, VirtualKey


@dataclass(frozen=True)
class CustomerTerms:
    customer_id: str
    # decimal strings, as stored and as the ledger reads them
    profit_multiplier: str
    price_per_ai_credit_cents: str
    floor_usd_per_mtok: str  # "" = no floor


def effective_terms(key: VirtualKey, partner: Partner) -> CustomerTerms | None:
    if not key.billing_customer_id:
        return None
    if key.kind == "customer":
        return CustomerTerms(key.billing_customer_id, partner.ss_profit_multiplier, partner.ss_ai_credit_cents, "")
    return CustomerTerms(
        key.billing_customer_id, key.profit_multiplier, key.price_per_ai_credit_cents, key.floor_usd_per_mtok
    )


@dataclass(frozen=True)
class LedgerTerms:
    payer_account: str
    customer: CustomerTerms | None
    customer_account: str = ""
    revenue_account: str = ""


def ledger_terms(key: VirtualKey, partner: Partner) -> LedgerTerms:
    """The very terms a read of the key shows (``effective_terms``), with their accounts."""
    terms = effective_terms(key, partner)
    if terms is None:
        return LedgerTerms(key.budget_account, None)
    return LedgerTerms(key.budget_account, terms, customer_account(terms.customer_id), revenue_account(key.partner_id))
