"""AI Gateway keys as the partner's API shows them: every field of the Create Key modal,
the keys table (budget vs spend, last used) and the expanded row (reserved, used,
remaining, billing terms, rate limits, expiry, auto top-up)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from cg_bff.schemas.common import NO_NUL, ObjectId
from cg_bff.schemas.money import Credits, WholeCredits, at
from creditgate.keys.v1 import keys_pb2 as pb

KeyStatus = Literal["active", "suspended", "exhausted", "expired", "revoked"]
Suspension = Literal["by_partner", "deposit_line"]
STATUS_NAMES: dict[int, KeyStatus] = {
    pb.KEY_STATUS_ACTIVE: "active",
    pb.KEY_STATUS_SUSPENDED: "suspended",
    pb.KEY_STATUS_EXHAUSTED: "exhausted",
    pb.KEY_STATUS_EXPIRED: "expired",
    pb.KEY_STATUS_REVOKED: "revoked",
}
SUSPENSION_NAMES: dict[int, Suspension] = {
    pb.SUSPENSION_REASON_BY_PARTNER: "by_partner",
    pb.SUSPENSION_REASON_DEPOSIT_LINE: "deposit_line",
}

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, Field(max_length=2000, pattern=NO_NUL)]
ModelIds = Annotated[list[Annotated[str, Field(min_length=1, max_length=120, pattern=NO_NUL)]], Field(max_length=100)]
Domains = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=253, pattern=NO_NUL)]],
    Field(max_length=100, description="Hosts (app.example.com) or wildcards (*.example.com); empty: any origin."),
]
Rate = Annotated[int, Field(ge=0, le=10_000_000, description="Per minute; 0 = no limit.")]
Multiplier = Annotated[Decimal, Field(gt=0, le=1_000_000, description="A decimal, e.g. 1.5 (50% markup).")]
Cents = Annotated[Decimal, Field(gt=0, le=1_000_000, description="US cents, a decimal.")]
UsdAmount = Annotated[Decimal, Field(ge=0, le=10_000_000, description="US dollars, a decimal.")]


# -- what a partner sends ------------------------------------------------------------------


class KeyBillingIn(BaseModel):
    """Bill the key's usage to one of your customers' AI credits, with your markup."""

    customer_id: ObjectId
    profit_multiplier: Multiplier
    price_per_ai_credit_cents: Cents
    floor_usd_per_mtok: Annotated[
        Decimal | None, Field(ge=0, le=1_000_000, description="Optional minimum price, USD per 1M tokens.")
    ] = None


class AutoTopUpIn(BaseModel):
    enabled: bool = True
    threshold_usd: UsdAmount = Field(description="Top up when the key's settled remaining budget falls below this.")
    amount_usd: Annotated[Decimal, Field(gt=0, le=10_000_000)] = Field(
        description="Budget added each time (plus the fee)."
    )


class KeyCreate(BaseModel):
    """Every field of the Create Key modal. The partner's balance pays ``budget_credits``
    plus the tier's fee (``POST /partner/keys/quote`` shows the total first)."""

    name: Name
    description: Description = ""
    budget_credits: WholeCredits
    allowed_models: Annotated[ModelIds, Field(min_length=1)]
    billing: KeyBillingIn | None = None
    auto_topup: AutoTopUpIn | None = None
    allowed_domains: Domains = []
    rpm_limit: Rate = 0
    tpm_limit: Rate = 0
    expires_at: datetime | None = Field(default=None, description="Null: never.")


class KeyUpdate(BaseModel):
    """Fields to change; those left out stay. ``billing``, ``auto_topup`` and
    ``expires_at`` may be null (no customer billing, no auto top-up, never expires).
    The budget changes only by top-up."""

    name: Name | None = None
    description: Description | None = None
    allowed_models: Annotated[ModelIds, Field(min_length=1)] | None = None
    billing: KeyBillingIn | None = None
    auto_topup: AutoTopUpIn | None = None
    allowed_domains: Domains | None = None
    rpm_limit: Rate | None = None
    tpm_limit: Rate | None = None
    expires_at: datetime | None = None


class KeyQuoteCreate(BaseModel):
    budget_credits: WholeCredits


class TopUpCreate(BaseModel):
    amount_credits: WholeCredits


class KeySuspend(BaseModel):
    note: Annotated[str, Field(max_length=200, pattern=NO_NUL, description="Shown as the key's status_reason.")] = ""


# -- what the API answers ------------------------------------------------------------------


class KeyBillingPublic(BaseModel):
    """The terms the key's usage is billed at (a customer-created key: the partner's
    current self-service multiplier and AI-credit price)."""

    customer_id: str
    profit_multiplier: str
    price_per_ai_credit_cents: str
    floor_usd_per_mtok: str | None


class AutoTopUpPublic(BaseModel):
    enabled: bool
    threshold_usd: str | None
    amount_usd: str | None
    last_error: str | None = Field(description="Why the last automatic top-up failed (null after a success).")
    last_error_at: datetime | None


class RateLimits(BaseModel):
    rpm: int = Field(description="Requests per minute; 0 = no limit.")
    tpm: int = Field(description="Tokens per minute; 0 = no limit.")


class KeyPublic(BaseModel):
    """A key as the keys table shows it. ``budget``, ``spent`` and ``remaining`` are a
    partner key's (null for a customer-created key, which draws on the partner's balance
    and bills the customer's AI credits): budget funded so far (create + top-ups), what
    its requests cost, what new requests can still use."""

    id: str
    name: str
    description: str
    prefix: str = Field(description="The first characters of the secret, for display.")
    status: KeyStatus
    status_reason: str | None
    suspension: Suspension | None
    kind: Literal["partner", "customer"]
    owner_customer_id: str | None = Field(description="The customer that created it (customer-created keys).")
    allowed_models: list[str]
    allowed_domains: list[str]
    rate_limits: RateLimits
    billing: KeyBillingPublic | None
    auto_topup: AutoTopUpPublic
    expires_at: datetime | None
    created_at: datetime | None
    last_used_at: datetime | None
    budget: Credits | None
    spent: Credits | None
    remaining: Credits | None

    @classmethod
    def of(cls, k: pb.Key) -> KeyPublic:
        return cls.model_validate(_key_fields(k))


class KeyDetailPublic(KeyPublic):
    """The expanded row: what the budget holds right now."""

    reserved: Credits | None = Field(description="Held by requests in flight (released or charged as they end).")
    used: Credits | None = Field(description="Charged for settled requests.")
    settled_remaining: Credits | None = Field(
        description="The budget left leaving requests in flight out (what auto top-up compares with its threshold)."
    )
    refunded: Credits | None = Field(
        description="A revoked key: unused budget returned to the partner (the fee is not)."
    )
    min_request: Credits = Field(description="Its cheapest request; with less settled, the key is exhausted.")

    @classmethod
    def of_detail(cls, d: pb.KeyDetail) -> KeyDetailPublic:
        fields: dict[str, Any] = _key_fields(d.key)
        partner_key = d.key.kind == "partner"
        revoked = d.key.status == pb.KEY_STATUS_REVOKED
        if partner_key:  # GetKey's own figures, read with the reserved ones
            fields["spent"], fields["remaining"] = Credits.of(d.used_ucr), Credits.of(d.remaining_ucr)
        refunded = d.key.funded_ucr - d.used_ucr - d.settled_remaining_ucr
        return cls.model_validate(
            dict(
                fields,
                reserved=Credits.of(d.reserved_ucr) if partner_key else None,
                used=Credits.of(d.used_ucr) if partner_key else None,
                settled_remaining=Credits.of(d.settled_remaining_ucr) if partner_key else None,
                refunded=Credits.of(max(refunded, 0)) if partner_key and revoked else None,
                min_request=Credits.of(d.min_request_ucr),
            )
        )


def _key_fields(k: pb.Key) -> dict[str, Any]:
    partner_key = k.kind == "partner"
    billing = None
    if k.HasField("billing") and k.billing.customer_id:
        billing = KeyBillingPublic(
            customer_id=k.billing.customer_id,
            profit_multiplier=k.billing.profit_multiplier,
            price_per_ai_credit_cents=k.billing.price_per_ai_credit_cents,
            floor_usd_per_mtok=k.billing.floor_usd_per_mtok or None,
        )
    t = k.auto_topup
    return dict(
        id=k.id,
        name=k.name,
        description=k.description,
        prefix=k.prefix,
        status=STATUS_NAMES.get(k.status, "active"),
        status_reason=k.status_reason or None,
        suspension=SUSPENSION_NAMES.get(k.suspension) if k.status == pb.KEY_STATUS_SUSPENDED else None,
        kind="customer" if k.kind == "customer" else "partner",
        owner_customer_id=k.owner_customer_id or None,
        allowed_models=list(k.allowed_models),
        allowed_domains=list(k.allowed_domains),
        rate_limits=RateLimits(rpm=k.rpm_limit, tpm=k.tpm_limit),
        billing=billing,
        auto_topup=AutoTopUpPublic(
            enabled=t.enabled,
            threshold_usd=t.threshold_usd or None,
            amount_usd=t.amount_usd or None,
            last_error=t.last_error or None,
            last_error_at=at(t.last_error_unix),
        ),
        expires_at=at(k.expires_at_unix),
        created_at=at(k.created_at_unix),
        last_used_at=at(k.last_used_unix),
        budget=Credits.of(k.funded_ucr) if partner_key else None,
        spent=Credits.of(k.spent_ucr) if partner_key else None,
        remaining=Credits.of(k.remaining_ucr) if partner_key else None,
    )


class KeyQuotePublic(BaseModel):
    """What creating a key with this budget takes from the partner's balance."""

    budget: Credits
    fee: Credits
    total: Credits = Field(description="budget + fee: what the balance must have.")
    fee_rate: str = Field(description='The tier\'s fee on funding, a fraction ("0.05").')


class KeyCreated(BaseModel):
    """A created key, with its secret: shown this once. A retry with the same
    Idempotency-Key answers ``replayed: true`` and no secret (the first one keeps working;
    a lost secret needs a regenerate)."""

    key: KeyDetailPublic
    secret: str | None = Field(description="`sk-cg-...`: copy it now, it is not shown again. Null when replayed.")
    replayed: bool
    total: Credits = Field(description="What the partner's balance paid: budget + fee (a customer key: the deposit).")
    fee: Credits


class KeyRegenerated(BaseModel):
    """The key's new secret (the old one stopped working at once), shown this once."""

    key: KeyDetailPublic
    secret: str | None = Field(description="Null when replayed: this Idempotency-Key's regenerate already happened.")
    replayed: bool


class TopUpPublic(BaseModel):
    key: KeyDetailPublic
    amount: Credits = Field(description="Added to the key's budget.")
    fee: Credits
    total: Credits = Field(description="amount + fee: what the partner's balance paid.")
    replayed: bool
