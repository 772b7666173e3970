"""Tables of the keys database."""

from __future__ import annotations

import time

from sqlmodel import JSON, BigInteger, Column, Field, SQLModel


def _now() -> int:
    return int(time.time())


class Partner(SQLModel, table=True):
    __tablename__ = "partners"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    tier: str = Field(max_length=32)
    external_ref: str | None = Field(default=None, max_length=200, unique=True)
    status: str = Field(default="active", max_length=16)
    # customer self-service
    ss_enabled: bool = False
    ss_apply_to_new: bool = False
    ss_profit_multiplier: str = Field(default="1.5", max_length=40)
    ss_ai_credit_cents: str = Field(default="1", max_length=40)
    created_at: int = Field(default_factory=_now)


class Customer(SQLModel, table=True):
    __tablename__ = "customers"

    id: str = Field(primary_key=True, max_length=64)
    partner_id: str = Field(foreign_key="partners.id", index=True, max_length=64)
    name: str = Field(max_length=200)
    ai_credits_enabled: bool = False
    # The per-customer AI Gateway menu toggle (one of the three conditions: see visibility)
    ai_gateway_menu_enabled: bool = False
    api_access_enabled: bool = False
    # The caller's idempotency key of CreateCustomer (unique per partner), if it gave one
    idempotency_key: str | None = Field(default=None, max_length=80)
    created_at: int = Field(default_factory=_now)


class VirtualKey(SQLModel, table=True):
    __tablename__ = "virtual_keys"

    id: str = Field(primary_key=True, max_length=64)
    partner_id: str = Field(foreign_key="partners.id", index=True, max_length=64)
    name: str = Field(max_length=200)
    description: str = Field(default="", max_length=2000)
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    # provisioning -> active | failed; then suspended, exhausted, revoked (expired is derived)
    status: str = Field(default="provisioning", max_length=16)
    # why a suspended key is suspended (transitions.Suspension: by_partner | deposit_line), "" otherwise
    suspension: str = Field(default="", max_length=16)
    # people's words about the status (a suspension's note, "budget spent", ...), for display
    status_reason: str = Field(default="", max_length=200)
    # partner (funded budget) | customer (pay-as-you-go, deposit held)
    kind: str = Field(default="partner", max_length=16)
    owner_customer_id: str | None = Field(default=None, max_length=64, index=True)
    allowed_models: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    allowed_domains: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    budget_account: str = Field(max_length=80)
    billing_customer_id: str | None = Field(default=None, max_length=64)
    profit_multiplier: str = Field(default="", max_length=40)
    price_per_ai_credit_cents: str = Field(default="", max_length=40)
    floor_usd_per_mtok: str = Field(default="", max_length=40)
    auto_topup_enabled: bool = False
    auto_topup_threshold_usd: str = Field(default="", max_length=40)
    auto_topup_amount_usd: str = Field(default="", max_length=40)
    auto_topup_error: str = Field(default="", max_length=200)
    auto_topup_error_at: int = 0
    rpm_limit: int = 0
    tpm_limit: int = 0
    expires_at: int = 0
    funded_ucr: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    refunded_ucr: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    last_used_at: int = 0
    idempotency_key: str | None = Field(default=None, max_length=120)
    # revoke: money returned to the partner (refund or deposit release) is done
    settled_on_revoke: bool = False
    created_at: int = Field(default_factory=_now)


class KeyFunding(SQLModel, table=True):
    """One row per ledger funding of a key (create or top-up), keyed by the ledger's
    idempotency id: a retried top-up adds to ``funded_ucr`` once."""

    __tablename__ = "key_fundings"

    idempotency_id: str = Field(primary_key=True, max_length=160)
    key_id: str = Field(foreign_key="virtual_keys.id", index=True, max_length=64)
    amount_ucr: int = Field(sa_column=Column(BigInteger, nullable=False))
    fee_ucr: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: int = Field(default_factory=_now)


class KeyRotation(SQLModel, table=True):
    """One row per regeneration, keyed by the caller's idempotency key: a retried
    RegenerateKey finds its row and rotates nothing again (the first new secret stays)."""

    __tablename__ = "key_rotations"

    key_id: str = Field(foreign_key="virtual_keys.id", primary_key=True, max_length=64)
    idempotency_key: str = Field(primary_key=True, max_length=80)
    created_at: int = Field(default_factory=_now)
