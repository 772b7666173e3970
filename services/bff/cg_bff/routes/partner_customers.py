"""A partner's customers: list, create, read, change (AI credits on/off, the AI Gateway
menu, API access), and grant them AI credits.

Reads are for any of the partner's users and tokens (``PartnerReader``), changes for
``PartnerWriter``. A customer id in the path is looked up as the principal's partner
(keys answers NOT_FOUND for anyone else's customer): a 404 either way. Granting AI
credits requires an ``Idempotency-Key``; the ledger's id is
``bff:<partner>:grant:<key>``, so a retry grants once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request

from cg_bff import errors
from cg_bff.principal import PartnerReader, PartnerWriter
from cg_bff.requests import MAX_IDEMPOTENCY_KEY, Cursor, IdempotencyKey, Limit, Page, decode_cursor, encode_cursor
from cg_bff.schemas.common import NO_NUL, PathId
from cg_bff.schemas.customers import (
    AiCreditGrantCreate,
    AiCreditGrantPublic,
    CustomerCreate,
    CustomerPublic,
    CustomerUpdate,
)
from cg_bff.schemas.money import AiCredits, to_uai
from cg_bff.state import BffState
from cg_bff.tenant import keys_of, ledger_of, state_of
from cg_bff.tenant.idempotency import idempotent, ledger_id
from cg_bff.tenant.ledger import balances, customer_account
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2 as lpb

router = APIRouter(prefix="/partner/customers", tags=["partner customers"])
CustomerId = PathId


async def _public(state: BffState, customers: list[pb.Customer]) -> list[CustomerPublic]:
    found = await balances(state, [customer_account(c.id) for c in customers])
    return [
        CustomerPublic.of(c, found[a].posted_ucr if (a := customer_account(c.id)) in found else 0) for c in customers
    ]


@router.get("", response_model=Page[CustomerPublic])
async def list_customers(
    principal: PartnerReader,
    request: Request,
    q: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="Part of the name.")] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[CustomerPublic]:
    """The partner's customers, oldest first, with their AI-credit balances and whether
    each sees AI Gateway (and if not, why)."""
    state = state_of(request)
    b = state.backends
    listed = await b.call(keys_of(state).ListCustomers, pb.ListCustomersRequest(actor=principal.actor()))
    customers = [c for c in listed.customers if not q or q.casefold() in c.name.casefold()]
    after = decode_cursor(cursor)
    if after is not None:  # keys answers them oldest first: continue after the last one seen
        ids = [c.id for c in customers]
        last = after.get("id")
        if not isinstance(last, str):
            raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"})
        customers = customers[ids.index(last) + 1 :] if last in ids else []
    rows = customers[:limit]
    more = len(customers) > limit
    return Page(data=await _public(state, rows), next_cursor=encode_cursor({"id": rows[-1].id}) if more else None)


@router.post("", response_model=CustomerPublic, status_code=201)
async def create_customer(
    body: CustomerCreate,
    principal: PartnerWriter,
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=MAX_IDEMPOTENCY_KEY,
            description="Optional: a retry with the same key answers the customer the first call made.",
        ),
    ] = None,
) -> CustomerPublic:
    state = state_of(request)
    req = pb.CreateCustomerRequest(
        actor=principal.actor(),
        name=body.name,
        ai_credits_enabled=body.ai_credits_enabled,
        api_access_enabled=body.api_access_enabled,
        idempotency_key=idempotency_key or "",
    )
    if body.ai_gateway_menu_enabled is not None:
        req.ai_gateway_menu_enabled = body.ai_gateway_menu_enabled
    if not idempotency_key:
        made = await state.backends.call(keys_of(state).CreateCustomer, req, what="customer")
    else:
        scope = f"partner:{principal.partner_id}"
        async with idempotent(state, scope, idempotency_key, "customers.create", {}, body):
            made = await state.backends.call(keys_of(state).CreateCustomer, req, what="customer")
    return (await _public(state, [made]))[0]


@router.get("/{customer_id}", response_model=CustomerPublic)
async def get_customer(customer_id: CustomerId, principal: PartnerReader, request: Request) -> CustomerPublic:
    state = state_of(request)
    b = state.backends
    got = await b.call(
        keys_of(state).GetCustomer,
        pb.GetCustomerRequest(actor=principal.actor(), customer_id=customer_id),
        what="customer",
    )
    return (await _public(state, [got]))[0]


@router.patch("/{customer_id}", response_model=CustomerPublic)
async def update_customer(
    customer_id: CustomerId, body: CustomerUpdate, principal: PartnerWriter, request: Request
) -> CustomerPublic:
    """Changes the fields sent: the name, AI Credits on/off, the AI Gateway menu (Features
    & Add-ons), API access."""
    names = body.model_fields_set
    if not names:
        raise errors.invalid("Send at least one field to change.", {"request": "no field"})
    nulls = {n: "may not be null" for n in names if getattr(body, n) is None}
    if nulls:
        raise errors.invalid("Some fields may not be null.", nulls)
    req = pb.UpdateCustomerRequest(actor=principal.actor(), customer_id=customer_id)
    for name in names:
        setattr(req, name, getattr(body, name))
    state = state_of(request)
    b = state.backends
    changed = await b.call(keys_of(state).UpdateCustomer, req, what="customer")
    return (await _public(state, [changed]))[0]


@router.post("/{customer_id}/ai-credits", response_model=AiCreditGrantPublic, status_code=201)
async def grant_ai_credits(
    customer_id: CustomerId,
    body: AiCreditGrantCreate,
    principal: PartnerWriter,
    idempotency_key: IdempotencyKey,
    request: Request,
) -> AiCreditGrantPublic:
    """Grants AI credits the partner sold to its customer (they come from outside: the
    partner's own credits do not change)."""
    state = state_of(request)
    b = state.backends
    partner_id = principal.partner_id or ""
    # the customer must be this partner's (404 otherwise) before any money moves
    await b.call(
        keys_of(state).GetCustomer,
        pb.GetCustomerRequest(actor=principal.actor(), customer_id=customer_id),
        what="customer",
    )
    account = customer_account(customer_id)
    ids = {"customer_id": customer_id}
    async with idempotent(state, f"partner:{partner_id}", idempotency_key, "ai_credits.grant", ids, body):
        done = await b.call(
            ledger_of(state).GrantAiCredits,
            lpb.GrantAiCreditsRequest(
                idempotency_id=ledger_id(partner_id, "grant", idempotency_key),
                customer_account=account,
                amount_uai=to_uai(body.amount),
                memo=body.memo,
            ),
        )
    now = (await balances(state, [account])).get(account)
    return AiCreditGrantPublic(
        customer_id=customer_id,
        granted=AiCredits.of(done.amount_ucr),
        balance=AiCredits.of(now.posted_ucr if now is not None else 0),
        transfer_id=done.transfer_id,
        replayed=done.replayed,
    )
