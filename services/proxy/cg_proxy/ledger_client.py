"""The proxy's ledger client: reserve before forwarding, then settle or void.

``reserve`` holds an upper bound of the request's cost (``cg_proxy.tokens`` bounds the
prompt, ``cg_proxy.token_usage`` the output) and turns the ledger's refusals into the
client's answer (``refusal``). ``settle`` goes through ``SettleBatcher``: settlements
leave a few milliseconds' worth at a time, in one ``SettleBatch`` call. The usage
recorder (``cg_proxy.usage_recorder``) calls ``settle`` and ``void`` off the request
path, and retries them.
"""

from __future__ import annotations

import asyncio

import grpc

from cg_proxy import errors
from cg_proxy.token_usage import Usage
from cglib.grpc_client import TRANSIENT
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc


def refusal(code: grpc.StatusCode) -> errors.APIError | None:
    """The client's answer when the ledger refuses a reservation with ``code``; None for a
    code that is not one of these (the caller re-raises it: an unexpected 500)."""
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
        return errors.insufficient_quota()
    if code == grpc.StatusCode.OUT_OF_RANGE:  # the hold passes the ledger's bound on one amount
        return errors.bad_request(
            "This request could cost more than the gateway holds for a single request: lower "
            "`max_tokens` (or `n`) or send a shorter prompt.",
            param="max_tokens",
        )
    if code in TRANSIENT:
        return errors.service_unavailable("ledger")
    return None


_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


class SettleBatcher:
    """Settlements leave together: what is queued within ``linger_s`` (or ``max_batch``
    of it) goes in one ``SettleBatch`` call, which the ledger commits as one group. Each
    caller gets its own outcome, or the call's error, as from ``Settle`` (so the usage
    recorder's retries treat both alike). Off the request path: the linger only delays
    settlement, never a reply."""

    def __init__(
        self,
        stub: ledger_pb2_grpc.LedgerServiceAsyncStub,
        timeout_s: float,
        linger_s: float = 0.002,
        max_batch: int = 256,
    ) -> None:
        self.stub = stub
        self.timeout_s = timeout_s
        self.linger_s = linger_s
        self.max_batch = max_batch
        self._queue: list[tuple[ledger_pb2.SettleRequest, asyncio.Future[ledger_pb2.SettleResponse]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def settle(self, request: ledger_pb2.SettleRequest) -> ledger_pb2.SettleResponse:
        fut: asyncio.Future[ledger_pb2.SettleResponse] = asyncio.get_running_loop().create_future()
        self._queue.append((request, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        # until the queue stays empty: what is queued while a batch is in flight goes next
        while self._queue:
            await asyncio.sleep(self.linger_s)
            sends = []
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                sends.append(self._send(batch))
            await asyncio.gather(*sends)

    async def _send(
        self, batch: list[tuple[ledger_pb2.SettleRequest, asyncio.Future[ledger_pb2.SettleResponse]]]
    ) -> None:
        outcomes: list[ledger_pb2.SettleResponse | grpc.aio.AioRpcError]
        try:
            resp = await self.stub.SettleBatch(
                ledger_pb2.SettleBatchRequest(settlements=[req for req, _ in batch]), timeout=self.timeout_s
            )
        except grpc.aio.AioRpcError as e:
            outcomes = [e] * len(batch)
        except Exception as e:  # e.g. the channel closed under us: every caller retries
            outcomes = [_rpc_error(grpc.StatusCode.UNAVAILABLE, repr(e))] * len(batch)
        else:
            outcomes = [
                o.settled
                if o.status_code == 0
                else _rpc_error(_STATUS_CODES.get(o.status_code, grpc.StatusCode.UNKNOWN), o.error)
                for o in resp.outcomes
            ]
            if len(outcomes) != len(batch):
                outcomes = [_rpc_error(grpc.StatusCode.INTERNAL, "SettleBatch answered a different count")] * len(batch)
        for (_, fut), outcome in zip(batch, outcomes, strict=True):
            if fut.done():
                continue
            if isinstance(outcome, Exception):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)


class LedgerClient:
    """Reserve, settle and void over the ledger's gRPC stub, each with the RPC deadline."""

    def __init__(self, stub: ledger_pb2_grpc.LedgerServiceAsyncStub, timeout_s: float, ttl_s: int) -> None:
        self.stub = stub
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.settlements = SettleBatcher(stub, timeout_s)

    async def reserve(
        self,
        request_id: str,
        billing: keys_pb2.LedgerBilling,
        route: keys_pb2.ModelRoute,
        max_input: int,
        max_output: int,
        rate_limit: ledger_pb2.RateLimit | None = None,
    ) -> ledger_pb2.ReserveResponse:
        """The hold, or the ``APIError`` the client gets for a refusal (``refusal``)."""
        req = ledger_pb2.ReserveRequest(
            request_id=request_id,
            account=billing.payer_account,
            model=route.id,
            price=ledger_pb2.Price(
                input_usd_per_mtok=route.input_usd_per_mtok,
                output_usd_per_mtok=route.output_usd_per_mtok,
                price_book_version=route.price_book_version,
            ),
            max_input_tokens=max_input,
            max_output_tokens=max_output,
            ttl_seconds=self.ttl_s,
            rate_limit=rate_limit,
        )
        if billing.customer_account:
            req.customer.CopyFrom(
                ledger_pb2.CustomerBilling(
                    customer_account=billing.customer_account,
                    revenue_account=billing.revenue_account,
                    profit_multiplier=billing.profit_multiplier,
                    price_per_ai_credit_cents=billing.price_per_ai_credit_cents,
                    floor_usd_per_mtok=billing.floor_usd_per_mtok,
                )
            )
        try:
            return await self.stub.Reserve(req, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            refused = refusal(e.code())
            if refused is None:
                raise
            raise refused from None

    async def settle(self, request_id: str, usage: Usage) -> ledger_pb2.SettleResponse:
        return await self.settlements.settle(
            ledger_pb2.SettleRequest(
                request_id=request_id,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                usage_source=usage.source,
            )
        )

    async def void(self, request_id: str, reason: str) -> ledger_pb2.VoidResponse:
        return await self.stub.Void(
            ledger_pb2.VoidRequest(request_id=request_id, reason=reason), timeout=self.timeout_s
        )
