"""gRPC servicer: translates proto <-> ``Book`` calls and ``LedgerError`` -> status codes."""

from __future__ import annotations

import functools
import logging

import grpc

from cg_ledger.book import Book, Conflict, InsufficientFunds, InvalidArgument, LedgerError, NotFound
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

log = logging.getLogger(__name__)

_CODES: dict[type[LedgerError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    InsufficientFunds: grpc.StatusCode.FAILED_PRECONDITION,
    Conflict: grpc.StatusCode.ABORTED,
}
_SOURCES = {
    ledger_pb2.USAGE_SOURCE_PROVIDER: "provider",
    ledger_pb2.USAGE_SOURCE_ESTIMATED: "estimated",
}


def _mapped_errors(handler):
    @functools.wraps(handler)
    async def wrapper(self, request, context):
        try:
            return await handler(self, request, context)
        except LedgerError as e:
            await context.abort(_CODES[type(e)], str(e))

    return wrapper


def _transfer_pb(t) -> ledger_pb2.TransferResult:
    return ledger_pb2.TransferResult(
        transfer_id=str(t.transfer_id), idempotency_id=t.idempotency_id, amount_ucr=t.amount_ucr, replayed=t.replayed
    )


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    def __init__(self, book: Book) -> None:
        self.book = book

    @_mapped_errors
    async def Deposit(self, request, context):  # noqa: N802 (gRPC names)
        return _transfer_pb(await self.book.deposit(request.idempotency_id, request.account, request.amount_ucr, request.memo))

    @_mapped_errors
    async def Transfer(self, request, context):  # noqa: N802
        return _transfer_pb(
            await self.book.transfer(
                request.idempotency_id, request.debit_account, request.credit_account, request.amount_ucr, request.memo
            )
        )

    @_mapped_errors
    async def Reserve(self, request, context):  # noqa: N802
        out = await self.book.reserve(
            request.request_id,
            request.account,
            request.model,
            request.price.input_usd_per_mtok,
            request.price.output_usd_per_mtok,
            request.price.price_book_version,
            request.max_input_tokens,
            request.max_output_tokens,
            request.ttl_seconds,
        )
        return ledger_pb2.ReserveResponse(
            request_id=out.request_id, held_ucr=out.held_ucr, available_ucr=out.available_ucr, replayed=out.replayed
        )

    @_mapped_errors
    async def Settle(self, request, context):  # noqa: N802
        source = _SOURCES.get(request.usage_source)
        if source is None:
            raise InvalidArgument("usage_source: provider or estimated")
        out = await self.book.settle(request.request_id, request.input_tokens, request.output_tokens, source)
        return ledger_pb2.SettleResponse(
            request_id=out.request_id,
            held_ucr=out.held_ucr,
            charged_ucr=out.charged_ucr,
            released_ucr=out.released_ucr,
            unpaid_ucr=out.unpaid_ucr,
            price_book_version=out.price_book_version,
            replayed=out.replayed,
        )

    @_mapped_errors
    async def Void(self, request, context):  # noqa: N802
        released, replayed = await self.book.void(request.request_id, request.reason)
        return ledger_pb2.VoidResponse(request_id=request.request_id, released_ucr=released, replayed=replayed)

    @_mapped_errors
    async def GetBalance(self, request, context):  # noqa: N802
        b = await self.book.balance(request.account)
        return ledger_pb2.Balance(
            account=b.account, posted_ucr=b.posted_ucr, pending_ucr=b.pending_ucr, available_ucr=b.available_ucr
        )
