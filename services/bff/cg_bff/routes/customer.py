"""A customer's own API (``CustomerUser``: a customer's signed-in user; the partner's
users and tokens get 403): who it is and whether AI Gateway is shown to it, the models
its keys may call, its own pay-as-you-go keys, its AI-credit balance. (Its usage is in ``routes/usage``.)

Everything acts as the principal's customer (keys' ``Actor`` with both ids): another
customer's key is a 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from cg_bff import errors
from cg_bff.principal import CustomerUser, Principal
from cg_bff.requests import Cursor, IdempotencyKey, Limit, Page, decode_cursor, encode_cursor
from cg_bff.schemas.common import PathId
from cg_bff.schemas.customers import CustomerBalancePublic, CustomerKeyCreate, CustomerSelf
from cg_bff.schemas.keys import KeyCreated, KeyDetailPublic, KeyPublic
from cg_bff.schemas.money import AiCredits, Credits
from cg_bff.schemas.partner import CatalogPublic
from cg_bff.state import BffState
from cg_bff.tenant import keys_of, state_of
from cg_bff.tenant.idempotency import idempotent
from cg_bff.tenant.keycalls import detail, keys_call
from cg_bff.tenant.ledger import balance, customer_account
from creditgate.keys.v1 import keys_pb2 as pb

router = APIRouter(prefix="/customer", tags=["customer"])
KeyId = PathId
# why AI Gateway is hidden, per missing condition (keys' vocabulary)
HIDDEN_BECAUSE = {
    "self_service_disabled": "your provider has not enabled customer self-service",
    "ai_credits_disabled": "AI Credits are not enabled for your account",
    "ai_gateway_menu_disabled": "the AI Gateway menu is not enabled for your account",
}


async def _check_visible(state: BffState, principal: Principal) -> None:
    """403, ``code`` the first missing condition, while AI Gateway is hidden from the customer."""
    me = await state.backends.call(
        keys_of(state).GetCustomer,
        pb.GetCustomerRequest(actor=principal.actor(), customer_id=principal.customer_id or ""),
        what="customer",
    )
    if not me.ai_gateway_visible:
        missing = list(me.ai_gateway_missing) or ["self_service_disabled"]
        why = "; ".join(HIDDEN_BECAUSE.get(m, m) for m in missing)
        raise errors.ApiError(403, missing[0], f"AI Gateway is not available to you: {why}.")


@router.get("", response_model=CustomerSelf)
async def whoami(principal: CustomerUser, request: Request) -> CustomerSelf:
    """The customer, whether AI Gateway is shown to it (``ai_gateway.missing`` names each
    condition that keeps it hidden), and the gateway's base URL for the OpenAI SDKs."""
    state = state_of(request)
    b = state.backends
    got = await b.call(
        keys_of(state).GetCustomer,
        pb.GetCustomerRequest(actor=principal.actor(), customer_id=principal.customer_id or ""),
        what="customer",
    )
    return CustomerSelf.of(got, state.settings.proxy_public_url)


@router.get("/models", response_model=CatalogPublic)
async def list_models(principal: CustomerUser, request: Request) -> CatalogPublic:
    """The models the customer's own keys may call (its partner's tier), grouped budget /
    mid tier / premium, with list prices."""
    state = state_of(request)
    b = state.backends
    return CatalogPublic.of(await b.call(keys_of(state).ListModels, pb.ListModelsRequest(actor=principal.actor())))


@router.get("/keys", response_model=Page[KeyPublic])
async def list_own_keys(
    principal: CustomerUser, request: Request, cursor: Cursor = None, limit: Limit = 50
) -> Page[KeyPublic]:
    """The customer's keys, oldest first: those it created (pay-as-you-go) and those its
    partner bills to it (``kind`` says which)."""
    state = state_of(request)
    b = state.backends
    listed = list((await b.call(keys_of(state).ListKeys, pb.ListKeysRequest(actor=principal.actor()))).keys)
    after = decode_cursor(cursor)
    if after is not None:
        last = after.get("id")
        if not isinstance(last, str):
            raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"})
        ids = [k.id for k in listed]
        listed = listed[ids.index(last) + 1 :] if last in ids else []
    rows = listed[:limit]
    more = len(listed) > limit
    return Page(data=[KeyPublic.of(k) for k in rows], next_cursor=encode_cursor({"id": rows[-1].id}) if more else None)


@router.post("/keys", response_model=KeyCreated, status_code=201)
async def create_own_key(
    body: CustomerKeyCreate, principal: CustomerUser, idempotency_key: IdempotencyKey, request: Request
) -> KeyCreated:
    """A pay-as-you-go key (no budget: its requests are billed to the customer's AI
    credits). Refused (403, ``code`` = the first missing condition) while AI Gateway is
    hidden from the customer. Its ``secret`` is in this answer only."""
    state = state_of(request)
    b, actor = state.backends, principal.actor()
    scope = f"customer:{principal.customer_id}"
    async with idempotent(state, scope, idempotency_key, "customer_keys.create", {}, body) as first:
        if first:  # a retry converges on the first outcome (keys decides), even if a switch changed since
            await _check_visible(state, principal)
        models = list(body.allowed_models)
        if not models:
            offered = await b.call(keys_of(state).ListModels, pb.ListModelsRequest(actor=actor))
            models = [m.id for c in offered.categories for m in c.models]
        made = await keys_call(
            state,
            keys_of(state).CreateCustomerKey,
            pb.CreateCustomerKeyRequest(
                actor=actor,
                idempotency_key=idempotency_key,
                name=body.name,
                description=body.description,
                allowed_models=models,
            ),
        )
    return KeyCreated(
        key=await detail(state, principal, made.key.id),
        secret=made.secret or None,
        replayed=made.replayed,
        total=Credits.of(made.total_ucr),
        fee=Credits.of(made.fee_ucr),
    )


@router.post("/keys/{key_id}/revoke", response_model=KeyDetailPublic)
async def revoke_own_key(key_id: KeyId, principal: CustomerUser, request: Request) -> KeyDetailPublic:
    """Revokes one of the customer's own keys, for good (a key its partner made is the
    partner's to revoke: 403)."""
    state = state_of(request)
    await keys_call(state, keys_of(state).RevokeKey, pb.RevokeKeyRequest(actor=principal.actor(), key_id=key_id))
    return await detail(state, principal, key_id)


@router.get("/balance", response_model=CustomerBalancePublic)
async def own_balance(principal: CustomerUser, request: Request) -> CustomerBalancePublic:
    """The customer's AI credits: posted, held by requests in flight, available."""
    customer_id = principal.customer_id or ""
    found = await balance(state_of(request), customer_account(customer_id))
    posted, pending, available = (found.posted_ucr, found.pending_ucr, found.available_ucr) if found else (0, 0, 0)
    return CustomerBalancePublic(
        customer_id=customer_id,
        balance=AiCredits.of(posted),
        reserved=AiCredits.of(pending),
        available=AiCredits.of(available),
    )
