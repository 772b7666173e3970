"""The platform admin's view: partners, deposits into their balance, the ledger's audit."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from cg_bff.schemas.common import NO_NUL
from cg_bff.schemas.keys import Name
from cg_bff.schemas.money import CreditAmount, Credits, at
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2 as lpb

PartnerStatus = Literal["active", "suspended"]
Tier = Annotated[str, Field(min_length=1, max_length=32, pattern=NO_NUL, examples=["starter", "growth", "enterprise"])]


class AdminPartnerCreate(BaseModel):
    name: Name
    tier: Tier = "starter"
    external_ref: Annotated[
        str | None,
        Field(
            max_length=200,
            pattern=NO_NUL,
            description="Your reference (e.g. the billing system's id); a second create with it "
            "returns the first partner.",
        ),
    ] = None


class AdminPartnerUpdate(BaseModel):
    """Fields to change; those left out stay. ``status: suspended`` refuses every key of
    the partner at the proxy (403 partner_suspended) until it is ``active`` again."""

    name: Name | None = None
    tier: Tier | None = None
    status: PartnerStatus | None = None


class AdminPartnerPublic(BaseModel):
    id: str
    name: str
    tier: str
    status: PartnerStatus
    fee_rate: str
    external_ref: str | None
    created_at: datetime | None
    balance: Credits
    available: Credits

    @classmethod
    def of(cls, p: pb.Partner, balance: lpb.Balance | None) -> AdminPartnerPublic:
        return cls(
            id=p.id,
            name=p.name,
            tier=p.tier,
            status="suspended" if p.state == pb.PARTNER_STATUS_SUSPENDED else "active",
            fee_rate=p.fee_rate,
            external_ref=p.external_ref or None,
            created_at=at(p.created_at_unix),
            balance=Credits.of(balance.posted_ucr if balance else 0),
            available=Credits.of(balance.available_ucr if balance else 0),
        )


class DepositCreate(BaseModel):
    """Credits a partner bought, into its balance."""

    amount_credits: CreditAmount
    memo: Annotated[str, Field(max_length=200, pattern=NO_NUL)] = ""
    payment_reference: Annotated[
        str,
        Field(
            max_length=120,
            pattern=NO_NUL,
            description="The payment's id at its provider (invoice, charge), for the books.",
        ),
    ] = ""


class DepositPublic(BaseModel):
    partner_id: str
    amount: Credits
    balance: Credits = Field(description="The partner's balance after the deposit.")
    transfer_id: str
    replayed: bool = Field(description="This Idempotency-Key's deposit was already made: nothing moved now.")
    provider: str = Field(description="Which payment provider confirmed it (manual: the admin's word).")


class AuditUnit(BaseModel):
    unit: str
    accounts: int
    sum_posted: str
    sum_pending: str
    external_in: str = Field(description="What came in from outside, in the unit's micro-units.")


class AuditDiscrepancy(BaseModel):
    check: str
    account: str | None
    detail: str


class AuditPublic(BaseModel):
    """The ledger's check of its books: conservation, no overdraft, counters = transfers."""

    ok: bool
    accounts: int
    transfers: int
    units: list[AuditUnit]
    discrepancies: list[AuditDiscrepancy]

    @classmethod
    def of(cls, r: lpb.AuditBooksResponse) -> AuditPublic:
        return cls(
            ok=r.ok,
            accounts=r.accounts,
            transfers=r.transfers,
            units=[
                AuditUnit(
                    unit=u.unit,
                    accounts=u.accounts,
                    sum_posted=u.sum_posted,
                    sum_pending=u.sum_pending,
                    external_in=u.external_in,
                )
                for u in r.units
            ],
            discrepancies=[
                AuditDiscrepancy(check=d.check, account=d.account or None, detail=d.detail) for d in r.discrepancies
            ],
        )
