"""Webhook events: what the worker tells partners, each defined once, here.

Every event is published once per occurrence as a ``creditgate.bff.v1.WebhookEvent`` on
``webhooks.events.<partner>`` (stream WEBHOOKS) with ``Nats-Msg-Id`` = its id; the BFF
records it once by that id and fans it out. The id is deterministic (made from the
trigger, never from the time the worker looked), so a redelivered or re-checked trigger
makes no second webhook. It is also the ``webhook-id`` partners see (no ".": the
Standard Webhooks signature uses "." as its delimiter).

| type | when | id |
|---|---|---|
| ``key.low_budget`` | a partner key's *settled* remaining budget (in-flight holds not counted, as for auto top-up) is below ``low_budget_percent`` (10%) of its funded total, seen after a usage batch, a top-up or a resume of the key (``Rules.check_key``), unless auto top-up refilled it in that same check; an active key only | ``key_low_budget:<key>:<funded_ucr>``: once per funding level (a top-up re-arms it) |
| ``key.exhausted`` | the keys service marked a partner key exhausted (``KEY_CHANGE_EXHAUSTED``) | ``key_exhausted:<key>:<change ms>`` |
| ``key.suspended`` | any key suspended, by the partner or by the deposit line (``KEY_CHANGE_SUSPENDED``) | ``key_suspended:<key>:<change ms>`` |
| ``key.resumed`` | any key resumed (``KEY_CHANGE_RESUMED``) | ``key_resumed:<key>:<change ms>`` |
| ``auto_topup.succeeded`` | the worker's automatic top-up of a crossing was made (or found made by another replica) | ``auto_topup_succeeded:<key>:<funded_ucr at the crossing>`` (the top-up's own idempotency key) |
| ``auto_topup.failed`` | keys refused it (daily ceiling, the partner's balance) | ``auto_topup_failed:<key>:<funded_ucr at the crossing>``: once per crossing, however often it is retried |
| ``partner.balance_low`` | the partner's settled balance (posted) went below ``balance_low_credits`` (2,000 credits, twice the deposit line); re-armed once it is back at or above | ``partner_balance_low:<partner>:<n>``, n counting crossings in the JetStream KV bucket ``WEBHOOK_ALARMS`` |
| ``customer_key.created`` | a customer created a key (``KEY_CHANGE_CREATED`` of a ``customer`` key) | ``customer_key_created:<key>`` |
| ``customer_key.revoked`` | a customer-created key was revoked (``KEY_CHANGE_REVOKED``) | ``customer_key_revoked:<key>`` |

The body: ``{"id", "type", "timestamp" (RFC 3339, when it happened), "partner_id",
"data": {...}}``; money as integer micro-credits (``..._ucr``) and decimal-string credits
(``..._credits``). A publish that fails for a few seconds raises ``Transient``, so the
trigger is redelivered and the event made again, with the same id.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.js.errors import KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue
from prometheus_client import Counter

from cg_worker.consumer import Transient
from cglib import natsx
from cglib.grpc_client import TRANSIENT
from cglib.money import UCR_PER_CREDIT
from cglib.retry import retrying
from creditgate.bff.v1 import bff_pb2
from creditgate.events.v1 import events_pb2 as epb
from creditgate.keys.v1 import keys_pb2 as kpb
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2 as lpb
from creditgate.ledger.v1 import ledger_pb2_grpc

log = logging.getLogger(__name__)
Reply = TypeVar("Reply", bound=Message)

PUBLISHED = Counter("cg_worker_webhook_events_total", "Webhook events published", ["type"])
ALARMS_BUCKET = "WEBHOOK_ALARMS"
PUBLISH_GIVE_UP_S = 10.0
RECENT = 10_000  # ids published lately by this process: not published again

T = bff_pb2.WebhookEventType
_NAMES = {v.number: v.GetOptions().Extensions[bff_pb2.event_name] for v in T.DESCRIPTOR.values}
# key changes that are webhooks, any kind of key / customer-created keys only
_KEY_EVENTS = {
    epb.KEY_CHANGE_EXHAUSTED: bff_pb2.WEBHOOK_EVENT_TYPE_KEY_EXHAUSTED,
    epb.KEY_CHANGE_SUSPENDED: bff_pb2.WEBHOOK_EVENT_TYPE_KEY_SUSPENDED,
    epb.KEY_CHANGE_RESUMED: bff_pb2.WEBHOOK_EVENT_TYPE_KEY_RESUMED,
}
_CUSTOMER_KEY_EVENTS = {
    epb.KEY_CHANGE_CREATED: bff_pb2.WEBHOOK_EVENT_TYPE_CUSTOMER_KEY_CREATED,
    epb.KEY_CHANGE_REVOKED: bff_pb2.WEBHOOK_EVENT_TYPE_CUSTOMER_KEY_REVOKED,
}


def event_id(kind: bff_pb2.WebhookEventType.ValueType, *parts: object) -> str:
    return ":".join([_NAMES[kind].replace(".", "_"), *(str(p) for p in parts)])


def _now_ms() -> int:
    return int(time.time() * 1000)


def credits(ucr: int) -> str:
    return format(Decimal(ucr) / UCR_PER_CREDIT, "f")


def _word(name: str, prefix: str) -> str:
    return name.removeprefix(prefix).lower()


def key_data(key: kpb.Key) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key_id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "kind": key.kind,
        "status": _word(kpb.KeyStatus.Name(key.status), "KEY_STATUS_"),
        "customer_id": key.owner_customer_id or key.billing.customer_id or None,
    }
    if key.kind == "partner":
        data.update(
            funded_ucr=key.funded_ucr,
            funded_credits=credits(key.funded_ucr),
            spent_ucr=key.spent_ucr,
            spent_credits=credits(key.spent_ucr),
        )
    return data


class WebhookEvents:
    def __init__(
        self,
        keys: keys_pb2_grpc.KeysServiceAsyncStub,
        ledger: ledger_pb2_grpc.LedgerServiceAsyncStub,
        timeout_s: float,
        low_budget_percent: int,
        balance_low_credits: int,
        deposit_line_credits: int,
    ) -> None:
        self.keys = keys
        self.ledger = ledger
        self.timeout_s = timeout_s
        self.low_budget_percent = low_budget_percent
        self.balance_low_ucr = balance_low_credits * UCR_PER_CREDIT
        self.deposit_line_credits = deposit_line_credits
        self.nc: Client | None = None
        self._kv: KeyValue | None = None
        self._recent: OrderedDict[str, None] = OrderedDict()

    def attach(self, nc: Client) -> None:
        self.nc = nc

    # -- triggers --------------------------------------------------------------------

    async def key_changes(self, events: list[epb.KeyChanged]) -> None:
        for e in events:
            kind = _KEY_EVENTS.get(e.change) or _CUSTOMER_KEY_EVENTS.get(e.change)
            if kind is None:
                continue
            key = await self._key(e.partner_id, e.key_id)
            if key is None or (e.change in _CUSTOMER_KEY_EVENTS and key.kind != "customer"):
                continue
            data = key_data(key)
            data["status"] = e.status or data["status"]  # as the change left it, not as it is now
            if e.change in _CUSTOMER_KEY_EVENTS:
                data = {k: data[k] for k in ("key_id", "name", "prefix", "status", "customer_id")}
                eid = event_id(kind, e.key_id)
            else:
                eid = event_id(kind, e.key_id, e.time_unix_ms)
            if e.change == epb.KEY_CHANGE_SUSPENDED:
                known = kpb.SuspensionReason.DESCRIPTOR.values_by_number.get(
                    e.suspension or kpb.SUSPENSION_REASON_BY_PARTNER
                )
                reason = _word(known.name, "SUSPENSION_REASON_") if known is not None else str(e.suspension)
                data.update(suspension=reason, note=key.status_reason)
            await self.publish(kind, eid, e.partner_id, e.time_unix_ms, data)

    async def low_budget(self, detail: kpb.KeyDetail) -> None:
        """Called by ``Rules.check_key`` for an active partner key it did not refill."""
        key = detail.key
        settled = detail.settled_remaining_ucr
        if key.funded_ucr <= 0 or settled * 100 >= key.funded_ucr * self.low_budget_percent:
            return
        kind = bff_pb2.WEBHOOK_EVENT_TYPE_KEY_LOW_BUDGET
        data = key_data(key)
        data.update(
            remaining_ucr=settled,
            remaining_credits=credits(settled),
            low_budget_percent=self.low_budget_percent,
        )
        await self.publish(kind, event_id(kind, key.id, key.funded_ucr), key.partner_id, _now_ms(), data)

    async def auto_topup(self, key: kpb.Key, ok: bool, credits_asked: int, settled_ucr: int, reason: str = "") -> None:
        """Called by ``Rules._auto_top_up`` with its outcome (``key`` as it was at the crossing)."""
        kind = bff_pb2.WEBHOOK_EVENT_TYPE_AUTO_TOPUP_SUCCEEDED if ok else bff_pb2.WEBHOOK_EVENT_TYPE_AUTO_TOPUP_FAILED
        data = key_data(key)
        data.update(
            amount_credits=str(credits_asked),
            threshold_usd=key.auto_topup.threshold_usd,
            amount_usd=key.auto_topup.amount_usd,
            remaining_ucr=settled_ucr,
            remaining_credits=credits(settled_ucr),
        )
        if not ok:
            data["reason"] = reason
        await self.publish(kind, event_id(kind, key.id, key.funded_ucr), key.partner_id, _now_ms(), data)

    async def balance(self, partner_id: str) -> None:
        """Called for each partner whose balance changed: one ``partner.balance_low`` per
        crossing below the line, counted in the KV bucket (replicas agree by revision)."""
        try:
            b = await self._call(self.ledger.GetBalance, lpb.GetBalanceRequest(account=f"partner:{partner_id}"))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return
            raise
        name = f"balance_low.{partner_id}"
        try:
            kv = await self._alarms()
            entry = await kv.get(name)
            state, revision = json.loads(entry.value or b"{}"), entry.revision
        except KeyNotFoundError:
            state, revision = {}, None
        except Transient:
            raise
        except Exception as e:  # NATS away: the balance event is redelivered
            raise Transient(f"webhook alarms: {e!r}") from e
        low, n = bool(state.get("low")), int(state.get("n", 0))
        below = b.posted_ucr < self.balance_low_ucr
        if below == low:
            return
        if below:
            kind = bff_pb2.WEBHOOK_EVENT_TYPE_PARTNER_BALANCE_LOW
            n += 1
            data = {
                "balance_ucr": b.posted_ucr,
                "balance_credits": credits(b.posted_ucr),
                "available_ucr": b.available_ucr,
                "available_credits": credits(b.available_ucr),
                "threshold_credits": str(self.balance_low_ucr // UCR_PER_CREDIT),
                "deposit_line_credits": str(self.deposit_line_credits),
            }
            await self.publish(kind, event_id(kind, partner_id, n), partner_id, _now_ms(), data)
        value = json.dumps({"low": below, "n": n}).encode()
        try:  # compare-and-set: a replica that moved it first wins (its event had the same id)
            if revision is None:
                await kv.create(name, value)
            else:
                await kv.update(name, value, last=revision)
        except Exception as e:
            log.info("balance alarm moved by another replica", extra={"partner_id": partner_id, "error": repr(e)})

    # -- publishing ------------------------------------------------------------------

    async def publish(
        self, kind: bff_pb2.WebhookEventType.ValueType, eid: str, partner_id: str, time_ms: int, data: dict[str, Any]
    ) -> None:
        if eid in self._recent:
            return
        name = _NAMES[kind]
        body = {
            "id": eid,
            "type": name,
            "timestamp": datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "partner_id": partner_id,
            "data": data,
        }
        event = bff_pb2.WebhookEvent(
            id=eid,
            type=kind,
            partner_id=partner_id,
            time_unix_ms=time_ms,
            payload=json.dumps(body, separators=(",", ":")).encode(),
        )
        nc = self.nc
        if nc is None:
            raise Transient("not connected to NATS yet")

        async def send() -> None:
            await nc.jetstream().publish(
                natsx.webhook_event_subject(partner_id),
                event.SerializeToString(),
                headers={"Nats-Msg-Id": eid},
                timeout=2,
            )

        try:
            await retrying(send, what="webhook event publish", give_up_after_s=PUBLISH_GIVE_UP_S, first_delay_s=0.05)
        except Exception as e:
            raise Transient(f"webhook event publish: {e!r}") from e
        self._recent[eid] = None
        while len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        PUBLISHED.labels(name).inc()
        log.info("webhook event", extra={"event_id": eid, "type": name, "partner_id": partner_id})

    # -- reads -----------------------------------------------------------------------

    async def _alarms(self) -> KeyValue:
        if self._kv is None:
            if self.nc is None:
                raise Transient("not connected to NATS yet")
            js = self.nc.jetstream()
            try:
                self._kv = await js.key_value(ALARMS_BUCKET)
            except NotFoundError:
                self._kv = await js.create_key_value(bucket=ALARMS_BUCKET, history=1)
        return self._kv

    async def _key(self, partner_id: str, key_id: str) -> kpb.Key | None:
        try:
            detail = await self._call(
                self.keys.GetKey, kpb.GetKeyRequest(actor=kpb.Actor(partner_id=partner_id), key_id=key_id)
            )
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return detail.key

    async def _call(self, method: Callable[..., Awaitable[Reply]], request: Message) -> Reply:
        try:
            return await method(request, timeout=self.timeout_s)
        except grpc.aio.AioRpcError as e:
            if e.code() in TRANSIENT:
                raise Transient(f"{e.code().name}: {e.details()}") from None
            raise
