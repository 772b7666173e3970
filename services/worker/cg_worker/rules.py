"""The worker's rules. Each reads the current state and acts idempotently.

- **Auto top-up**: a partner key with auto top-up on whose *settled* remaining budget
  (``KeyDetail.settled_remaining_ucr``: funded - refunded - spent, so what in-flight
  requests hold is never counted) is below its threshold gets its amount, once per
  crossing. Only a settlement moves the settled remaining, so whether a key is topped
  up never depends on which requests happen to be in flight when the worker looks:
  a partner can predict it from the settled usage alone. The idempotency key is the
  key's funded total at the crossing, so every replica (and every redelivery) that
  sees the same crossing asks for the same top-up, which keys and the ledger apply
  once. The daily ceiling and the record of a failure live in the keys service.
- **Exhaustion**: a partner key whose settled remaining cannot pay for its cheapest
  request (``KeyDetail.min_request_ucr``) and that no auto top-up saved is marked
  exhausted; the keys service decides again under the key's lock and refuses
  (FAILED_PRECONDITION, a no-op here) when the key can still pay. A request the key
  cannot afford right now is not a reason: the ledger refuses its reservation (429).
  A top-up revives the key.
- **Deposit line**: a partner with less than the line available gets its active
  customer-created keys suspended (``SUSPENSION_REASON_DEPOSIT_LINE``); at or above the
  line, exactly the keys suspended for that reason are resumed (a deliberate suspension
  outranks it: keys keeps it, and the worker's resume does not lift it).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import ROUND_CEILING, Decimal
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from cg_worker.consumer import Transient
from cg_worker.metrics import EXHAUSTED, SUSPENSIONS, TOPUPS
from cg_worker.webhook_events import WebhookEvents
from cglib.faults import crash_point
from cglib.grpc_client import TRANSIENT
from cglib.money import CREDITS_PER_USD, UCR_PER_CREDIT, UCR_PER_USD
from creditgate.keys.v1 import keys_pb2 as kpb
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2 as lpb
from creditgate.ledger.v1 import ledger_pb2_grpc

log = logging.getLogger(__name__)

DEPOSIT_LINE = kpb.SUSPENSION_REASON_DEPOSIT_LINE
DEPOSIT_LINE_NOTE = "the partner's available balance is below the deposit line"
Reply = TypeVar("Reply", bound=Message)


class Rules:
    def __init__(
        self,
        keys: keys_pb2_grpc.KeysServiceAsyncStub,
        ledger: ledger_pb2_grpc.LedgerServiceAsyncStub,
        timeout_s: float,
        deposit_line_credits: int,
        webhooks: WebhookEvents | None = None,
    ) -> None:
        self.keys = keys
        self.ledger = ledger
        self.timeout_s = timeout_s
        self.line_ucr = deposit_line_credits * UCR_PER_CREDIT
        self.webhooks = webhooks  # key.low_budget and auto_topup.* (cg_worker.webhook_events)

    async def _call(self, method: Callable[..., Awaitable[Reply]], request: Message) -> Reply:
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            if e.code() in TRANSIENT:
                raise Transient(f"{e.code().name}: {e.details()}") from None
            raise

    # -- keys ----------------------------------------------------------------------

    async def check_key(self, partner_id: str, key_id: str) -> None:
        actor = kpb.Actor(partner_id=partner_id)
        try:
            detail = await self._call(self.keys.GetKey, kpb.GetKeyRequest(actor=actor, key_id=key_id))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return  # gone (or never a partner's key): nothing to do
            raise
        key = detail.key
        if key.kind != "partner" or key.status in (kpb.KEY_STATUS_REVOKED, kpb.KEY_STATUS_SUSPENDED):
            return
        settled = detail.settled_remaining_ucr
        topup = key.auto_topup
        below = topup.enabled and settled < Decimal(topup.threshold_usd) * UCR_PER_USD
        if below and await self._auto_top_up(actor, key, settled):
            return
        if self.webhooks is not None and key.status == kpb.KEY_STATUS_ACTIVE:
            await self.webhooks.low_budget(detail)
        if settled < detail.min_request_ucr and key.status == kpb.KEY_STATUS_ACTIVE:
            try:
                await self._call(self.keys.MarkKeyExhausted, kpb.MarkKeyExhaustedRequest(actor=actor, key_id=key.id))
            except grpc.aio.AioRpcError as e:
                if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    return  # it can pay after all (funded since the read), or is no longer active
                raise
            EXHAUSTED.inc()
            log.info(
                "key exhausted",
                extra={"key_id": key.id, "settled_remaining_ucr": settled, "min_request_ucr": detail.min_request_ucr},
            )

    async def _auto_top_up(self, actor: kpb.Actor, key: kpb.Key, settled_remaining_ucr: int) -> bool:
        credits = int((Decimal(key.auto_topup.amount_usd) * CREDITS_PER_USD).to_integral_value(ROUND_CEILING))
        request = kpb.TopUpKeyRequest(
            actor=actor,
            key_id=key.id,
            amount_credits=credits,
            automatic=True,
            idempotency_key=f"crossing:{key.funded_ucr}",
        )
        crash_point("topup:before_ledger")
        try:
            out = await self._call(self.keys.TopUpKey, request)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                TOPUPS.labels("failed").inc()
                log.warning("auto top-up refused", extra={"key_id": key.id, "reason": e.details()})
                if self.webhooks is not None:
                    await self.webhooks.auto_topup(key, False, credits, settled_remaining_ucr, e.details() or "")
                return False  # recorded on the key by the keys service
            raise
        crash_point("topup:after_ledger")
        if self.webhooks is not None:  # this crossing's top-up is made (by this call or an earlier one)
            await self.webhooks.auto_topup(key, True, credits, settled_remaining_ucr)
        if out.replayed:  # another replica (or an earlier delivery) made this crossing's top-up
            TOPUPS.labels("replayed").inc()
            return True
        TOPUPS.labels("done").inc()
        log.info(
            "auto top-up",
            extra={
                "key_id": key.id,
                "credits": credits,
                "settled_remaining_ucr": settled_remaining_ucr,
                "funded_ucr": out.key.funded_ucr,
            },
        )
        return True

    # -- partners ------------------------------------------------------------------

    async def check_deposit_line(self, partner_id: str) -> None:
        actor = kpb.Actor(partner_id=partner_id)
        available = await self._available(partner_id)
        listed = await self._call(self.keys.ListKeys, kpb.ListKeysRequest(actor=actor))
        customer_keys = [k for k in listed.keys if k.kind == "customer"]
        if available < self.line_ucr:
            suspended = []
            for k in customer_keys:
                if k.status == kpb.KEY_STATUS_ACTIVE:
                    try:
                        await self._call(
                            self.keys.SuspendKey,
                            kpb.SuspendKeyRequest(
                                actor=actor, key_id=k.id, suspension=DEPOSIT_LINE, note=DEPOSIT_LINE_NOTE
                            ),
                        )
                    except grpc.aio.AioRpcError as e:
                        if e.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                            continue  # revoked (or gone) since the list was read
                        raise
                    suspended.append(k.id)
            if suspended:
                SUSPENSIONS.labels("suspended").inc(len(suspended))
                log.info(
                    "deposit line: keys suspended",
                    extra={"partner_id": partner_id, "keys": suspended, "available_ucr": available},
                )
                # a deposit may have landed while we were suspending: look once more
                if await self._available(partner_id) >= self.line_ucr:
                    await self._resume(actor, partner_id, suspended)
        else:
            ids = [k.id for k in customer_keys if k.status == kpb.KEY_STATUS_SUSPENDED and k.suspension == DEPOSIT_LINE]
            await self._resume(actor, partner_id, ids)

    async def _resume(self, actor: kpb.Actor, partner_id: str, key_ids: list[str]) -> None:
        for key_id in key_ids:
            try:
                await self._call(
                    self.keys.ResumeKey, kpb.ResumeKeyRequest(actor=actor, key_id=key_id, only_if=DEPOSIT_LINE)
                )
            except grpc.aio.AioRpcError as e:
                if e.code() not in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                    raise
        if key_ids:
            SUSPENSIONS.labels("resumed").inc(len(key_ids))
            log.info("deposit line: keys resumed", extra={"partner_id": partner_id, "keys": key_ids})

    async def _available(self, partner_id: str) -> int:
        try:
            b = await self._call(self.ledger.GetBalance, lpb.GetBalanceRequest(account=f"partner:{partner_id}"))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return 0
            raise
        return b.available_ucr
