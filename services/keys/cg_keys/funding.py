"""The keys service's side of money: ledger calls, each with an idempotency id derived
from the key, so a retry after any crash is applied once by the ledger; and the names of
the ledger accounts a key's money lives in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from cg_keys.errors import FailedPrecondition, InvalidArgument, Unavailable
from cglib.grpc_client import TRANSIENT
from cglib.money import UCR_PER_CREDIT
from creditgate.ledger.v1 import ledger_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2_grpc

Reply = TypeVar("Reply", bound=Message)


def partner_account(partner_id: str) -> str:
    return f"partner:{partner_id}"


def key_account(key_id: str) -> str:
    """A partner key's budget."""
    return f"key:{key_id}"


def deposit_account(key_id: str) -> str:
    """Where a customer-created key's deposit is held."""
    return f"keydeposit:{key_id}"


def customer_account(customer_id: str) -> str:
    """A customer's AI credits."""
    return f"customer:{customer_id}"


def revenue_account(partner_id: str) -> str:
    """A partner's revenue from its customers' AI credits."""
    return f"partnerrev:{partner_id}"


class Funding:
    def __init__(self, stub: ledger_pb2_grpc.LedgerServiceAsyncStub, timeout_s: float) -> None:
        self.stub = stub
        self.timeout_s = timeout_s

    async def _call(self, method: Callable[..., Awaitable[Reply]], request: Message, what: str) -> Reply:
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            if e.code() in TRANSIENT:
                raise Unavailable(f"the ledger is unavailable ({what}); retry with the same idempotency key") from None
            if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise FailedPrecondition(f"the partner's balance cannot cover {what}") from None
            if e.code() == grpc.StatusCode.ABORTED:  # the ledger saw this id with other values
                raise InvalidArgument("idempotency_key", "already used with different values") from None
            if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
                # the ledger's bounds (one amount, an account's counters): nothing was written
                raise InvalidArgument("amount", "refused by the ledger: out of range") from None
            raise

    async def quote(self, budget_ucr: int, fee_rate: str) -> pb.FundKeyResponse:
        return await self._call(
            self.stub.QuoteKeyFunding, pb.QuoteKeyFundingRequest(budget_ucr=budget_ucr, fee_rate=fee_rate), "the quote"
        )

    async def fund(
        self, idempotency_id: str, partner_id: str, key_id: str, budget_ucr: int, fee_rate: str
    ) -> pb.FundKeyResponse:
        return await self._call(
            self.stub.FundKey,
            pb.FundKeyRequest(
                idempotency_id=idempotency_id,
                partner_id=partner_id,
                key_id=key_id,
                budget_ucr=budget_ucr,
                fee_rate=fee_rate,
            ),
            "the key's budget and fee",
        )

    async def refund(self, idempotency_id: str, partner_id: str, key_id: str) -> int:
        out = await self._call(
            self.stub.RefundKey,
            pb.RefundKeyRequest(idempotency_id=idempotency_id, partner_id=partner_id, key_id=key_id),
            "the refund",
        )
        return out.amount_ucr

    async def hold_deposit(self, idempotency_id: str, partner_id: str, key_id: str, amount_ucr: int) -> None:
        await self._call(
            self.stub.HoldKeyDeposit,
            pb.KeyDepositRequest(
                idempotency_id=idempotency_id, partner_id=partner_id, key_id=key_id, amount_ucr=amount_ucr
            ),
            f"the {amount_ucr // UCR_PER_CREDIT:,}-credit key deposit",
        )

    async def release_deposit(self, idempotency_id: str, partner_id: str, key_id: str) -> int:
        out = await self._call(
            self.stub.ReleaseKeyDeposit,
            pb.KeyDepositRequest(idempotency_id=idempotency_id, partner_id=partner_id, key_id=key_id),
            "the deposit release",
        )
        return out.amount_ucr

    async def balances(self, accounts: list[str]) -> dict[str, pb.Balance]:
        if not accounts:
            return {}
        out = await self._call(self.stub.GetBalances, pb.GetBalancesRequest(accounts=accounts), "balances")
        return {b.account: b for b in out.balances}

    async def balance(self, account: str) -> pb.Balance | None:
        try:
            return await self.stub.GetBalance(pb.GetBalanceRequest(account=account), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            if e.code() in TRANSIENT:
                raise Unavailable("the ledger is unavailable") from None
            raise
