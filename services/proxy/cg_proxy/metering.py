"""Metering: the reservation before forwarding, and the token counts settled after.

The hold is an upper bound: the prompt's tokens as ``cg_proxy.tokens`` bounds them
(tiktoken for OpenAI models, the body's bytes for others), and the reply no more than
``max_tokens`` (or the model's output cap) for each of its ``n`` choices.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import grpc

from cg_proxy import errors
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

_UNAVAILABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
# Transient failures worth retrying for a settlement that must not be lost.
RETRYABLE = _UNAVAILABLE + (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


@dataclass
class Usage:
    input_tokens: int
    output_tokens: int
    source: int  # ledger_pb2.UsageSource

    @property
    def source_name(self) -> str:
        return "provider" if self.source == ledger_pb2.USAGE_SOURCE_PROVIDER else "estimated"


# The output bound of a request that names none, for a model whose catalog entry has no cap.
DEFAULT_OUTPUT_CAP = 4096


def max_output_tokens(body: dict[str, Any], route: keys_pb2.ModelRoute) -> int:
    """The request's output bound (``max_completion_tokens``, else ``max_tokens``), at
    most the model's cap. A request through the routes was validated before
    (``cg_proxy.request_checks``: a positive 64-bit integer, not above the cap); the
    check here stays for other callers, such as a provider adapter's own tests."""
    cap = route.max_output_tokens
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer():  # JSON's 100.0 is 100
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise errors.bad_request(f"`{field}` must be a positive integer.", param=field)
        # a model without a known cap holds what was asked for: the provider may produce it
        return min(value, cap) if cap else value
    return cap or DEFAULT_OUTPUT_CAP


def usage_from(payload: dict[str, Any] | None) -> Usage | None:
    """The provider-reported usage block, if it is well formed."""
    usage = (payload or {}).get("usage")
    if not isinstance(usage, dict):
        return None
    pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(pt, int) or not isinstance(ct, int) or pt < 0 or ct < 0:
        return None
    return Usage(pt, ct, ledger_pb2.USAGE_SOURCE_PROVIDER)


def estimate(prompt_bound: int, output_chars: int) -> Usage:
    """A marked estimate when the provider never reported usage: the prompt bound we
    reserved with, and ~4 characters per output token, rounded up."""
    return Usage(prompt_bound, (output_chars + 3) // 4, ledger_pb2.USAGE_SOURCE_ESTIMATED)


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
        self, stub: ledger_pb2_grpc.LedgerServiceStub, timeout_s: float, linger_s: float = 0.002, max_batch: int = 256
    ) -> None:
        self.stub = stub
        self.timeout_s = timeout_s
        self.linger_s = linger_s
        self.max_batch = max_batch
        self._queue: list[tuple[ledger_pb2.SettleRequest, asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None

    async def settle(self, request: ledger_pb2.SettleRequest) -> ledger_pb2.SettleResponse:
        fut = asyncio.get_running_loop().create_future()
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

    async def _send(self, batch: list[tuple[ledger_pb2.SettleRequest, asyncio.Future]]) -> None:
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


class Meter:
    def __init__(self, stub: ledger_pb2_grpc.LedgerServiceStub, timeout_s: float, ttl_s: int) -> None:
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
            if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                raise errors.insufficient_quota() from None
            if e.code() == grpc.StatusCode.OUT_OF_RANGE:  # the hold passes the ledger's bound on one amount
                raise errors.bad_request(
                    "This request could cost more than the gateway holds for a single request: lower "
                    "`max_tokens` (or `n`) or send a shorter prompt.",
                    param="max_tokens",
                ) from None
            if e.code() in _UNAVAILABLE:
                raise errors.service_unavailable("ledger") from None
            raise

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
