"""The partner's account: ``GET /partner`` (tier, fee, balance, reserved, spent this
month), the models of its tier, the billing preview, customer self-service settings, and
the statement of its balance (paged, or CSV).

Every route acts on the principal's own partner (``principal.actor()``); reads are for
any of its users and tokens (``PartnerReader``), changes for owners, admins and
read-write tokens (``PartnerWriter``)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from cg_bff import errors
from cg_bff.principal import PartnerReader, PartnerWriter
from cg_bff.requests import Cursor, Limit, Page, decode_cursor, encode_cursor
from cg_bff.schemas.money import AiCredits, Credits, at
from cg_bff.schemas.partner import (
    BillingPreviewCreate,
    BillingPreviewPublic,
    BillingPreviewRow,
    CatalogPublic,
    PartnerPublic,
    SelfServicePublic,
    SelfServiceUpdate,
    StatementEntry,
    fee_percent,
)
from cg_bff.tenant import keys_of, ledger_of, state_of
from cg_bff.tenant.ledger import (
    balance,
    balances,
    cost_since_ucr,
    deposit_account,
    month_start,
    partner_account,
    statement,
)
from cglib.money import KEY_DEPOSIT_CREDITS, UCR_PER_CREDIT
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2 as lpb

router = APIRouter(prefix="/partner", tags=["partner"])
DEPOSIT_UCR = KEY_DEPOSIT_CREDITS * UCR_PER_CREDIT


@router.get("", response_model=PartnerPublic)
async def get_partner(principal: PartnerReader, request: Request) -> PartnerPublic:
    """The partner's account: tier and fee, balance (credits and USD), what is reserved,
    what its keys' requests cost this month, and the gateway's base URL."""
    state = state_of(request)
    b, actor = state.backends, principal.actor()
    partner, listed = await asyncio.gather(
        b.call(keys_of(state).GetPartner, pb.GetPartnerRequest(actor=actor), what="partner"),
        b.call(keys_of(state).ListKeys, pb.ListKeysRequest(actor=actor), what="partner"),
    )
    account = partner_account(partner.id)
    deposits = [deposit_account(k.id) for k in listed.keys if k.kind == "customer"]
    month = month_start()
    found, spent = await asyncio.gather(balances(state, [account, *deposits]), cost_since_ucr(state, partner.id, month))
    own = found.get(account, lpb.Balance())
    held_deposits = sum(found[d].posted_ucr for d in deposits if d in found)
    return PartnerPublic(
        id=partner.id,
        name=partner.name,
        tier=partner.tier,
        status="suspended" if partner.state == pb.PARTNER_STATUS_SUSPENDED else "active",
        fee_rate=partner.fee_rate,
        fee_percent=fee_percent(partner.fee_rate),
        balance=Credits.of(own.posted_ucr),
        available=Credits.of(own.available_ucr),
        reserved=Credits.of(own.pending_ucr + held_deposits),
        reserved_in_flight=Credits.of(own.pending_ucr),
        reserved_key_deposits=Credits.of(held_deposits),
        spent_this_month=Credits.of(spent),
        month_started_at=month,
        self_service=SelfServicePublic.of(partner.self_service, DEPOSIT_UCR),
        created_at=at(partner.created_at_unix),
        gateway_base_url=state.settings.proxy_public_url,
    )


@router.get("/models", response_model=CatalogPublic)
async def list_models(principal: PartnerReader, request: Request) -> CatalogPublic:
    """The models the partner's tier allows, grouped budget / mid tier / premium, with
    their list prices (USD per 1M tokens)."""
    state = state_of(request)
    b = state.backends
    return CatalogPublic.of(await b.call(keys_of(state).ListModels, pb.ListModelsRequest(actor=principal.actor())))


@router.post("/billing-preview", response_model=BillingPreviewPublic)
async def billing_preview(
    body: BillingPreviewCreate, principal: PartnerReader, request: Request
) -> BillingPreviewPublic:
    """What a customer would pay per model at these terms (multiplier, AI-credit price,
    floor) for a sample volume, and the partner's margin. Changes nothing."""
    state = state_of(request)
    b = state.backends
    catalog = await b.call(keys_of(state).ListModels, pb.ListModelsRequest(actor=principal.actor()))
    prices = {m.id: m for c in catalog.categories for m in c.models}
    wanted = list(dict.fromkeys(body.models)) or list(prices)
    unknown = {f"models[{i}]": "not a model of your tier" for i, m in enumerate(body.models) if m not in prices}
    if unknown:
        raise errors.invalid("Some models are not offered to your tier.", unknown)
    preview = await b.call(
        ledger_of(state).BillingPreview,
        lpb.BillingPreviewRequest(
            models=[
                lpb.ModelPrice(
                    model=m,
                    price=lpb.Price(
                        input_usd_per_mtok=prices[m].input_usd_per_mtok,
                        output_usd_per_mtok=prices[m].output_usd_per_mtok,
                        price_book_version=catalog.catalog_version,
                    ),
                )
                for m in wanted
            ],
            sample_input_tokens=body.sample_input_tokens,
            sample_output_tokens=body.sample_output_tokens,
            billing=lpb.CustomerBilling(
                profit_multiplier=str(body.profit_multiplier),
                price_per_ai_credit_cents=str(body.price_per_ai_credit_cents),
                floor_usd_per_mtok=str(body.floor_usd_per_mtok) if body.floor_usd_per_mtok is not None else "",
            ),
        ),
    )
    return BillingPreviewPublic(
        sample_input_tokens=body.sample_input_tokens,
        sample_output_tokens=body.sample_output_tokens,
        rows=[
            BillingPreviewRow(
                model=r.model,
                provider_cost=Credits.of(r.quote.provider_cost_ucr),
                customer_price=Credits.of(r.quote.customer_price_ucr),
                customer_price_ai_credits=AiCredits.of(r.quote.customer_price_uai),
                partner_margin=Credits.of(r.quote.partner_margin_ucr),
            )
            for r in preview.rows
        ],
    )


@router.get("/self-service", response_model=SelfServicePublic)
async def get_self_service(principal: PartnerReader, request: Request) -> SelfServicePublic:
    state = state_of(request)
    b = state.backends
    partner = await b.call(keys_of(state).GetPartner, pb.GetPartnerRequest(actor=principal.actor()))
    return SelfServicePublic.of(partner.self_service, DEPOSIT_UCR)


@router.put("/self-service", response_model=SelfServicePublic)
async def put_self_service(body: SelfServiceUpdate, principal: PartnerWriter, request: Request) -> SelfServicePublic:
    """Replaces the self-service settings; ``apply_to_existing_customers`` also turns the AI
    Gateway menu on for every existing customer (whether each then sees AI Gateway also
    depends on its AI credits)."""
    state = state_of(request)
    b = state.backends
    partner = await b.call(
        keys_of(state).UpdateSelfService,
        pb.UpdateSelfServiceRequest(
            actor=principal.actor(),
            settings=pb.SelfServiceSettings(
                enabled=body.enabled,
                apply_to_new_customers=body.apply_to_new_customers,
                default_profit_multiplier=str(body.default_profit_multiplier),
                ai_credit_price_cents=str(body.ai_credit_price_cents),
            ),
            apply_to_existing_customers=body.apply_to_existing_customers,
        ),
    )
    return SelfServicePublic.of(partner.self_service, DEPOSIT_UCR)


# -- the statement ---------------------------------------------------------------------

CSV_COLUMNS = (
    "id",
    "time",
    "kind",
    "effect",
    "amount_credits",
    "amount_ucr",
    "counterparty",
    "key_id",
    "request_id",
    "memo",
)
Since = Annotated[datetime | None, Query(alias="from", description="Only movements at or after this time.")]
Until = Annotated[datetime | None, Query(alias="to", description="Only movements before this time.")]


def _ms(t: datetime | None) -> int | None:
    return int(t.timestamp() * 1000) if t is not None else None


@router.get("/statement", response_model=Page[StatementEntry])
async def get_statement(
    principal: PartnerReader,
    request: Request,
    since: Since = None,
    until: Until = None,
    format: Annotated[Literal["json", "csv"], Query(description="csv: every movement, one file.")] = "json",
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[StatementEntry] | StreamingResponse:
    """Every movement of the partner's balance, newest first: deposits, key budgets and
    fees, refunds of revoked keys, customer-key deposits held and released, customer
    keys' requests. ``format=csv`` answers the whole (filtered) statement as a file, with
    a header row and amounts in credits as exact decimals."""
    state = state_of(request)
    account = partner_account(principal.partner_id or "")
    after = decode_cursor(cursor)
    token = ""
    if after is not None:
        token = after.get("t", "")
        if not isinstance(token, str) or not token.isdigit() or len(token) > 19:
            raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"})
    if await balance(state, account) is None:  # no movement ever: the ledger has no such account yet
        return await _csv(None) if format == "csv" else Page(data=[], next_cursor=None)
    since_ms, until_ms = _ms(since), _ms(until)
    if format == "csv":
        return await _csv(statement(state, account, token, since_ms, until_ms))
    rows: list[StatementEntry] = []
    more = False
    async for entry, _ in statement(state, account, token, since_ms, until_ms, page_size=limit + 1):
        if len(rows) == limit:
            more = True
            break
        rows.append(entry)
    return Page(data=rows, next_cursor=encode_cursor({"t": rows[-1].id}) if more else None)


async def _csv(entries: AsyncIterator[tuple[StatementEntry, str]] | None) -> StreamingResponse:
    """The statement as CSV. Its first page is read before the answer starts, so a ledger
    that is down is a 503, not a truncated file."""
    first = await anext(entries, None) if entries is not None else None

    async def rows() -> AsyncIterator[tuple[StatementEntry, str]]:
        if first is None or entries is None:
            return
        yield first
        async for row in entries:
            yield row

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        async for e, _ in rows():
            writer.writerow(
                (
                    e.id,
                    e.at.isoformat(),
                    e.kind,
                    e.effect,
                    e.amount.credits,
                    e.amount.ucr,
                    e.counterparty,
                    e.key_id or "",
                    e.request_id or "",
                    e.memo,
                )
            )
            if out.tell() > 64_000:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="statement.csv"'},
    )
