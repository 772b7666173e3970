"""gRPC servicer: translates proto <-> the ledger's operations. ``ERROR_CODES`` says which
status code each ``LedgerError`` is (applied by ``cglib.grpc_errors``'s interceptor, and
by ``SettleBatch`` to each of its outcomes). ``SettleBatch`` commits the batch together
(``settlebatch``), each settlement failing alone; ``SettleLeased`` likewise, from budget
leases (``leases``)."""

from __future__ import annotations

import dataclasses
import decimal
import logging
from collections.abc import Sequence

import grpc

from cg_ledger.balances import BalanceView
from cg_ledger.book import Book, TransferOutcome
from cg_ledger.charges import MAX_TOKENS, Billing, parse_billing
from cg_ledger.errors import (
    AccountClosed,
    Conflict,
    InsufficientFunds,
    InvalidArgument,
    LedgerError,
    NotFound,
    OutOfRange,
)
from cg_ledger.leases import LeasedSettlement, LeaseOutcome, Leases, SlotRequest
from cg_ledger.limits import check_bound, decimal_or_invalid
from cg_ledger.ratelimits import RateLimit
from cg_ledger.reservations import Reservations, SettleOutcome
from cg_ledger.settlebatch import Settlement, settle_batch
from cglib.grpc_errors import INTERNAL_DETAILS, ErrorCodes, status_for
from cglib.pricing import CustomerBilling, quote
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

log = logging.getLogger(__name__)

ERROR_CODES: ErrorCodes = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    InsufficientFunds: grpc.StatusCode.FAILED_PRECONDITION,
    AccountClosed: grpc.StatusCode.FAILED_PRECONDITION,
    Conflict: grpc.StatusCode.ABORTED,
    OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
}
_SOURCES = {
    ledger_pb2.USAGE_SOURCE_PROVIDER: "provider",
    ledger_pb2.USAGE_SOURCE_ESTIMATED: "estimated",
}

SETTLE_BATCH_MAX = 1000


def _transfer_pb(t: TransferOutcome) -> ledger_pb2.TransferResult:
    return ledger_pb2.TransferResult(
        transfer_id=str(t.transfer_id), idempotency_id=t.idempotency_id, amount_ucr=t.amount, replayed=t.replayed
    )


def _balance_pb(b: BalanceView) -> ledger_pb2.Balance:
    return ledger_pb2.Balance(
        account=b.account,
        posted_ucr=b.posted,
        pending_ucr=b.pending,
        available_ucr=b.available,
        closed_to=b.closed_to,
        refunded_ucr=b.refunded,
    )


def _terms(b: ledger_pb2.CustomerBilling) -> CustomerBilling | None:
    if not b.profit_multiplier and not b.price_per_ai_credit_cents:
        return None
    try:
        return CustomerBilling(
            decimal_or_invalid(b.profit_multiplier, "billing.profit_multiplier"),
            decimal_or_invalid(b.price_per_ai_credit_cents, "billing.price_per_ai_credit_cents"),
            decimal_or_invalid(b.floor_usd_per_mtok, "billing.floor_usd_per_mtok", default="0"),
        )
    except ValueError as e:
        raise InvalidArgument(f"billing.{e}") from e


def _quote_pb(
    price: ledger_pb2.Price, input_tokens: int, output_tokens: int, terms: CustomerBilling | None
) -> ledger_pb2.QuoteResponse:
    for field, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        if value < 0 or value > MAX_TOKENS:
            raise InvalidArgument(f"{field}: between 0 and {MAX_TOKENS}")
    in_price = decimal_or_invalid(price.input_usd_per_mtok, "price.input_usd_per_mtok")
    out_price = decimal_or_invalid(price.output_usd_per_mtok, "price.output_usd_per_mtok")
    try:
        q = quote(input_tokens, output_tokens, in_price, out_price, terms)
    except decimal.DecimalException as e:
        raise OutOfRange(f"quote: too large to price ({type(e).__name__})") from e
    check_bound(max(q.provider_cost_ucr, q.customer_price_ucr, q.customer_price_uai), "quote")
    return ledger_pb2.QuoteResponse(
        provider_cost_ucr=q.provider_cost_ucr,
        customer_price_ucr=q.customer_price_ucr,
        customer_price_uai=q.customer_price_uai,
        partner_margin_ucr=q.partner_margin_ucr,
    )


def _source(request: ledger_pb2.SettleRequest) -> str:
    source = _SOURCES.get(request.usage_source)
    if source is None:
        raise InvalidArgument("usage_source: provider or estimated")
    return source


def _settle_pb(out: SettleOutcome) -> ledger_pb2.SettleResponse:
    return ledger_pb2.SettleResponse(
        request_id=out.request_id,
        held_ucr=out.held_ucr,
        charged_ucr=out.charged_ucr,
        released_ucr=out.released_ucr,
        unpaid_ucr=out.unpaid_ucr,
        price_book_version=out.price_book_version,
        replayed=out.replayed,
        customer_charged_uai=out.customer_charged_uai,
        customer_unpaid_uai=out.customer_unpaid_uai,
    )


def _lease_pb(out: LeaseOutcome) -> ledger_pb2.LeaseResponse:
    return ledger_pb2.LeaseResponse(
        lease_id=out.lease_id,
        held_ucr=out.held_ucr,
        held_uai=out.held_uai,
        expires_at_unix_ms=out.expires_at_ms,
        status=out.status,
        replayed=out.replayed,
        changed_ucr=out.changed_ucr,
        changed_uai=out.changed_uai,
        granted_requests=out.slots,
        granted_requests_deadline_unix_ms=out.slots_end_ms,
        rate_limit=ledger_pb2.RateLimitState(**dataclasses.asdict(out.rate)) if out.rate else None,
    )


def _slots(request: ledger_pb2.AcquireLeaseRequest | ledger_pb2.ExtendLeaseRequest) -> SlotRequest | None:
    if not request.HasField("rate_limit"):
        return None
    limit = RateLimit.parse(request.rate_limit.key, request.rate_limit.rpm, request.rate_limit.tpm)
    return SlotRequest.of(limit, request.want_requests, request.min_requests)


def _billing(request: ledger_pb2.ReserveRequest | ledger_pb2.AcquireLeaseRequest) -> Billing | None:
    if not request.HasField("customer"):
        return None
    c = request.customer
    return parse_billing(
        c.customer_account, c.revenue_account, c.profit_multiplier, c.price_per_ai_credit_cents, c.floor_usd_per_mtok
    )


def _outcomes_pb(
    requests: Sequence[object], results: Sequence[SettleOutcome | Exception]
) -> ledger_pb2.SettleBatchResponse:
    """One ``SettleOutcome`` message per settlement: its outcome, or its error's status."""
    outcomes = []
    for settlement, result in zip(requests, results, strict=True):
        if isinstance(result, SettleOutcome):
            outcomes.append(ledger_pb2.SettleOutcome(settled=_settle_pb(result)))
            continue
        code = status_for(result, ERROR_CODES) if isinstance(result, LedgerError) else None
        if code is None:
            log.error("settlement failed", exc_info=result, extra={"request_id": getattr(settlement, "request_id", "")})
            code, message = grpc.StatusCode.INTERNAL, INTERNAL_DETAILS
        else:
            message = str(result)
        outcomes.append(ledger_pb2.SettleOutcome(status_code=code.value[0], error=message))
    return ledger_pb2.SettleBatchResponse(outcomes=outcomes)


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, book: Book, reservations: Reservations) -> None:
        self.book = book
        self.reservations = reservations
        self.leases = Leases(reservations)

    async def Deposit(
        self, request: ledger_pb2.DepositRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.TransferResult:
        return _transfer_pb(
            await self.book.deposit(request.idempotency_id, request.account, request.amount_ucr, request.memo)
        )

    async def GrantAiCredits(
        self, request: ledger_pb2.GrantAiCreditsRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.TransferResult:
        return _transfer_pb(
            await self.book.grant_ai_credits(
                request.idempotency_id, request.customer_account, request.amount_uai, request.memo
            )
        )

    async def Transfer(
        self, request: ledger_pb2.TransferRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.TransferResult:
        return _transfer_pb(
            await self.book.transfer(
                request.idempotency_id, request.debit_account, request.credit_account, request.amount_ucr, request.memo
            )
        )

    async def FundKey(
        self, request: ledger_pb2.FundKeyRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.FundKeyResponse:
        out = await self.book.fund_key(
            request.idempotency_id, request.partner_id, request.key_id, request.budget_ucr, request.fee_rate
        )
        return ledger_pb2.FundKeyResponse(
            budget_ucr=out.budget_ucr, fee_ucr=out.fee_ucr, total_ucr=out.total_ucr, replayed=out.replayed
        )

    async def QuoteKeyFunding(
        self, request: ledger_pb2.QuoteKeyFundingRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.FundKeyResponse:
        budget, fee = self.book.quote_funding(request.budget_ucr, request.fee_rate)
        return ledger_pb2.FundKeyResponse(budget_ucr=budget, fee_ucr=fee, total_ucr=budget + fee)

    async def RefundKey(
        self, request: ledger_pb2.RefundKeyRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.TransferResult:
        return _transfer_pb(await self.book.refund_key(request.idempotency_id, request.partner_id, request.key_id))

    async def HoldKeyDeposit(
        self, request: ledger_pb2.KeyDepositRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.TransferResult:
        return _transfer_pb(
            await self.book.hold_key_deposit(
                request.idempotency_id, request.partner_id, request.key_id, request.amount_ucr
            )
        )

    async def ReleaseKeyDeposit(
        self, request: ledger_pb2.KeyDepositRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.TransferResult:
        return _transfer_pb(
            await self.book.release_key_deposit(request.idempotency_id, request.partner_id, request.key_id)
        )

    async def Reserve(
        self, request: ledger_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.ReserveResponse:
        billing = _billing(request)
        out = await self.reservations.reserve(
            request.request_id,
            request.account,
            request.model,
            request.price.input_usd_per_mtok,
            request.price.output_usd_per_mtok,
            request.price.price_book_version,
            request.max_input_tokens,
            request.max_output_tokens,
            request.ttl_seconds,
            billing,
            RateLimit.parse(request.rate_limit.key, request.rate_limit.rpm, request.rate_limit.tpm),
        )
        resp = ledger_pb2.ReserveResponse(
            request_id=out.request_id,
            held_ucr=out.held_ucr,
            available_ucr=out.available_ucr,
            replayed=out.replayed,
            customer_held_uai=out.customer_held_uai,
        )
        if request.HasField("rate_limit"):
            resp.rate_limit.CopyFrom(ledger_pb2.RateLimitState(**dataclasses.asdict(out.rate)))
        return resp

    async def Settle(
        self, request: ledger_pb2.SettleRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.SettleResponse:
        out = await self.reservations.settle(
            request.request_id, request.input_tokens, request.output_tokens, _source(request)
        )
        return _settle_pb(out)

    async def SettleBatch(
        self, request: ledger_pb2.SettleBatchRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.SettleBatchResponse:
        if len(request.settlements) > SETTLE_BATCH_MAX:
            raise InvalidArgument(f"settlements: at most {SETTLE_BATCH_MAX}")
        # each is checked on its own: a malformed one fails alone
        batch: list[Settlement | LedgerError] = []
        for s in request.settlements:
            try:
                batch.append(Settlement(s.request_id, s.input_tokens, s.output_tokens, _source(s)))
            except LedgerError as e:
                batch.append(e)
        settled = iter(await settle_batch(self.reservations, [s for s in batch if isinstance(s, Settlement)]))
        results = [next(settled) if isinstance(item, Settlement) else item for item in batch]
        return _outcomes_pb(request.settlements, results)

    async def AcquireLease(
        self, request: ledger_pb2.AcquireLeaseRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.LeaseResponse:
        out = await self.leases.acquire(
            request.lease_id,
            request.account,
            _billing(request),
            (request.want_ucr, request.want_uai),
            (request.min_ucr, request.min_uai),
            request.ttl_seconds,
            _slots(request),
        )
        return _lease_pb(out)

    async def ExtendLease(
        self, request: ledger_pb2.ExtendLeaseRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.LeaseResponse:
        out = await self.leases.extend(
            request.extension_id,
            request.lease_id,
            (request.want_ucr, request.want_uai),
            (request.min_ucr, request.min_uai),
            request.ttl_seconds,
            _slots(request),
        )
        return _lease_pb(out)

    async def ReleaseLease(
        self, request: ledger_pb2.ReleaseLeaseRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.LeaseResponse:
        out = await self.leases.release(
            request.release_id, request.lease_id, (request.keep_ucr, request.keep_uai), request.return_requests
        )
        return _lease_pb(out)

    async def SettleLeased(
        self, request: ledger_pb2.SettleLeasedRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.SettleBatchResponse:
        if len(request.settlements) > SETTLE_BATCH_MAX:
            raise InvalidArgument(f"settlements: at most {SETTLE_BATCH_MAX}")
        batch: list[LeasedSettlement | LedgerError] = []
        for s in request.settlements:
            try:
                source = _source(s)  # type: ignore[arg-type]
                batch.append(
                    LeasedSettlement(
                        s.lease_id,
                        s.request_id,
                        s.model,
                        s.price.input_usd_per_mtok,
                        s.price.output_usd_per_mtok,
                        s.price.price_book_version,
                        s.input_tokens,
                        s.output_tokens,
                        source,
                        s.requested_at_unix_ms,
                    )
                )
            except LedgerError as e:
                batch.append(e)
        settled = iter(await self.leases.settle([s for s in batch if isinstance(s, LeasedSettlement)]))
        results = [next(settled) if isinstance(item, LeasedSettlement) else item for item in batch]
        return _outcomes_pb(request.settlements, results)

    async def Void(self, request: ledger_pb2.VoidRequest, context: grpc.aio.ServicerContext) -> ledger_pb2.VoidResponse:
        released, replayed = await self.reservations.void(request.request_id, request.reason)
        return ledger_pb2.VoidResponse(request_id=request.request_id, released_ucr=released, replayed=replayed)

    async def ExpireReservations(
        self, request: ledger_pb2.ExpireReservationsRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.ExpireReservationsResponse:
        count, released = await self.reservations.expire(request.now_unix_ms, request.limit or 500)
        return ledger_pb2.ExpireReservationsResponse(expired=count, released_ucr=released)

    async def GetBalance(
        self, request: ledger_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.Balance:
        return _balance_pb(await self.book.balance(request.account))

    async def GetBalances(
        self, request: ledger_pb2.GetBalancesRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.GetBalancesResponse:
        return ledger_pb2.GetBalancesResponse(
            balances=[_balance_pb(b) for b in await self.book.balances(list(request.accounts))]
        )

    async def ListTransfers(
        self, request: ledger_pb2.ListTransfersRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.ListTransfersResponse:
        rows, token = await self.book.statement(request.account, request.page_size, request.page_token)
        return ledger_pb2.ListTransfersResponse(
            transfers=[
                ledger_pb2.LedgerTransfer(
                    id=str(r.id),
                    idempotency_id=r.idempotency_id,
                    kind=r.kind,
                    debit_account=r.debit_account,
                    credit_account=r.credit_account,
                    amount=r.amount_ucr,
                    request_id=r.request_id or "",
                    memo=r.memo,
                    created_at_ms=r.created_at_ms,
                )
                for r in rows
            ],
            next_page_token=token,
        )

    async def Quote(
        self, request: ledger_pb2.QuoteRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.QuoteResponse:
        return _quote_pb(request.price, request.input_tokens, request.output_tokens, _terms(request.billing))

    async def BillingPreview(
        self, request: ledger_pb2.BillingPreviewRequest, context: grpc.aio.ServicerContext
    ) -> ledger_pb2.BillingPreviewResponse:
        if len(request.models) > 500:
            raise InvalidArgument("models: at most 500")
        terms = _terms(request.billing)
        rows = [
            ledger_pb2.BillingPreviewRow(
                model=m.model,
                quote=_quote_pb(m.price, request.sample_input_tokens, request.sample_output_tokens, terms),
            )
            for m in request.models
        ]
        return ledger_pb2.BillingPreviewResponse(rows=rows)
