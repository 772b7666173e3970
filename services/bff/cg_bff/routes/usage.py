"""Usage: series, the request log (JSON or CSV), profit and runway (``cg_bff.usage``).

| route | who | what |
|---|---|---|
| GET /partner/usage/series | PartnerReader | sums per hour/day: the partner, a key, a customer or a model |
| GET /partner/usage/requests | PartnerReader | the request log, filtered, paged; ``format=csv`` |
| GET /partner/usage/profit | PartnerReader | revenue, cost, margin of customer-billed usage |
| GET /partner/usage/runway | PartnerReader | every key's runway, paged |
| GET /partner/keys/{key_id}/runway | PartnerReader | one key's runway |
| GET /customer/usage/series | CustomerUser | the customer's own sums |
| GET /customer/usage/requests | CustomerUser | the customer's own request log; ``format=csv`` |

Rows are selected by ``principal.partner_id`` (and ``customer_id`` for a customer),
never by an id from the request. A key or customer named in a request is first looked
up in keys *as the principal*: another tenant's (or no such) id is a 404 that reveals
nothing. Periods: ``from`` (inclusive) and ``to`` (exclusive), ISO 8601 (UTC when no
offset is given).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from cg_bff import errors
from cg_bff.principal import CustomerUser, PartnerReader, Principal
from cg_bff.requests import Cursor, Limit, Page, decode_cursor, encode_cursor
from cg_bff.state import BffState
from cg_bff.usage import queries
from cg_bff.usage.export import csv_stream
from cg_bff.usage.profit import ProfitBy, profit
from cg_bff.usage.queries import BUCKET_MS, Granularity, Period, RequestFilters, Scope, SeriesBy
from cg_bff.usage.runway import WINDOW_MS, runway
from cg_bff.usage.schemas import (
    CustomerRequestPublic,
    CustomerSeriesPoint,
    CustomerSeriesPublic,
    Outcome,
    ProfitPublic,
    ProfitRow,
    RequestPublic,
    RunwayPublic,
    SeriesPoint,
    SeriesPublic,
    Source,
    utc,
)
from creditgate.keys.v1 import keys_pb2 as kpb
from creditgate.keys.v1 import keys_pb2_grpc

router = APIRouter(tags=["usage"])

DAY_MS = 86_400_000
# The longest period a series may cover, per granularity (2,160 hours; 400 days).
MAX_SPAN_MS = {"hour": 90 * DAY_MS, "day": 400 * DAY_MS}
DEFAULT_SPAN_MS = {"hour": DAY_MS, "day": 30 * DAY_MS}
MAX_PROFIT_SPAN_MS = 400 * DAY_MS
DEFAULT_PROFIT_SPAN_MS = 30 * DAY_MS
NO_END_MS = 2**62  # the request log with no ``to``: everything kept
RUNWAY_CONCURRENCY = 8

From = Annotated[datetime | None, Query(alias="from", description="Start, inclusive (ISO 8601).")]
To = Annotated[datetime | None, Query(alias="to", description="End, exclusive (ISO 8601).")]
# Ids and model names are printable ASCII (a NUL or control character never reaches a query).
PRINTABLE = r"^[\x20-\x7e]+$"
KeyId = Annotated[str | None, Query(min_length=1, max_length=64, pattern=PRINTABLE)]
CustomerId = Annotated[str | None, Query(min_length=1, max_length=64, pattern=PRINTABLE)]
Model = Annotated[str | None, Query(min_length=1, max_length=120, pattern=PRINTABLE)]
Format = Annotated[Literal["json", "csv"], Query(description="json (paged) or csv (every matching row).")]
CSV_RESPONSE = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "JSON page, or CSV"}}


def _state(request: Request) -> BffState:
    state: BffState = request.app.state.bff
    return state


def keys_stub(state: BffState) -> keys_pb2_grpc.KeysServiceAsyncStub:
    return state.backends.keys


def _ms(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


def series_period(granularity: Granularity, start: datetime | None, end: datetime | None) -> Period:
    step = BUCKET_MS[granularity]
    now = _now_ms()
    end_ms = _ms(end) if end is not None else now - now % step + step  # the current bucket, whole
    start_ms = _ms(start) if start is not None else end_ms - DEFAULT_SPAN_MS[granularity]
    _check_period(start_ms, end_ms, MAX_SPAN_MS[granularity], f"at most {MAX_SPAN_MS[granularity] // DAY_MS} days")
    return Period(start_ms - start_ms % step, end_ms)


def _check_period(start_ms: int, end_ms: int, max_span_ms: int, span_words: str) -> None:
    if start_ms < 0:
        raise errors.invalid("The period starts before 1970.", {"from": "after 1970-01-01"})
    if end_ms <= start_ms:
        raise errors.invalid("The period ends before it starts.", {"to": "after from"})
    if end_ms - start_ms > max_span_ms:
        raise errors.invalid(f"The period is too long: {span_words}.", {"from": span_words})


async def _check_key(state: BffState, principal: Principal, key_id: str) -> kpb.KeyDetail:
    """The key as keys shows it to this principal (404 for anyone else's)."""
    request = kpb.GetKeyRequest(actor=principal.actor(), key_id=key_id)
    return await state.backends.call(keys_stub(state).GetKey, request, what="key")


async def _check_customer(state: BffState, principal: Principal, customer_id: str) -> None:
    request = kpb.GetCustomerRequest(actor=principal.actor(), customer_id=customer_id)
    await state.backends.call(keys_stub(state).GetCustomer, request, what="customer")


def _partner_scope(principal: Principal) -> Scope:
    if not principal.partner_id:
        raise errors.forbidden("This is a partner's route.")
    return Scope(principal.partner_id)


def _customer_scope(principal: Principal) -> Scope:
    """A customer's rows only: never the partner's rows that bill no customer."""
    if not principal.partner_id or not principal.customer_id:
        raise errors.forbidden("This is a customer's route.")
    return Scope(principal.partner_id, principal.customer_id)


def _request_cursor(cursor: str | None) -> tuple[int, str] | None:
    value = decode_cursor(cursor)
    if value is None:
        return None
    t, r = value.get("t"), value.get("r")
    if (
        not isinstance(t, int)
        or isinstance(t, bool)
        or not 0 <= t < NO_END_MS
        or not isinstance(r, str)
        or len(r) > 120
    ):
        raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"})
    return t, r


def _filters(start: datetime | None, end: datetime | None, **filters: str | None) -> RequestFilters:
    start_ms = _ms(start) if start is not None else 0
    end_ms = _ms(end) if end is not None else NO_END_MS
    _check_period(start_ms, end_ms, NO_END_MS, "")
    return RequestFilters(Period(start_ms, end_ms), **filters)


# -- partner ------------------------------------------------------------------------------


@router.get("/partner/usage/series", response_model=SeriesPublic)
async def partner_series(
    request: Request,
    principal: PartnerReader,
    by: SeriesBy = "partner",
    id: Annotated[
        str | None,
        Query(
            min_length=1, max_length=120, pattern=PRINTABLE, description="The key, customer or model (by != partner)."
        ),
    ] = None,
    granularity: Granularity = "hour",
    start: From = None,
    end: To = None,
) -> SeriesPublic:
    state = _state(request)
    if by == "partner" and id is not None:
        raise errors.invalid("A partner series names no id.", {"id": "only with by=key, customer or model"})
    if by != "partner" and not id:
        raise errors.invalid(f"Name the {by}.", {"id": "required with by=key, customer or model"})
    period = series_period(granularity, start, end)
    if by == "key":
        await _check_key(state, principal, id or "")
    elif by == "customer":
        await _check_customer(state, principal, id or "")
    scope = _partner_scope(principal)
    buckets = await queries.series(state.engine, scope, granularity, period, by, id or "")
    return SeriesPublic(
        by=by,
        id=id,
        granularity=granularity,
        start=utc(period.start_ms),
        end=utc(period.end_ms),
        points=[SeriesPoint.of(b) for b in buckets],
    )


@router.get("/partner/usage/requests", response_model=Page[RequestPublic], responses=CSV_RESPONSE)  # type: ignore[arg-type]  # FastAPI types responses loosely
async def partner_requests(
    request: Request,
    principal: PartnerReader,
    key_id: KeyId = None,
    customer_id: CustomerId = None,
    model: Model = None,
    outcome: Outcome | None = None,
    source: Source | None = None,
    start: From = None,
    end: To = None,
    cursor: Cursor = None,
    limit: Limit = 50,
    format: Format = "json",
) -> Page[RequestPublic] | StreamingResponse:
    state = _state(request)
    f = _filters(start, end, key_id=key_id, customer_id=customer_id, model=model, outcome=outcome, source=source)
    after = _request_cursor(cursor)
    if key_id is not None:
        await _check_key(state, principal, key_id)
    if customer_id is not None:
        await _check_customer(state, principal, customer_id)
    scope = _partner_scope(principal)
    if format == "csv":
        return _csv(queries.request_chunks(state.engine, scope, f), for_partner=True)
    rows, after = await queries.request_page(state.engine, scope, f, after, limit)
    next_cursor = encode_cursor({"t": after[0], "r": after[1]}) if after else None
    return Page[RequestPublic](data=[RequestPublic.of(r) for r in rows], next_cursor=next_cursor)


@router.get("/partner/usage/profit", response_model=ProfitPublic)
async def partner_profit(
    request: Request,
    principal: PartnerReader,
    by: ProfitBy = "customer",
    start: From = None,
    end: To = None,
) -> ProfitPublic:
    state = _state(request)
    end_ms = _ms(end) if end is not None else _now_ms()
    start_ms = _ms(start) if start is not None else end_ms - DEFAULT_PROFIT_SPAN_MS
    _check_period(start_ms, end_ms, MAX_PROFIT_SPAN_MS, "at most 400 days")
    period = Period(start_ms - start_ms % BUCKET_MS["hour"], end_ms)  # whole hours
    rows, total = await profit(state.engine, _partner_scope(principal).partner_id, by, period)
    return ProfitPublic(
        by=by,
        start=utc(period.start_ms),
        end=utc(period.end_ms),
        rows=[ProfitRow.of(p) for p in rows],
        total=ProfitRow.of(total),
    )


async def _runways(state: BffState, principal: Principal, keys: list[kpb.Key]) -> list[RunwayPublic]:
    now = _now_ms()
    limit = asyncio.Semaphore(RUNWAY_CONCURRENCY)

    async def detail(key: kpb.Key) -> kpb.KeyDetail | None:
        if key.kind != "partner":
            return kpb.KeyDetail(key=key)  # pay-as-you-go: no budget to read
        async with limit:
            try:
                return await _check_key(state, principal, key.id)
            except errors.ApiError as e:
                if e.status == 404:  # gone since the list was read
                    return None
                raise

    details = [d for d in await asyncio.gather(*(detail(k) for k in keys)) if d is not None]
    partner_id = _partner_scope(principal).partner_id
    spent = await queries.key_spend(state.engine, partner_id, [d.key.id for d in details], now - WINDOW_MS)
    return [RunwayPublic.of(runway(d, spent[d.key.id], now)) for d in details]


@router.get("/partner/usage/runway", response_model=Page[RunwayPublic])
async def partner_runways(
    request: Request, principal: PartnerReader, cursor: Cursor = None, limit: Limit = 50
) -> Page[RunwayPublic]:
    """Every key's runway (revoked keys left out), in key id order."""
    state = _state(request)
    after = (decode_cursor(cursor) or {}).get("k", "")
    if not isinstance(after, str) or len(after) > 64:
        raise errors.invalid("The cursor is not one of ours.", {"cursor": "not a cursor from this API"})
    listed = await state.backends.call(keys_stub(state).ListKeys, kpb.ListKeysRequest(actor=principal.actor()))
    keys = sorted((k for k in listed.keys if k.id > after), key=lambda k: k.id)
    page = keys[:limit]
    next_cursor = encode_cursor({"k": page[-1].id}) if len(keys) > limit else None
    return Page[RunwayPublic](data=await _runways(state, principal, page), next_cursor=next_cursor)


@router.get("/partner/keys/{key_id}/runway", response_model=RunwayPublic)
async def key_runway(
    request: Request, principal: PartnerReader, key_id: Annotated[str, Path(max_length=64, pattern=PRINTABLE)]
) -> RunwayPublic:
    state = _state(request)
    detail = await _check_key(state, principal, key_id)
    now = _now_ms()
    spent = await queries.key_spend(state.engine, _partner_scope(principal).partner_id, [key_id], now - WINDOW_MS)
    return RunwayPublic.of(runway(detail, spent[key_id], now))


# -- customer -----------------------------------------------------------------------------


@router.get("/customer/usage/series", response_model=CustomerSeriesPublic)
async def customer_series(
    request: Request,
    principal: CustomerUser,
    key_id: KeyId = None,
    granularity: Granularity = "hour",
    start: From = None,
    end: To = None,
) -> CustomerSeriesPublic:
    state = _state(request)
    period = series_period(granularity, start, end)
    if key_id is not None:
        await _check_key(state, principal, key_id)
    scope = _customer_scope(principal)
    by: SeriesBy = "key" if key_id is not None else "partner"
    buckets = await queries.series(state.engine, scope, granularity, period, by, key_id or "")
    return CustomerSeriesPublic(
        key_id=key_id,
        granularity=granularity,
        start=utc(period.start_ms),
        end=utc(period.end_ms),
        points=[CustomerSeriesPoint.of(b) for b in buckets],
    )


@router.get("/customer/usage/requests", response_model=Page[CustomerRequestPublic], responses=CSV_RESPONSE)  # type: ignore[arg-type]  # as above
async def customer_requests(
    request: Request,
    principal: CustomerUser,
    key_id: KeyId = None,
    model: Model = None,
    outcome: Outcome | None = None,
    source: Source | None = None,
    start: From = None,
    end: To = None,
    cursor: Cursor = None,
    limit: Limit = 50,
    format: Format = "json",
) -> Page[CustomerRequestPublic] | StreamingResponse:
    state = _state(request)
    f = _filters(start, end, key_id=key_id, model=model, outcome=outcome, source=source)
    after = _request_cursor(cursor)
    if key_id is not None:
        await _check_key(state, principal, key_id)
    scope = _customer_scope(principal)
    if format == "csv":
        return _csv(queries.request_chunks(state.engine, scope, f), for_partner=False)
    rows, after = await queries.request_page(state.engine, scope, f, after, limit)
    next_cursor = encode_cursor({"t": after[0], "r": after[1]}) if after else None
    return Page[CustomerRequestPublic](data=[CustomerRequestPublic.of(r) for r in rows], next_cursor=next_cursor)


def _csv(chunks: AsyncIterator[list[Any]], for_partner: bool) -> StreamingResponse:
    return StreamingResponse(
        csv_stream(chunks, for_partner),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="usage-requests.csv"'},
    )
