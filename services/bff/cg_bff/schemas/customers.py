"""A partner's customers (the partner's view) and a customer's own view of itself."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from cg_bff.schemas.common import NO_NUL
from cg_bff.schemas.keys import Description, ModelIds, Name
from cg_bff.schemas.money import AiCreditAmount, AiCredits
from creditgate.keys.v1 import keys_pb2 as pb

Missing = Literal["self_service_disabled", "ai_credits_disabled", "ai_gateway_menu_disabled"]
MISSING: tuple[str, ...] = ("self_service_disabled", "ai_credits_disabled", "ai_gateway_menu_disabled")


class AiGatewayVisibility(BaseModel):
    """Whether the customer sees AI Gateway (and may create its own keys): only when all
    three hold — the partner's self-service switch, the customer's AI Credits, its AI
    Gateway menu toggle. ``missing`` names those that do not, in that order."""

    visible: bool
    missing: list[Missing]

    @classmethod
    def of(cls, c: pb.Customer) -> AiGatewayVisibility:
        missing = [m for m in c.ai_gateway_missing if m in MISSING]
        return cls(visible=c.ai_gateway_visible, missing=missing)  # type: ignore[arg-type]  # filtered to the three


class CustomerCreate(BaseModel):
    name: Name
    ai_credits_enabled: bool = False
    api_access_enabled: bool = Field(default=False, description="API Keys in the customer's portal.")
    ai_gateway_menu_enabled: bool | None = Field(
        default=None, description="The AI Gateway menu toggle; null: your 'apply to new customers' setting."
    )


class CustomerUpdate(BaseModel):
    """Fields to change; those left out stay."""

    name: Name | None = None
    ai_credits_enabled: bool | None = None
    ai_gateway_menu_enabled: bool | None = None
    api_access_enabled: bool | None = None


class CustomerPublic(BaseModel):
    id: str
    name: str
    ai_credits_enabled: bool
    ai_gateway_menu_enabled: bool = Field(description="The Features & Add-ons toggle.")
    api_access_enabled: bool
    ai_gateway: AiGatewayVisibility
    ai_credit_balance: AiCredits = Field(description="Posted AI credits (granted minus charged).")

    @classmethod
    def of(cls, c: pb.Customer, balance_uai: int) -> CustomerPublic:
        return cls(
            id=c.id,
            name=c.name,
            ai_credits_enabled=c.ai_credits_enabled,
            ai_gateway_menu_enabled=c.ai_gateway_menu_enabled,
            api_access_enabled=c.api_access_enabled,
            ai_gateway=AiGatewayVisibility.of(c),
            ai_credit_balance=AiCredits.of(balance_uai),
        )


class AiCreditGrantCreate(BaseModel):
    """AI credits the partner sold its customer (they come from outside, not from the
    partner's credits)."""

    amount: AiCreditAmount
    memo: Annotated[str, Field(max_length=200, pattern=NO_NUL)] = ""


class AiCreditGrantPublic(BaseModel):
    customer_id: str
    granted: AiCredits
    balance: AiCredits = Field(description="The customer's AI credits after the grant.")
    transfer_id: str
    replayed: bool = Field(description="This Idempotency-Key's grant was already made: nothing moved now.")


# -- the customer's own view ----------------------------------------------------------


class CustomerSelf(BaseModel):
    """Who the signed-in customer is, and whether AI Gateway is shown to it."""

    id: str
    name: str
    partner_id: str
    ai_credits_enabled: bool
    api_access_enabled: bool
    ai_gateway: AiGatewayVisibility
    gateway_base_url: str = Field(
        description="The gateway's base URL, for the OpenAI SDKs' base_url.",
        examples=["https://gateway.example.com/v1"],
    )

    @classmethod
    def of(cls, c: pb.Customer, gateway_base_url: str) -> CustomerSelf:
        return cls(
            id=c.id,
            name=c.name,
            partner_id=c.partner_id,
            ai_credits_enabled=c.ai_credits_enabled,
            api_access_enabled=c.api_access_enabled,
            ai_gateway=AiGatewayVisibility.of(c),
            gateway_base_url=gateway_base_url,
        )


class CustomerKeyCreate(BaseModel):
    """A pay-as-you-go key: no budget; its requests are billed to your AI credits."""

    name: Name
    description: Description = ""
    allowed_models: Annotated[ModelIds, Field(description="Empty: every model offered to you.")] = []


class CustomerBalancePublic(BaseModel):
    customer_id: str
    balance: AiCredits = Field(description="Posted AI credits.")
    reserved: AiCredits = Field(description="Held by your requests in flight.")
    available: AiCredits = Field(description="balance − reserved: what new requests can use.")
