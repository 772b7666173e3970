"""A partner's white-label branding (migration ``0005_branding``): the name, logo and
colours its customers' portal shows. One row per partner, made by its first ``PUT
/partner/branding``; without a row the portal shows the partner's own name and the
product's colours."""

from __future__ import annotations

from sqlmodel import BigInteger, Column, Field, SQLModel, Text


class PartnerBranding(SQLModel, table=True):
    __tablename__ = "partner_branding"

    partner_id: str = Field(primary_key=True, max_length=64)
    # None: the partner's name as keys has it
    display_name: str | None = Field(default=None, max_length=80)
    # an https:// URL or a small data:image/... URL (checked by ``schemas.branding``)
    logo_url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    primary_color: str | None = Field(default=None, max_length=7)  # "#rrggbb"
    accent_color: str | None = Field(default=None, max_length=7)
    updated_at_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
