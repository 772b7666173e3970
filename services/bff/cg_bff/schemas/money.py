"""Amounts as the API shows them: the exact integer, and decimal strings for people."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field

from cglib.money import UAI_PER_AI_CREDIT, UCR_PER_CREDIT, UCR_PER_USD

# ucr -> credits and USD are powers of ten: exact, a fixed number of decimals
_CREDIT_PLACES = len(str(UCR_PER_CREDIT)) - 1
_USD_PLACES = len(str(UCR_PER_USD)) - 1
_AI_PLACES = len(str(UAI_PER_AI_CREDIT)) - 1

# What a request may say about money: a positive decimal with at most 6 places (a
# micro-unit), never more than a billion (the ledger's one-amount bound is 10^15 micro).
MAX_CREDITS = 1_000_000_000
CreditAmount = Annotated[
    Decimal,
    Field(gt=0, le=MAX_CREDITS, decimal_places=_CREDIT_PLACES, description="Credits (100 = $1), up to 6 decimals."),
]
AiCreditAmount = Annotated[
    Decimal, Field(gt=0, le=MAX_CREDITS, decimal_places=_AI_PLACES, description="AI credits, up to 6 decimals.")
]
WholeCredits = Annotated[int, Field(gt=0, le=MAX_CREDITS, description="Whole credits (100 credits = $1).")]


def _scaled(amount: int, places: int) -> str:
    return f"{Decimal(amount).scaleb(-places):f}"


def credits_str(ucr: int) -> str:
    """Micro-credits as an exact decimal string of credits ("5250.000000")."""
    return _scaled(ucr, _CREDIT_PLACES)


class Credits(BaseModel):
    """An amount of credits: ``ucr`` (micro-credits, exact) and, for display, ``credits``
    and ``usd`` as exact decimal strings (100 credits = $1)."""

    ucr: int = Field(description="Micro-credits: 1 credit = 1,000,000.")
    credits: str = Field(examples=["5250.000000"])
    usd: str = Field(examples=["52.50000000"])

    @classmethod
    def of(cls, ucr: int) -> Credits:
        return cls(ucr=ucr, credits=credits_str(ucr), usd=_scaled(ucr, _USD_PLACES))


class AiCredits(BaseModel):
    """An amount of a customer's AI credits: ``uai`` (millionths, exact) and ``ai_credits``
    as an exact decimal string."""

    uai: int = Field(description="Millionths of an AI credit.")
    ai_credits: str = Field(examples=["12.500000"])

    @classmethod
    def of(cls, uai: int) -> AiCredits:
        return cls(uai=uai, ai_credits=_scaled(uai, _AI_PLACES))


def to_ucr(amount_credits: Decimal) -> int:
    return int(amount_credits * UCR_PER_CREDIT)


def to_uai(amount: Decimal) -> int:
    return int(amount * UAI_PER_AI_CREDIT)


def at(unix_s: int) -> datetime | None:
    """A Unix time in seconds as a UTC date-time; 0 (never, unknown) as None."""
    return datetime.fromtimestamp(unix_s, tz=UTC) if unix_s else None


def at_ms(unix_ms: int) -> datetime:
    return datetime.fromtimestamp(unix_ms / 1000, tz=UTC)
