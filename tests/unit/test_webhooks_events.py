"""The worker's webhook events (cg_worker.webhook_events and its hooks in rules and
handlers): when each fires, its deterministic id (the same trigger again makes the same
id, so no second webhook), and its body; with fakes of keys, the ledger and NATS."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal

import grpc
import pytest
from nats.js.errors import KeyNotFoundError

from cg_worker.consumer import Transient
from cg_worker.handlers import Handlers
from cg_worker.rules import Rules
from cg_worker.webhook_events import WebhookEvents
from cglib.money import UCR_PER_CREDIT
from creditgate.bff.v1 import bff_pb2
from creditgate.events.v1 import events_pb2 as epb
from creditgate.keys.v1 import keys_pb2 as kpb
from creditgate.ledger.v1 import ledger_pb2 as lpb

CR = UCR_PER_CREDIT


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "fake")


@dataclass
class Entry:
    value: bytes
    revision: int


@dataclass
class FakeKV:
    data: dict[str, Entry] = field(default_factory=dict)

    async def get(self, key: str) -> Entry:
        if key not in self.data:
            raise KeyNotFoundError()
        return self.data[key]

    async def create(self, key: str, value: bytes) -> int:
        assert key not in self.data
        self.data[key] = Entry(value, 1)
        return 1

    async def update(self, key: str, value: bytes, last: int) -> int:
        assert self.data[key].revision == last
        self.data[key] = Entry(value, last + 1)
        return last + 1


class FakeJS:
    def __init__(self, nc: FakeNats) -> None:
        self.nc = nc

    async def publish(self, subject: str, payload: bytes, headers: dict, timeout: float) -> None:
        if self.nc.down:
            raise ConnectionError("nats is down")
        event = bff_pb2.WebhookEvent.FromString(payload)
        assert headers == {"Nats-Msg-Id": event.id} and subject == f"webhooks.events.{event.partner_id}"
        self.nc.published.append(event)

    async def key_value(self, bucket: str) -> FakeKV:
        return self.nc.kv


@dataclass
class FakeNats:
    published: list[bff_pb2.WebhookEvent] = field(default_factory=list)
    kv: FakeKV = field(default_factory=FakeKV)
    down: bool = False

    def jetstream(self) -> FakeJS:
        return FakeJS(self)


@dataclass
class FakeKeys:
    keys: dict[str, kpb.Key] = field(default_factory=dict)
    topup_refused: str = ""

    async def GetKey(self, request: kpb.GetKeyRequest, timeout: float) -> kpb.KeyDetail:
        key = self.keys.get(request.key_id)
        if key is None or key.partner_id != request.actor.partner_id:
            raise rpc_error(grpc.StatusCode.NOT_FOUND)
        return kpb.KeyDetail(key=key, settled_remaining_ucr=key.remaining_ucr, min_request_ucr=1)

    async def TopUpKey(self, request: kpb.TopUpKeyRequest, timeout: float) -> kpb.TopUpKeyResponse:
        if self.topup_refused:
            raise rpc_error(grpc.StatusCode.FAILED_PRECONDITION)
        return kpb.TopUpKeyResponse(key=self.keys[request.key_id])

    async def MarkKeyExhausted(self, request: kpb.MarkKeyExhaustedRequest, timeout: float) -> kpb.Key:
        return self.keys[request.key_id]


@dataclass
class FakeLedger:
    posted_ucr: dict[str, int] = field(default_factory=dict)

    async def GetBalance(self, request: lpb.GetBalanceRequest, timeout: float) -> lpb.Balance:
        if request.account not in self.posted_ucr:
            raise rpc_error(grpc.StatusCode.NOT_FOUND)
        posted = self.posted_ucr[request.account]
        return lpb.Balance(account=request.account, posted_ucr=posted, available_ucr=posted)


def key(
    key_id: str = "key_1",
    kind: str = "partner",
    funded: int = 100,
    remaining: int = 100,
    customer: str = "",
    status: int = kpb.KEY_STATUS_ACTIVE,
) -> kpb.Key:
    k = kpb.Key(
        id=key_id,
        partner_id="ptn_a",
        name="Billing key",
        prefix="sk-cg-abc",
        kind=kind,
        status=status,
        owner_customer_id=customer if kind == "customer" else "",
        funded_ucr=funded * CR,
        remaining_ucr=remaining * CR,
        spent_ucr=(funded - remaining) * CR,
    )
    return k


def emitter(keys: FakeKeys | None = None, ledger: FakeLedger | None = None) -> tuple[WebhookEvents, FakeNats]:
    nc = FakeNats()
    events = WebhookEvents(keys or FakeKeys(), ledger or FakeLedger(), 1.0, 10, 2_000, 1_000)  # type: ignore[arg-type]
    events.attach(nc)  # type: ignore[arg-type]
    return events, nc


def body(event: bff_pb2.WebhookEvent) -> dict:
    payload = json.loads(event.payload)
    assert payload["id"] == event.id and "." not in event.id
    assert payload["timestamp"].endswith("Z") and payload["partner_id"] == event.partner_id
    return payload


def detail(k: kpb.Key) -> kpb.KeyDetail:
    return kpb.KeyDetail(key=k, settled_remaining_ucr=k.remaining_ucr, min_request_ucr=1)


async def test_low_budget_fires_below_ten_percent_once_per_funding_level():
    events, nc = emitter()
    await events.low_budget(detail(key(funded=100, remaining=10)))  # 10% is not below 10%
    assert nc.published == []
    await events.low_budget(detail(key(funded=100, remaining=9)))
    await events.low_budget(detail(key(funded=100, remaining=3)))  # still the same crossing
    (event,) = nc.published
    assert event.id == f"key_low_budget:key_1:{100 * CR}" and event.type == bff_pb2.WEBHOOK_EVENT_TYPE_KEY_LOW_BUDGET
    data = body(event)["data"]
    assert (data["remaining_ucr"], data["remaining_credits"], data["funded_credits"]) == (9 * CR, "9", "100")
    assert data["low_budget_percent"] == 10 and body(event)["type"] == "key.low_budget"
    # another replica (or this one after a restart) sees the same crossing: the same id
    other, other_nc = emitter()
    await other.low_budget(detail(key(funded=100, remaining=2)))
    assert [e.id for e in other_nc.published] == [event.id]
    # topped up: a new funding level, a new crossing
    await events.low_budget(detail(key(funded=150, remaining=14)))
    assert [e.id for e in nc.published] == [event.id, f"key_low_budget:key_1:{150 * CR}"]


async def test_the_rules_send_low_budget_for_an_active_key_auto_top_up_did_not_refill():
    keys = FakeKeys({"key_1": key(funded=100, remaining=5)})
    events, nc = emitter(keys)
    await Rules(keys, FakeLedger(), 1.0, 1_000, events).check_key("ptn_a", "key_1")  # type: ignore[arg-type]
    assert [e.id for e in nc.published] == [f"key_low_budget:key_1:{100 * CR}"]
    # below its auto top-up threshold: refilled, so auto_topup.succeeded, not low budget
    k = key(funded=100, remaining=5)
    k.auto_topup.CopyFrom(kpb.AutoTopUp(enabled=True, threshold_usd="0.10", amount_usd="0.50"))
    keys.keys["key_1"] = k
    events, nc = emitter(keys)
    await Rules(keys, FakeLedger(), 1.0, 1_000, events).check_key("ptn_a", "key_1")  # type: ignore[arg-type]
    (event,) = nc.published
    assert event.id == f"auto_topup_succeeded:key_1:{100 * CR}"
    data = body(event)["data"]
    assert (data["amount_credits"], data["threshold_usd"], data["amount_usd"]) == ("50", "0.10", "0.50")
    # refused: auto_topup.failed, once per crossing however often it is retried, then low budget
    keys.topup_refused = "the daily ceiling"
    events, nc = emitter(keys)
    rules = Rules(keys, FakeLedger(), 1.0, 1_000, events)  # type: ignore[arg-type]
    await rules.check_key("ptn_a", "key_1")
    await rules.check_key("ptn_a", "key_1")
    assert [e.id for e in nc.published] == [f"auto_topup_failed:key_1:{100 * CR}", f"key_low_budget:key_1:{100 * CR}"]
    assert body(nc.published[0])["type"] == "auto_topup.failed"


def changed(change: int, key_id: str = "key_1", status: str = "active", suspension: int = 0, t: int = 1767225600123):
    return epb.KeyChanged(
        key_id=key_id, partner_id="ptn_a", change=change, status=status, suspension=suspension, time_unix_ms=t
    )


@pytest.mark.parametrize(
    ("change", "kind", "expected"),
    [
        (changed(epb.KEY_CHANGE_EXHAUSTED, status="exhausted"), "partner", "key_exhausted:key_1:1767225600123"),
        (changed(epb.KEY_CHANGE_SUSPENDED, status="suspended"), "partner", "key_suspended:key_1:1767225600123"),
        (changed(epb.KEY_CHANGE_SUSPENDED, status="suspended"), "customer", "key_suspended:key_1:1767225600123"),
        (changed(epb.KEY_CHANGE_RESUMED), "customer", "key_resumed:key_1:1767225600123"),
        (changed(epb.KEY_CHANGE_CREATED), "customer", "customer_key_created:key_1"),
        (changed(epb.KEY_CHANGE_REVOKED, status="revoked"), "customer", "customer_key_revoked:key_1"),
        (changed(epb.KEY_CHANGE_CREATED), "partner", None),  # a partner's own keys: not customer_key.*
        (changed(epb.KEY_CHANGE_REVOKED, status="revoked"), "partner", None),
        (changed(epb.KEY_CHANGE_UPDATED), "partner", None),
        (changed(epb.KEY_CHANGE_TOPPED_UP), "partner", None),
        (changed(epb.KEY_CHANGE_REGENERATED), "customer", None),
        (changed(epb.KEY_CHANGE_AUTO_TOPUP_FAILED), "partner", None),  # the rule's own outcome says it, per crossing
    ],
)
async def test_key_changes_that_are_webhooks(change, kind, expected):
    keys = FakeKeys({"key_1": key(kind=kind, customer="cus_1")})
    events, nc = emitter(keys)
    await events.key_changes([change, change])  # a redelivered change: one event
    assert [e.id for e in nc.published] == ([expected] if expected else [])
    if expected:
        data = body(nc.published[0])["data"]
        assert data["key_id"] == "key_1" and data["status"] == change.status
        if kind == "customer":
            assert data["customer_id"] == "cus_1"


async def test_a_suspension_says_why():
    keys = FakeKeys({"key_1": key(kind="customer", customer="cus_1")})
    keys.keys["key_1"].status_reason = "below the line"
    events, nc = emitter(keys)
    await Handlers(FakeRulesNoop(), events).key_changes(  # type: ignore[arg-type]
        [changed(epb.KEY_CHANGE_SUSPENDED, status="suspended", suspension=kpb.SUSPENSION_REASON_DEPOSIT_LINE)]
    )
    data = body(nc.published[0])["data"]
    assert (data["suspension"], data["note"]) == ("deposit_line", "below the line")


async def test_a_key_gone_meanwhile_makes_no_event():
    events, nc = emitter(FakeKeys())
    await events.key_changes([changed(epb.KEY_CHANGE_SUSPENDED)])
    assert nc.published == []


class FakeRulesNoop:
    async def check_key(self, partner_id: str, key_id: str) -> None:
        pass

    async def check_deposit_line(self, partner_id: str) -> None:
        pass


async def test_balance_low_fires_once_per_crossing_and_rearms_above_the_line():
    ledger = FakeLedger({"partner:ptn_a": 3_000 * CR})
    events, nc = emitter(ledger=ledger)
    handlers = Handlers(FakeRulesNoop(), events)  # type: ignore[arg-type]
    balance = [epb.BalanceChanged(account="partner:ptn_a", partner_id="ptn_a")]
    await handlers.balances(balance)
    assert nc.published == []
    for posted in (1_999, 1_500, 1_999):  # below 2,000 credits: one crossing
        ledger.posted_ucr["partner:ptn_a"] = posted * CR
        await handlers.balances(balance)
    (first,) = nc.published
    assert first.id == "partner_balance_low:ptn_a:1" and first.type == bff_pb2.WEBHOOK_EVENT_TYPE_PARTNER_BALANCE_LOW
    data = body(first)["data"]
    assert (data["balance_credits"], data["threshold_credits"], data["deposit_line_credits"]) == (
        "1999",
        "2000",
        "1000",
    )
    ledger.posted_ucr["partner:ptn_a"] = 2_000 * CR  # back at the line: re-armed, no event
    await handlers.balances(balance)
    ledger.posted_ucr["partner:ptn_a"] = 10 * CR
    await handlers.balances(balance)
    assert [e.id for e in nc.published] == ["partner_balance_low:ptn_a:1", "partner_balance_low:ptn_a:2"]
    # a replica with the same KV bucket agrees on the count
    other, other_nc = emitter(ledger=ledger)
    other_nc.kv = nc.kv
    await other.balance("ptn_a")
    assert other_nc.published == []


async def test_a_partner_without_an_account_is_skipped():
    events, nc = emitter()
    await events.balance("ptn_unknown")
    assert nc.published == []


async def test_nats_down_is_transient_and_the_event_is_made_again_with_the_same_id(monkeypatch):
    monkeypatch.setattr("cg_worker.webhook_events.PUBLISH_GIVE_UP_S", 0.1)
    events, nc = emitter()
    nc.down = True
    with pytest.raises(Transient):
        await events.low_budget(detail(key(remaining=1)))
    nc.down = False
    await events.low_budget(detail(key(remaining=1)))
    assert [e.id for e in nc.published] == [f"key_low_budget:key_1:{100 * CR}"]


def test_credits_are_decimal_strings():
    from cg_worker.webhook_events import credits

    assert [credits(n) for n in (0, CR, 1_500_000, 1)] == ["0", "1", "1.5", "0.000001"]
    assert Decimal(credits(123_456_789)) * CR == 123_456_789
