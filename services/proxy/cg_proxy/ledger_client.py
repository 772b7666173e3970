"""The proxy's ledger client: reserve before forwarding, then settle or void.

``reserve`` holds an upper bound of the request's cost (``cg_proxy.tokens`` bounds the
prompt, ``cg_proxy.token_usage`` the output) and turns the ledger's refusals into the
client's answer (``refusal``). ``settle`` goes through ``SettleBatcher``: settlements
leave a few milliseconds' worth at a time, in one ``SettleBatch`` call. The usage
recorder (``cg_proxy.usage_recorder``) calls ``settle`` and ``void`` off the request
path, and retries them.

With budget leases (``leases``, ``CG_PROXY_LEASES``) a request takes its bound (``hold_bound``, priced with ``cglib.pricing`` exactly as the
ledger prices a hold) from the key's lease in memory, with no ledger call; it settles
with ``SettleLeased`` (batched the same way) and a void just gives the bound back. When
no lease can be had (the end of a budget) the request is reserved on its own, as without
leases. A key with an RPM limit (and no TPM limit) leases request slots with the money (one lease per key
and payer, ``lease_terms``): its request takes a slot too, and its x-ratelimit-* headers
come from the window state the ledger answered when it granted the slot
(``_leased_rate_state``); when no slot can be had, ``Reserve`` answers (the 429). ``lease_of``
tells the recorder what the journal must keep to settle a leased request after a restart.
"""

from __future__ import annotations

import asyncio
import decimal
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import grpc

from cg_proxy import errors
from cg_proxy.leases import LeaseBook, RateSpec, Terms, Ticket
from cg_proxy.token_usage import Usage
from cglib import pricing
from cglib.grpc_client import TRANSIENT
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

# What the journal keeps of a leased request: (lease id, model, input and output price per
# 1M tokens, price book version).
Leased = tuple[str, str, str, str, str]
# The ledger's bound on one amount: a bound above it is left to the per-request path,
# whose refusal (OUT_OF_RANGE) the client gets.
MAX_AMOUNT = 10**15


def hold_bound(
    billing: keys_pb2.LedgerBilling, route: keys_pb2.ModelRoute, max_input: int, max_output: int
) -> tuple[int, int] | None:
    """(µcr, µai) the ledger would hold for these bounds, or None when it cannot be priced
    here (the per-request path then answers)."""
    try:
        usd = pricing.provider_cost_usd(
            max_input, max_output, Decimal(route.input_usd_per_mtok), Decimal(route.output_usd_per_mtok)
        )
        ucr = pricing.usd_to_ucr(usd)
        uai = 0
        if billing.customer_account:
            terms = pricing.CustomerBilling(
                Decimal(billing.profit_multiplier),
                Decimal(billing.price_per_ai_credit_cents),
                Decimal(billing.floor_usd_per_mtok or "0"),
            )
            uai = pricing.ai_credits_uai(pricing.customer_price_usd(usd, max_input + max_output, terms), terms)
    except (decimal.DecimalException, ValueError):
        return None
    if ucr > MAX_AMOUNT or uai > MAX_AMOUNT:
        return None
    return ucr, uai


def lease_terms(billing: keys_pb2.LedgerBilling, rate_limit: ledger_pb2.RateLimit | None = None) -> tuple[str, Terms]:
    """The lease a key's requests are paid from: its book key and its terms. A
    rate-limited key has a lease of its own (its slots count in its own window), even when
    its partner pays; new limits are new terms, so a new lease."""
    rate = RateSpec(rate_limit.key, rate_limit.rpm, rate_limit.tpm) if rate_limit is not None else None
    terms = Terms(
        account=billing.payer_account,
        customer_account=billing.customer_account,
        revenue_account=billing.revenue_account if billing.customer_account else "",
        profit_multiplier=billing.profit_multiplier if billing.customer_account else "",
        price_per_ai_credit_cents=billing.price_per_ai_credit_cents if billing.customer_account else "",
        floor_usd_per_mtok=billing.floor_usd_per_mtok if billing.customer_account else "",
        rate=rate,
    )
    book_key = f"{terms.account}|{terms.customer_account}"
    return (f"{book_key}|{rate.key}" if rate is not None else book_key), terms


def _leased_rate_state(ticket: Ticket) -> ledger_pb2.RateLimitState | None:
    """A leased request's x-ratelimit-* state: the window as the ledger counted it when it
    granted the slot (every slot of the grant counted), give back the grant's slots still
    unused here, the resets moved on by the time since."""
    state = ticket.rate_state
    if not isinstance(state, ledger_pb2.RateLimitState):
        return None
    age_ms = int(ticket.state_age_s * 1000)
    out = ledger_pb2.RateLimitState()
    out.CopyFrom(state)
    out.limited, out.limited_by, out.retry_after_ms = False, "", 0
    if out.limit_requests:
        out.remaining_requests = min(state.remaining_requests + ticket.slots_left, out.limit_requests)
        out.reset_requests_ms = max(state.reset_requests_ms - age_ms, 1)
    if out.limit_tokens and out.reset_tokens_ms:
        out.reset_tokens_ms = max(state.reset_tokens_ms - age_ms, 1)
    return out


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


# A leased request's settlement waits this long for others to go with it: nothing waits on
# it (the client has its answer, the money is held by the lease), and one SettleLeased per
# 100 ms instead of one per request is most of the ledger's work saved at low concurrency
# (50 ms instead of 10: with a 50 ms upstream at c=32 the proxy then kept up with a direct
# call, 0.97x instead of 0.87x; 100 ms instead of 50: the stack's CPU per request there
# 1.20 -> 1.04 ms, the ledger's 0.28 -> 0.21, means of three runs; docs/benchmarks.md).
LEASED_SETTLE_LINGER_S = 0.1


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
        send: Callable[[list[Any], float], Awaitable[ledger_pb2.SettleBatchResponse]] | None = None,
    ) -> None:
        self.stub = stub
        self.send = send or (
            lambda items, timeout: stub.SettleBatch(ledger_pb2.SettleBatchRequest(settlements=items), timeout=timeout)
        )
        self.timeout_s = timeout_s
        self.linger_s = linger_s
        self.max_batch = max_batch
        self._queue: list[tuple[Any, asyncio.Future[ledger_pb2.SettleResponse]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def settle(self, request: Any) -> ledger_pb2.SettleResponse:
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

    async def _send(self, batch: list[tuple[Any, asyncio.Future[ledger_pb2.SettleResponse]]]) -> None:
        outcomes: list[ledger_pb2.SettleResponse | grpc.aio.AioRpcError]
        try:
            resp = await self.send([req for req, _ in batch], self.timeout_s)
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

    def __init__(
        self,
        stub: ledger_pb2_grpc.LedgerServiceAsyncStub,
        timeout_s: float,
        ttl_s: int,
        leases: LeaseBook | None = None,
    ) -> None:
        self.stub = stub
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.settlements = SettleBatcher(stub, timeout_s)
        self.leases = leases
        self.leased_settlements = SettleBatcher(
            stub,
            timeout_s,
            linger_s=LEASED_SETTLE_LINGER_S,
            send=lambda items, timeout: stub.SettleLeased(
                ledger_pb2.SettleLeasedRequest(settlements=items), timeout=timeout
            ),
        )
        # requests in flight that took their bound from a lease: request id -> (ticket, journal
        # entry, when it was made: a rate-limited key's window counts its tokens from then)
        self._leased: dict[str, tuple[Ticket, Leased, int]] = {}

    def lease_of(self, request_id: str) -> Leased | None:
        entry = self._leased.get(request_id)
        return entry[1] if entry else None

    async def release_lease(self, lease_id: str) -> None:
        await self.stub.ReleaseLease(
            ledger_pb2.ReleaseLeaseRequest(release_id=f"{lease_id}:orphaned", lease_id=lease_id), timeout=self.timeout_s
        )

    def key_changed(self, key_id: str) -> None:
        """A key event: the key's lease takes nothing more (``LeaseBook.key_changed``)."""
        if self.leases is not None:
            self.leases.key_changed(f"key:{key_id}|", prefix=True)

    async def _from_lease(
        self,
        request_id: str,
        billing: keys_pb2.LedgerBilling,
        route: keys_pb2.ModelRoute,
        max_input: int,
        max_output: int,
        rate_limit: ledger_pb2.RateLimit | None = None,
    ) -> ledger_pb2.ReserveResponse | None:
        assert self.leases is not None
        bound = hold_bound(billing, route, max_input, max_output)
        if bound is None:
            return None
        book_key, terms = lease_terms(billing, rate_limit)
        ticket = await self.leases.reserve(book_key, terms, *bound)
        if ticket is None:
            return None
        entry = (
            ticket.lease_id,
            route.id,
            route.input_usd_per_mtok,
            route.output_usd_per_mtok,
            route.price_book_version,
        )
        self._leased[request_id] = (ticket, entry, int(time.time() * 1000))
        resp = ledger_pb2.ReserveResponse(request_id=request_id, held_ucr=bound[0], customer_held_uai=bound[1])
        if rate_limit is not None:
            state = _leased_rate_state(ticket)
            resp.rate_limit.CopyFrom(state or ledger_pb2.RateLimitState(limit_requests=rate_limit.rpm))
        return resp

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
        # A key with a TPM limit stays on the per-request path: a slot granted before the
        # window's tokens settled would let a replica serve for up to its lifetime after
        # another one was refused for tokens (docs/leases.md).
        if self.leases is not None and (rate_limit is None or not rate_limit.tpm):
            leased = await self._from_lease(request_id, billing, route, max_input, max_output, rate_limit)
            if leased is not None:
                return leased
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

    async def settle(
        self, request_id: str, usage: Usage, lease: Leased | None = None, requested_at_ms: int = 0
    ) -> ledger_pb2.SettleResponse:
        """Settles from the request's lease (``lease``: as journaled, after a restart) or its
        reservation. A leased request is counted in its key's window from when it took its
        slot; after a restart, from when it came in (``requested_at_ms``, by the journal: a
        moment earlier), or from the settlement when that is not known (0)."""
        entry = self._leased.get(request_id)
        lease = entry[1] if entry else lease
        requested_at_ms = entry[2] if entry else requested_at_ms
        if lease is not None:
            lease_id, model, in_price, out_price, version = lease
            settled = await self.leased_settlements.settle(
                ledger_pb2.LeasedSettlement(
                    lease_id=lease_id,
                    request_id=request_id,
                    model=model,
                    price=ledger_pb2.Price(
                        input_usd_per_mtok=in_price, output_usd_per_mtok=out_price, price_book_version=version
                    ),
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    usage_source=usage.source,
                    requested_at_unix_ms=requested_at_ms,
                )
            )
            if entry is not None and self._leased.pop(request_id, None) is not None and self.leases is not None:
                self.leases.settled(entry[0], settled.charged_ucr, settled.customer_charged_uai)
            return settled
        return await self.settlements.settle(
            ledger_pb2.SettleRequest(
                request_id=request_id,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                usage_source=usage.source,
            )
        )

    async def void(self, request_id: str, reason: str) -> ledger_pb2.VoidResponse:
        entry = self._leased.pop(request_id, None)
        if entry is not None:  # nothing reached the ledger: the bound goes back to the lease
            if self.leases is not None:
                self.leases.returned(entry[0])
            return ledger_pb2.VoidResponse(request_id=request_id, released_ucr=entry[0].ucr)
        return await self.stub.Void(
            ledger_pb2.VoidRequest(request_id=request_id, reason=reason), timeout=self.timeout_s
        )
