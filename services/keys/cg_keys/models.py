"""Tables of the keys database."""

from __future__ import annotations

import time

from sqlmodel import JSON, Column, Field, SQLModel


def _now() -> int:
    return int(time.time())


class Partner(SQLModel, table=True):
    __tablename__ = "partners"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    tier: str = Field(max_length=32)
    external_ref: str | None = Field(default=None, max_length=200, unique=True)
    created_at: int = Field(default_factory=_now)


class VirtualKey(SQLModel, table=True):
    __tablename__ = "virtual_keys"

    id: str = Field(primary_key=True, max_length=64)
    partner_id: str = Field(foreign_key="partners.id", index=True, max_length=64)
    name: str = Field(max_length=200)
    key_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    status: str = Field(default="active", max_length=16)
    allowed_models: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    budget_account: str = Field(max_length=80)
    created_at: int = Field(default_factory=_now)
