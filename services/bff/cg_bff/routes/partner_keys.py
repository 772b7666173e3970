"""A partner's AI Gateway keys: quote, create, list, read, change, top up, regenerate,
revoke, suspend, resume.

Reads (and the quote) are for any of the partner's users and tokens (``PartnerReader``);
everything else needs ``PartnerWriter``. A key id in the path is looked up as the
principal's partner: another partner's key is a 404 like a key that does not exist.
Create, top-up and regenerate move money or make a secret: they require an
``Idempotency-Key`` (``tenant.idempotency``), passed to keys as its idempotency key (keys
scopes it by partner); a retry converges on one key, one funding, one rotation, and
answers ``replayed: true`` without the secret.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request

from cg_bff import errors
from cg_bff.principal import PartnerReader, PartnerWriter
from cg_bff.requests import Cursor, IdempotencyKey, Limit, Page
from cg_bff.schemas.common import ID_PATTERN, NO_NUL, PathId
from cg_bff.schemas.keys import (
    KeyCreate,
    KeyCreated,
    KeyDetailPublic,
    KeyPublic,
    KeyQuoteCreate,
    KeyQuotePublic,
    KeyRegenerated,
    KeyStatus,
    KeySuspend,
    KeyUpdate,
    TopUpCreate,
    TopUpPublic,
)
from cg_bff.schemas.money import Credits
from cg_bff.tenant import keylist, keys_of, state_of
from cg_bff.tenant.idempotency import idempotent
from cg_bff.tenant.keycalls import detail, keys_call
from creditgate.keys.v1 import keys_pb2 as pb

router = APIRouter(prefix="/partner/keys", tags=["partner keys"])
KeyId = PathId
# the fields of KeyUpdate that may not be null
_NOT_NULL = ("name", "description", "allowed_models", "allowed_domains", "rpm_limit", "tpm_limit")


def _unix(t: datetime | None) -> int:
    if t is None:
        return 0
    return int((t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp())


def key_fields(body: KeyCreate | KeyUpdate, names: set[str]) -> pb.KeyFields:
    """The named fields of ``body`` as keys' ``KeyFields`` (null billing / auto top-up:
    none; null expiry: never)."""
    f = pb.KeyFields()
    if "name" in names and body.name is not None:
        f.name = body.name
    if "description" in names and body.description is not None:
        f.description = body.description
    if "allowed_models" in names and body.allowed_models is not None:
        f.allowed_models.extend(body.allowed_models)
    if "allowed_domains" in names and body.allowed_domains is not None:
        f.allowed_domains.extend(body.allowed_domains)
    if "rpm_limit" in names and body.rpm_limit is not None:
        f.rpm_limit = body.rpm_limit
    if "tpm_limit" in names and body.tpm_limit is not None:
        f.tpm_limit = body.tpm_limit
    if "expires_at" in names:
        f.expires_at_unix = _unix(body.expires_at)
    if "billing" in names and (bill := body.billing) is not None:
        f.billing.CopyFrom(
            pb.CustomerBilling(
                customer_id=bill.customer_id,
                profit_multiplier=str(bill.profit_multiplier),
                price_per_ai_credit_cents=str(bill.price_per_ai_credit_cents),
                floor_usd_per_mtok=str(bill.floor_usd_per_mtok) if bill.floor_usd_per_mtok is not None else "",
            )
        )
    if "auto_topup" in names and (t := body.auto_topup) is not None:
        f.auto_topup.CopyFrom(
            pb.AutoTopUp(enabled=t.enabled, threshold_usd=str(t.threshold_usd), amount_usd=str(t.amount_usd))
        )
    return f


def _mask(names: set[str]) -> list[str]:
    return sorted("expires_at_unix" if n == "expires_at" else n for n in names)


@router.post("/quote", response_model=KeyQuotePublic)
async def quote_key(body: KeyQuoteCreate, principal: PartnerReader, request: Request) -> KeyQuotePublic:
    """What a key with this budget takes from the balance: budget + the tier's fee. Moves nothing."""
    state = state_of(request)
    b = state.backends
    q = await b.call(
        keys_of(state).QuoteKey, pb.QuoteKeyRequest(actor=principal.actor(), budget_credits=body.budget_credits)
    )
    return KeyQuotePublic(
        budget=Credits.of(q.budget_ucr), fee=Credits.of(q.fee_ucr), total=Credits.of(q.total_ucr), fee_rate=q.fee_rate
    )


@router.get("", response_model=Page[KeyPublic])
async def list_keys(
    principal: PartnerReader,
    request: Request,
    status: Annotated[KeyStatus | None, Query(description="Only keys in this status.")] = None,
    include_revoked: Annotated[bool, Query(description="Also revoked keys (status=revoked implies it).")] = False,
    customer_id: Annotated[
        str | None,
        Query(max_length=64, pattern=ID_PATTERN, description="Keys billed to, or created by, this customer."),
    ] = None,
    q: Annotated[
        str | None, Query(max_length=200, pattern=NO_NUL, description="Part of the name, or the start of the prefix.")
    ] = None,
    sort: Annotated[keylist.Sort, Query(description="A field; '-' first for descending.")] = "-created",
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[KeyPublic]:
    """The keys table: name, prefix, budget vs spend, allowed models, status, last used."""
    state = state_of(request)
    b = state.backends
    listed = await b.call(
        keys_of(state).ListKeys,
        pb.ListKeysRequest(actor=principal.actor(), include_revoked=include_revoked or status == "revoked"),
    )
    chosen = keylist.select_keys(list(listed.keys), status, customer_id, q)
    rows, after = keylist.page(chosen, sort, cursor, limit)
    return Page(data=[KeyPublic.of(k) for k in rows], next_cursor=after)


@router.post("", response_model=KeyCreated, status_code=201)
async def create_key(
    body: KeyCreate, principal: PartnerWriter, idempotency_key: IdempotencyKey, request: Request
) -> KeyCreated:
    """Creates a key funded from the balance (budget + the tier's fee). Its ``secret`` is
    in this answer only."""
    state = state_of(request)
    async with idempotent(state, f"partner:{principal.partner_id}", idempotency_key, "keys.create", {}, body):
        made = await keys_call(
            state,
            keys_of(state).CreateKey,
            pb.CreateKeyRequest(
                actor=principal.actor(),
                idempotency_key=idempotency_key,
                fields=key_fields(body, set(KeyCreate.model_fields) - {"budget_credits"}),
                budget_credits=body.budget_credits,
            ),
        )
    return KeyCreated(
        key=await detail(state, principal, made.key.id),
        secret=made.secret or None,
        replayed=made.replayed,
        total=Credits.of(made.total_ucr),
        fee=Credits.of(made.fee_ucr),
    )


@router.get("/{key_id}", response_model=KeyDetailPublic)
async def get_key(key_id: KeyId, principal: PartnerReader, request: Request) -> KeyDetailPublic:
    """The expanded row: reserved, used, remaining, billing terms, limits, expiry, auto top-up."""
    return await detail(state_of(request), principal, key_id)


@router.patch("/{key_id}", response_model=KeyDetailPublic)
async def update_key(key_id: KeyId, body: KeyUpdate, principal: PartnerWriter, request: Request) -> KeyDetailPublic:
    """Changes the fields sent (not the budget: top up). A revoked key cannot change (409)."""
    names = set(body.model_fields_set)
    if not names:
        raise errors.invalid("Send at least one field to change.", {"request": "no field"})
    nulls = {n: "may not be null" for n in _NOT_NULL if n in names and getattr(body, n) is None}
    if nulls:
        raise errors.invalid("Some fields may not be null.", nulls)
    state = state_of(request)
    await keys_call(
        state,
        keys_of(state).UpdateKey,
        pb.UpdateKeyRequest(
            actor=principal.actor(), key_id=key_id, fields=key_fields(body, names), update_mask=_mask(names)
        ),
    )
    return await detail(state, principal, key_id)


@router.post("/{key_id}/top-up", response_model=TopUpPublic)
async def top_up_key(
    key_id: KeyId, body: TopUpCreate, principal: PartnerWriter, idempotency_key: IdempotencyKey, request: Request
) -> TopUpPublic:
    """Adds budget to the key from the balance (plus the tier's fee); revives an exhausted key."""
    state = state_of(request)
    scope = f"partner:{principal.partner_id}"
    async with idempotent(state, scope, idempotency_key, "keys.top_up", {"key_id": key_id}, body):
        out = await keys_call(
            state,
            keys_of(state).TopUpKey,
            pb.TopUpKeyRequest(
                actor=principal.actor(),
                key_id=key_id,
                idempotency_key=idempotency_key,
                amount_credits=body.amount_credits,
            ),
        )
    return TopUpPublic(
        key=await detail(state, principal, key_id),
        amount=Credits.of(out.amount_ucr),
        fee=Credits.of(out.fee_ucr),
        total=Credits.of(out.amount_ucr + out.fee_ucr),
        replayed=out.replayed,
    )


@router.post("/{key_id}/regenerate", response_model=KeyRegenerated)
async def regenerate_key(
    key_id: KeyId, principal: PartnerWriter, idempotency_key: IdempotencyKey, request: Request
) -> KeyRegenerated:
    """A new secret for the key (same id, budget and settings); the old one stops working
    at once. The new ``secret`` is in this answer only."""
    state = state_of(request)
    scope = f"partner:{principal.partner_id}"
    async with idempotent(state, scope, idempotency_key, "keys.regenerate", {"key_id": key_id}, None):
        out = await keys_call(
            state,
            keys_of(state).RegenerateKey,
            pb.RegenerateKeyRequest(actor=principal.actor(), key_id=key_id, idempotency_key=idempotency_key),
        )
    return KeyRegenerated(key=await detail(state, principal, key_id), secret=out.secret or None, replayed=out.replayed)


@router.post("/{key_id}/revoke", response_model=KeyDetailPublic)
async def revoke_key(key_id: KeyId, principal: PartnerWriter, request: Request) -> KeyDetailPublic:
    """Revokes the key, for good: its unused budget goes back to the balance (``refunded``;
    the fee stays paid), and what its requests in flight release follows. Revoking a
    revoked key changes nothing."""
    state = state_of(request)
    await keys_call(state, keys_of(state).RevokeKey, pb.RevokeKeyRequest(actor=principal.actor(), key_id=key_id))
    return await detail(state, principal, key_id)


@router.post("/{key_id}/suspend", response_model=KeyDetailPublic)
async def suspend_key(
    key_id: KeyId,
    principal: PartnerWriter,
    request: Request,
    body: Annotated[KeySuspend | None, Body()] = None,
) -> KeyDetailPublic:
    """Suspends the key (403 key_suspended at the gateway) until it is resumed."""
    state = state_of(request)
    note = body.note if body is not None else ""
    await keys_call(
        state, keys_of(state).SuspendKey, pb.SuspendKeyRequest(actor=principal.actor(), key_id=key_id, note=note)
    )
    return await detail(state, principal, key_id)


@router.post("/{key_id}/resume", response_model=KeyDetailPublic)
async def resume_key(key_id: KeyId, principal: PartnerWriter, request: Request) -> KeyDetailPublic:
    """Resumes a suspended (or exhausted) key. A revoked key cannot come back (409)."""
    state = state_of(request)
    await keys_call(state, keys_of(state).ResumeKey, pb.ResumeKeyRequest(actor=principal.actor(), key_id=key_id))
    return await detail(state, principal, key_id)
