"""The partner: its account (tier, fee, balance, reserved, spent), the model catalog of
its tier, customer self-service settings, the billing preview and the statement."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from cg_bff.schemas.common import NO_NUL
from cg_bff.schemas.keys import Cents, Multiplier
from cg_bff.schemas.money import AiCredits, Credits
from creditgate.keys.v1 import keys_pb2 as pb

Category = Literal["budget", "mid", "premium"]
CATEGORY_LABELS: dict[str, str] = {"budget": "Budget", "mid": "Mid tier", "premium": "Premium"}


def fee_percent(fee_rate: str) -> str:
    return f"{(Decimal(fee_rate or '0') * 100).normalize():f}"


class SelfServicePublic(BaseModel):
    """Customer Self-Service API Keys: whether customers may create their own AI Gateway
    keys (each holds a deposit from the partner's balance) and the terms they pay."""

    enabled: bool = Field(description="The master switch.")
    apply_to_new_customers: bool = Field(description="New customers get the AI Gateway menu turned on.")
    default_profit_multiplier: str = Field(description="Customer-created keys bill the provider cost × this.")
    ai_credit_price_cents: str = Field(description="What one AI credit is worth, US cents.")
    deposit_per_key: Credits = Field(description="Held from the partner's balance for each customer-created key.")

    @classmethod
    def of(cls, s: pb.SelfServiceSettings, deposit_ucr: int) -> SelfServicePublic:
        return cls(
            enabled=s.enabled,
            apply_to_new_customers=s.apply_to_new_customers,
            default_profit_multiplier=s.default_profit_multiplier,
            ai_credit_price_cents=s.ai_credit_price_cents,
            deposit_per_key=Credits.of(deposit_ucr),
        )


class SelfServiceUpdate(BaseModel):
    """The whole self-service section (PUT replaces it)."""

    enabled: bool
    apply_to_new_customers: bool
    default_profit_multiplier: Multiplier
    ai_credit_price_cents: Cents
    apply_to_existing_customers: bool = Field(
        default=False, description="Also turn the AI Gateway menu on for every existing customer, now."
    )


class PartnerPublic(BaseModel):
    """The signed-in partner's account."""

    id: str
    name: str
    tier: str
    status: Literal["active", "suspended"] = Field(description="Suspended: the platform refuses every key of yours.")
    fee_rate: str = Field(description='The tier\'s fee on key funding, a fraction of the budget ("0.05").')
    fee_percent: str = Field(examples=["5"])
    balance: Credits = Field(description="Credits on the partner's balance (bought, minus what funds keys).")
    available: Credits = Field(
        description="balance − what requests in flight hold: what new keys and requests can use."
    )
    reserved: Credits = Field(
        description="Credits of yours set aside, not usable now, that come back when released: held by requests in "
        "flight of customer-created keys (they draw on your balance) plus the deposits held for your customers' "
        "keys (1,000 credits each, returned when the key is revoked). Budgets moved into your own keys are not "
        "in it (each key shows its remaining)."
    )
    reserved_in_flight: Credits
    reserved_key_deposits: Credits
    spent_this_month: Credits = Field(
        description="What your keys' requests cost since the first of this month (UTC): the provider cost charged "
        "to your keys' budgets and, for customer-created keys, to your balance; from the usage history (so a "
        "request counts once its usage event is recorded, within seconds). Platform fees on funding are in the "
        "statement, not here."
    )
    month_started_at: datetime
    self_service: SelfServicePublic
    created_at: datetime | None
    gateway_base_url: str = Field(
        description="The gateway's base URL, for the OpenAI SDKs' base_url (the portal's quick start).",
        examples=["https://gateway.example.com/v1"],
    )


class ModelPublic(BaseModel):
    id: str
    provider: str
    category: Category
    input_usd_per_mtok: str
    output_usd_per_mtok: str
    context_window: int


class ModelGroup(BaseModel):
    category: Category
    label: str = Field(examples=["Mid tier"])
    models: list[ModelPublic]


class CatalogPublic(BaseModel):
    """Models grouped budget / mid tier / premium: a partner's, only those its tier allows;
    the admin's, the whole catalog (``tier`` null)."""

    tier: str | None
    catalog_version: str
    categories: list[ModelGroup]

    @classmethod
    def of(cls, r: pb.ListModelsResponse) -> CatalogPublic:
        return cls(
            tier=r.tier or None,
            catalog_version=r.catalog_version,
            categories=[
                ModelGroup(
                    category=c.category,  # type: ignore[arg-type]  # keys' categories are these three
                    label=CATEGORY_LABELS.get(c.category, c.category),
                    models=[
                        ModelPublic(
                            id=m.id,
                            provider=m.provider,
                            category=m.category,  # type: ignore[arg-type]
                            input_usd_per_mtok=m.input_usd_per_mtok,
                            output_usd_per_mtok=m.output_usd_per_mtok,
                            context_window=m.context_window,
                        )
                        for m in c.models
                    ],
                )
                for c in r.categories
            ],
        )


Tokens = Annotated[int, Field(ge=0, le=1_000_000_000)]


class BillingPreviewCreate(BaseModel):
    """What a customer would pay per model at these terms, for a sample volume."""

    models: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=120, pattern=NO_NUL)]],
        Field(max_length=100, description="Empty: every model of your tier."),
    ] = []
    profit_multiplier: Multiplier
    price_per_ai_credit_cents: Cents
    floor_usd_per_mtok: Annotated[Decimal | None, Field(ge=0, le=1_000_000)] = None
    sample_input_tokens: Tokens = 1_000_000
    sample_output_tokens: Tokens = 1_000_000


class BillingPreviewRow(BaseModel):
    model: str
    provider_cost: Credits = Field(description="What the request costs you.")
    customer_price: Credits = Field(description="What the customer pays, in credits' worth.")
    customer_price_ai_credits: AiCredits = Field(description="What the customer pays, in its AI credits.")
    partner_margin: Credits = Field(description="customer price − provider cost.")


class BillingPreviewPublic(BaseModel):
    sample_input_tokens: int
    sample_output_tokens: int
    rows: list[BillingPreviewRow]


Effect = Literal["posted", "hold", "release"]


class StatementEntry(BaseModel):
    """One movement of the partner's balance, newest first. ``amount`` is signed: positive
    came in, negative went out. ``effect``: ``posted`` moved the balance; ``hold`` and
    ``release`` only set credits aside for a request in flight of a customer-created key
    and gave them back (the request's charge is its own ``posted`` entry)."""

    id: str
    at: datetime
    kind: str = Field(
        description="deposit | fund (a key's budget) | fee | refund | hold_deposit | release_deposit | post "
        "(a request's charge) | pending | void | expire | transfer | grant"
    )
    effect: Effect
    amount: Credits
    counterparty: str = Field(description="The other account (key:<id>, keydeposit:<id>, platform:fees, ...).")
    key_id: str | None
    request_id: str | None
    memo: str
