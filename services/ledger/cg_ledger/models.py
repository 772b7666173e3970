"""Tables of the ledger database.

Accounts have TigerBeetle's four counters, of which three are used: holds are pending
debits only (a hold credits nothing until it is posted), so ``credits_pending`` stays 0
(the audit checks it). ``posted balance = credits_posted - debits_posted``;
``available = posted balance - debits_pending``. An account with
``debits_must_not_exceed_credits`` can never have ``debits_pending + debits_posted >
credits_posted``. Every counter and amount is an integer within int64 (a CHECK on
SQLite, BIGINT on PostgreSQL: migration 0004). A closed account (a revoked key) names in
``closed_to`` where what its holds release goes. Transfers are immutable and carry a
permanent idempotency id.
"""

from __future__ import annotations

import time

from sqlmodel import BigInteger, Column, Field, SQLModel


def _now_ms() -> int:
    return int(time.time() * 1000)


def _amount() -> Column:
    return Column(BigInteger, nullable=False, default=0)


class Account(SQLModel, table=True):
    __tablename__ = "accounts"

    id: str = Field(primary_key=True, max_length=80)
    kind: str = Field(max_length=16)
    unit: str = Field(default="credits", max_length=16)
    debits_must_not_exceed_credits: bool = True
    debits_pending: int = Field(default=0, sa_column=_amount())
    debits_posted: int = Field(default=0, sa_column=_amount())
    credits_pending: int = Field(default=0, sa_column=_amount())
    credits_posted: int = Field(default=0, sa_column=_amount())
    # "" while open; partner:<id> once closed (RefundKey): its releases are moved there.
    closed_to: str = Field(default="", max_length=80)
    created_at_ms: int = Field(default_factory=_now_ms, sa_column=Column(BigInteger, nullable=False))


# Transfer kinds that move money (the counters are their sums); the others record holds.
POSTED_KINDS = ("deposit", "grant", "transfer", "fund", "fee", "refund", "hold_deposit", "release_deposit", "post")
HOLD_KINDS = ("pending", "void", "expire")


class Transfer(SQLModel, table=True):
    __tablename__ = "transfers"

    id: int | None = Field(default=None, primary_key=True)
    # a caller's (at most 120 characters) or one the ledger derives from it (limits)
    idempotency_id: str = Field(unique=True, max_length=160)
    # posted movements: deposit | grant | transfer | fund | fee | refund | hold_deposit |
    # release_deposit | post; records of holds: pending | void | expire
    kind: str = Field(max_length=16)
    # ok, or why it failed (insufficient_funds): a failed outcome is stored too, so a
    # replay of the idempotency id fails the same way; it moved no money.
    outcome: str = Field(default="ok", max_length=24)
    debit_account: str = Field(max_length=80, index=True)
    credit_account: str = Field(max_length=80, index=True)
    amount_ucr: int = Field(sa_column=_amount())
    request_id: str | None = Field(default=None, max_length=120)
    memo: str = Field(default="", max_length=200)
    created_at_ms: int = Field(default_factory=_now_ms, sa_column=Column(BigInteger, nullable=False))


class Reservation(SQLModel, table=True):
    __tablename__ = "reservations"

    request_id: str = Field(primary_key=True, max_length=120)
    account: str = Field(max_length=80, index=True)
    credit_account: str = Field(max_length=80)
    model: str = Field(max_length=120)
    input_usd_per_mtok: str = Field(max_length=40)
    output_usd_per_mtok: str = Field(max_length=40)
    price_book_version: str = Field(max_length=60)
    held_ucr: int = Field(sa_column=_amount())
    customer_account: str = Field(default="", max_length=80)
    revenue_account: str = Field(default="", max_length=80)
    profit_multiplier: str = Field(default="", max_length=40)
    price_per_ai_credit_cents: str = Field(default="", max_length=40)
    floor_usd_per_mtok: str = Field(default="", max_length=40)
    customer_held_uai: int = Field(default=0, sa_column=_amount())
    customer_charged_uai: int = Field(default=0, sa_column=_amount())
    customer_unpaid_uai: int = Field(default=0, sa_column=_amount())
    input_tokens: int = Field(default=0, sa_column=_amount())
    output_tokens: int = Field(default=0, sa_column=_amount())
    # pending | posted | voided | expired
    status: str = Field(default="pending", max_length=16, index=True)
    charged_ucr: int = Field(default=0, sa_column=_amount())
    unpaid_ucr: int = Field(default=0, sa_column=_amount())
    usage_source: str = Field(default="", max_length=16)
    expires_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at_ms: int = Field(default_factory=_now_ms, sa_column=Column(BigInteger, nullable=False))
    # The key whose rate-limit window this reservation counts in ("" when unlimited).
    rate_key: str = Field(default="", max_length=80)
    # request | lease (``leases``: a proxy worker's hold on a payer, reserved against locally;
    # its held_ucr / customer_held_uai are what it holds now; status pending while open, then
    # closed or expired)
    kind: str = Field(default="request", max_length=8)
    # For a request settled from a lease: the lease's id ("" otherwise).
    lease_id: str = Field(default="", max_length=120)


class RateSlot(SQLModel, table=True):
    """Request slots granted with a lease (``ratelimits``): ``requests`` the lease's proxy
    may start until ``end_ms``, counted in the key's window until then."""

    __tablename__ = "rate_slots"

    # the lease's id (acquire) or the extension's id (extend): one grant per call
    grant_id: str = Field(primary_key=True, max_length=120)
    rate_key: str = Field(max_length=80)
    lease_id: str = Field(max_length=120, index=True)
    requests: int = Field(sa_column=Column(BigInteger, nullable=False))
    end_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
