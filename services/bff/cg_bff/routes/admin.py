"""The platform admin's API (``PlatformAdmin``: a platform admin's session; partners and
customers get 403): partners (list, create with a tier, change the tier, suspend and
resume), deposits into a partner's balance (the payment hook: ``tenant.payments``), the
whole model catalog (read-only) and the ledger's audit of its books."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from cg_bff import errors
from cg_bff.principal import PlatformAdmin
from cg_bff.requests import Cursor, IdempotencyKey, Limit, Page, decode_cursor, encode_cursor
from cg_bff.schemas.admin import (
    AdminPartnerCreate,
    AdminPartnerPublic,
    AdminPartnerUpdate,
    AuditPublic,
    DepositCreate,
    DepositPublic,
)
from cg_bff.schemas.common import NO_NUL, PathId
from cg_bff.schemas.money import Credits, to_ucr
from cg_bff.schemas.partner import CatalogPublic
from cg_bff.state import BffState
from cg_bff.tenant import keys_of, ledger_admin_of, ledger_of, payments, state_of
from cg_bff.tenant.idempotency import idempotent, ledger_id
from cg_bff.tenant.ledger import balances, partner_account
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2 as lpb

router = APIRouter(prefix="/admin", tags=["admin"])
PartnerId = PathId
_STATES = {"active": pb.PARTNER_STATUS_ACTIVE, "suspended": pb.PARTNER_STATUS_SUSPENDED}
MAX_MEMO = 200  # the ledger's


async def _with_balances(state: BffState, partners: list[pb.Partner]) -> list[AdminPartnerPublic]:
    found = await balances(state, [partner_account(p.id) for p in partners])
    return [AdminPartnerPublic.of(p, found.get(partner_account(p.id))) for p in partners]


async def _partner(state: BffState, partner_id: str) -> pb.Partner:
    b = state.backends
    return await b.call(
        keys_of(state).GetPartner, pb.GetPartnerRequest(actor=pb.Actor(partner_id=partner_id)), what="partner"
    )


@router.get("/partners", response_model=Page[AdminPartnerPublic])
async def list_partners(
    principal: PlatformAdmin,
    request: Request,
    status: Annotated[Literal["active", "suspended"] | None, Query(description="Only partners in this status.")] = None,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="Part of the name.")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[AdminPartnerPublic]:
    """Every partner, oldest first, with its balance."""
    state = state_of(request)
    after = decode_cursor(cursor)
    token = after.get("t") if after is not None else ""
    if not isinstance(token, str):
        raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"})
    b = state.backends
    page = await b.call(
        keys_of(state).ListPartners,
        pb.ListPartnersRequest(
            page_size=limit,
            page_token=token,
            state=_STATES[status] if status else pb.PARTNER_STATUS_UNSPECIFIED,
            name_contains=q or "",
        ),
    )
    rows = await _with_balances(state, list(page.partners))
    return Page(data=rows, next_cursor=encode_cursor({"t": page.next_page_token}) if page.next_page_token else None)


@router.post("/partners", response_model=AdminPartnerPublic, status_code=201)
async def create_partner(body: AdminPartnerCreate, principal: PlatformAdmin, request: Request) -> AdminPartnerPublic:
    """A new partner on a tier (its first owner is invited with ``POST
    /admin/partners/{id}/invites``). With an ``external_ref`` already used, the partner
    made then is answered."""
    state = state_of(request)
    b = state.backends
    made = await b.call(
        keys_of(state).CreatePartner,
        pb.CreatePartnerRequest(name=body.name, tier=body.tier, external_ref=body.external_ref or ""),
        what="partner",
    )
    return (await _with_balances(state, [made]))[0]


@router.get("/partners/{partner_id}", response_model=AdminPartnerPublic)
async def get_partner(partner_id: PartnerId, principal: PlatformAdmin, request: Request) -> AdminPartnerPublic:
    state = state_of(request)
    return (await _with_balances(state, [await _partner(state, partner_id)]))[0]


@router.patch("/partners/{partner_id}", response_model=AdminPartnerPublic)
async def update_partner(
    partner_id: PartnerId, body: AdminPartnerUpdate, principal: PlatformAdmin, request: Request
) -> AdminPartnerPublic:
    """Changes the name, the tier (its fee and the models its keys may call, at once) or
    the status: ``suspended`` refuses every key of the partner at the gateway (403
    ``partner_suspended``) until it is ``active`` again."""
    names = body.model_fields_set
    if not names:
        raise errors.invalid("Send at least one field to change.", {"request": "no field"})
    nulls = {n: "may not be null" for n in names if getattr(body, n) is None}
    if nulls:
        raise errors.invalid("Some fields may not be null.", nulls)
    req = pb.UpdatePartnerRequest(partner_id=partner_id)
    if body.tier is not None:
        req.tier = body.tier
    if body.name is not None:
        req.name = body.name
    if body.status is not None:
        req.state = _STATES[body.status]
    state = state_of(request)
    b = state.backends
    changed = await b.call(keys_of(state).UpdatePartner, req, what="partner")
    return (await _with_balances(state, [changed]))[0]


@router.post("/partners/{partner_id}/deposits", response_model=DepositPublic, status_code=201)
async def deposit(
    partner_id: PartnerId,
    body: DepositCreate,
    principal: PlatformAdmin,
    idempotency_key: IdempotencyKey,
    request: Request,
) -> DepositPublic:
    """Credits into the partner's balance, once the payment is confirmed — by the admin's
    word today (``manual``); a payment provider plugs in at ``tenant.payments``. The
    ledger's id is ``bff:<partner>:deposit:<Idempotency-Key>``: a retry deposits once."""
    state = state_of(request)
    await _partner(state, partner_id)  # 404 before anything is recorded
    memo = "; ".join(
        part
        for part in (body.memo, f"payment {body.payment_reference}" if body.payment_reference else "", principal.email)
        if part
    )
    if len(memo) > MAX_MEMO:
        raise errors.invalid(
            "The memo, the payment reference and your email are too long together.",
            {"memo": f"at most {MAX_MEMO} characters with the reference"},
        )
    amount_ucr = to_ucr(body.amount_credits)
    provider = payments.provider(state)
    account = partner_account(partner_id)
    async with idempotent(state, "admin", idempotency_key, "partners.deposit", {"partner_id": partner_id}, body):
        await provider.confirm(payments.Payment(partner_id, amount_ucr, body.payment_reference))
        done = await state.backends.call(
            ledger_of(state).Deposit,
            lpb.DepositRequest(
                idempotency_id=ledger_id(partner_id, "deposit", idempotency_key),
                account=account,
                amount_ucr=amount_ucr,
                memo=memo,
            ),
        )
    now = (await balances(state, [account])).get(account)
    return DepositPublic(
        partner_id=partner_id,
        amount=Credits.of(done.amount_ucr),
        balance=Credits.of(now.posted_ucr if now is not None else 0),
        transfer_id=done.transfer_id,
        replayed=done.replayed,
        provider=provider.name,
    )


@router.get("/catalog", response_model=CatalogPublic)
async def catalog(principal: PlatformAdmin, request: Request) -> CatalogPublic:
    """Every model of the catalog, grouped budget / mid tier / premium, with list prices
    (read-only: the catalog is ``services/keys/cg_keys/catalog.yaml``)."""
    state = state_of(request)
    b = state.backends
    return CatalogPublic.of(await b.call(keys_of(state).ListModels, pb.ListModelsRequest()))


@router.get("/audit", response_model=AuditPublic)
async def audit(principal: PlatformAdmin, request: Request) -> AuditPublic:
    """The ledger's audit of its books (conservation per unit, no overdraft, counters equal
    their transfers, holds equal pending): ``ok`` with no discrepancies on healthy books."""
    state = state_of(request)
    b = state.backends
    return AuditPublic.of(await b.admin_call(ledger_admin_of(state).AuditBooks, lpb.AuditBooksRequest()))
