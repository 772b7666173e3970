"""A partner key's budget as a partner reads it, and when it is exhausted.

From the key's ledger account (``key:<id>``) and what keys records:

    funded             = the budget put in (create + top-ups), recorded by keys
    refunded           = what went back to the partner. Once the ledger reports the
                         account closed (a revoked key), its own running total: the
                         refund at revoke plus every later release of a hold that was in
                         flight then. Before that, keys' record of the refund.
    settled_remaining  = the posted balance: in-flight holds left out
    reserved           = what in-flight holds hold
    remaining          = settled_remaining - reserved: what new requests can use
    spent              = funded - refunded - settled_remaining

So ``spent`` stays true while in-flight requests settle after a revoke: each settlement
moves its cost out of the account and its rest to the partner.

**Exhausted** is defined by what the next request needs, never a flat figure: a key
is exhausted when its settled remaining is below the cheapest request it can make,
1 input and 1 output token on the cheapest model it may call, priced as the ledger
prices (USD per 1M tokens x 100 ucr per token, rounded up). Holds are left out so an
in-flight request never exhausts a key it will not empty; a request the key cannot
afford right now is refused by the ledger's reservation instead (429 at the proxy).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_CEILING

from cg_keys.catalog import Catalog
from cg_keys.models import VirtualKey
from creditgate.ledger.v1 import ledger_pb2

UCR_PER_TOKEN_AT_ONE_USD_PER_MTOK = 100  # $1 per 1M tokens = 10^8 ucr / 10^6 tokens


@dataclass(frozen=True)
class Spend:
    spent_ucr: int
    reserved_ucr: int
    remaining_ucr: int
    settled_remaining_ucr: int


def spend(key: VirtualKey, balance: ledger_pb2.Balance) -> Spend:
    """``balance``: the ledger's ``Balance`` of the key's account."""
    refunded = balance.refunded_ucr if balance.closed_to else key.refunded_ucr
    settled = balance.posted_ucr
    return Spend(
        spent_ucr=max(key.funded_ucr - refunded - settled, 0),
        reserved_ucr=balance.pending_ucr,
        remaining_ucr=balance.available_ucr,
        settled_remaining_ucr=settled,
    )


def key_spend(key: VirtualKey, balance: ledger_pb2.Balance | None) -> Spend | None:
    """A partner key's spend; None for a customer-created key (it has no budget of its
    own) or when the ledger has no account for it."""
    if balance is None or key.kind != "partner":
        return None
    return spend(key, balance)


def min_request_ucr(catalog: Catalog, tier: str, model_ids: Iterable[str]) -> int:
    """The cheapest request a key allowed ``model_ids`` can make on ``tier``; 0 when it
    can call no model at all (then there is nothing it could afford or not)."""
    prices = [m.input_usd_per_mtok + m.output_usd_per_mtok for m in catalog.usable(tier, model_ids)]
    if not prices:
        return 0
    cheapest = min(prices) * UCR_PER_TOKEN_AT_ONE_USD_PER_MTOK
    return int(cheapest.to_integral_value(rounding=ROUND_CEILING))


def is_exhausted(settled_remaining_ucr: int, min_request: int) -> bool:
    return settled_remaining_ucr < min_request
