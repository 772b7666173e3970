"""Webhooks end to end, over HTTP with real users, on SQLite and PostgreSQL, with two worker
replicas: real key events (keys' KeyChanged, through the worker and the BFF) reach the
partner's endpoint (a local HTTP server: the devstack allows private targets) signed per
Standard Webhooks, exactly once, and never another partner's; the worker's own budget and
balance events too, once per crossing; a failing endpoint is retried with a growing backoff,
dead-lettered, listed as such, and redelivered on request with the same webhook-id."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nats
import pytest
from standardwebhooks.webhooks import Webhook

from cg_devstack.bff import BffClient
from cg_devstack.seed import Seeder
from cglib import natsx
from cglib.money import UCR_PER_CREDIT
from creditgate.events.v1 import events_pb2 as epb
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2 as lpb
from helpers import eventually
from support import bff
from support.stacks import stack_on

TOKEN = secrets.token_urlsafe(16)
ALL_TYPES = [
    "key.low_budget",
    "key.exhausted",
    "key.suspended",
    "key.resumed",
    "auto_topup.succeeded",
    "auto_topup.failed",
    "partner.balance_low",
    "customer_key.created",
    "customer_key.revoked",
]
# fast retries: 0.5 s, 1.25 s, 3.1 s (10% jitter), dead after the 4th attempt
RETRY_FIRST_S, RETRY_FACTOR, MAX_ATTEMPTS = 0.5, 2.5, 4
ENV = {
    "worker": {
        "CG_WORKER_BFF_TOKEN": TOKEN,
        "CG_WORKER_WEBHOOK_RETRY_FIRST_S": str(RETRY_FIRST_S),
        "CG_WORKER_WEBHOOK_RETRY_FACTOR": str(RETRY_FACTOR),
        "CG_WORKER_WEBHOOK_RETRY_MAX_S": "5",
        "CG_WORKER_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "CG_WORKER_WEBHOOK_TIMEOUT_S": "3",
    },
    "bff": {
        "CG_BFF_INTERNAL_TOKEN": TOKEN,
        "CG_BFF_WEBHOOK_SECRET_KEYS": base64.b64encode(secrets.token_bytes(32)).decode(),
    },
}


@dataclass
class Received:
    at: float
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A partner's webhook endpoint: records every POST by path, answers ``status[path]`` (200)."""

    port: int = 0
    status: dict[str, int] = field(default_factory=dict)
    got: dict[str, list[Received]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return list(self.got.get(path, []))


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with rec.lock:
                rec.got.setdefault(self.path, []).append(
                    Received(time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body)
                )
            code = rec.status.get(self.path, 200)
            answer = b"" if code in (204, 304) else b"ok"
            self.send_response(code)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request):
    with stack_on(request, services=("nats", "keys", "ledger", "worker", "bff"), env=ENV) as s:
        s.start_replica("worker", "worker-2")  # two replicas share the jobs: each is still sent once
        yield s


@pytest.fixture(scope="module")
def seeder(stack) -> Iterator[Seeder]:
    s = Seeder(stack.keys_addr, stack.ledger_addr)
    yield s
    s.close()


def register(owner: BffClient, url: str, event_types: list[str]) -> dict:
    return owner.ok(
        "POST",
        "/partner/webhooks",
        json={"url": url, "event_types": event_types, "description": "billing"},
        headers={"Idempotency-Key": secrets.token_hex(8)},
    )


def verified(secret: str, r: Received) -> dict:
    """The event, once its signature verifies with the reference library."""
    return Webhook(secret).verify(r.body, r.headers)


def test_customer_key_events_reach_their_partner_signed_exactly_once(stack, seeder, receiver):
    pa, pb_ = bff.new_partner(seeder), bff.new_partner(seeder)
    owner_a, owner_b = bff.partner_user(stack, pa), bff.partner_user(stack, pb_)
    path_a, path_b = f"/a-{pa}", f"/b-{pb_}"
    made_a = register(owner_a, receiver.url(path_a), ALL_TYPES)
    register(owner_b, receiver.url(path_b), ALL_TYPES)
    seeder.self_service_on(pa)
    customer = seeder.customer(pa, "Acme", bff.unique("cus"))
    actor = pb.Actor(partner_id=pa, customer_id=customer.id)
    created = seeder.keys.CreateCustomerKey(
        pb.CreateCustomerKeyRequest(
            actor=actor, idempotency_key=bff.unique("ck"), name="acme key", allowed_models=["gpt-4o-mini"]
        ),
        timeout=5,
    )
    key_id = created.key.id
    seeder.keys.RevokeKey(pb.RevokeKeyRequest(actor=actor, key_id=key_id), timeout=5)

    eventually(lambda: len(receiver.at(path_a)) >= 2, timeout_s=20, what="two webhooks at partner A's endpoint")
    time.sleep(2)  # room for a duplicate to show up
    got = receiver.at(path_a)
    events = [verified(made_a["secret"], r) for r in got]
    assert sorted(e["type"] for e in events) == ["customer_key.created", "customer_key.revoked"]
    for r, e in zip(got, events, strict=True):
        assert r.headers["webhook-id"] == e["id"] and "." not in e["id"]
        assert r.headers["content-type"] == "application/json"
        assert e["partner_id"] == pa
        assert e["data"]["key_id"] == key_id and e["data"]["customer_id"] == customer.id
    assert len({r.headers["webhook-id"] for r in got}) == 2  # each once
    assert receiver.at(path_b) == []  # partner B's endpoint never sees A's events

    endpoint_id = made_a["endpoint"]["id"]
    deliveries = owner_a.ok("GET", f"/partner/webhooks/{endpoint_id}/deliveries")["data"]
    assert sorted((d["event_type"], d["state"], d["attempts"]) for d in deliveries) == [
        ("customer_key.created", "succeeded", 1),
        ("customer_key.revoked", "succeeded", 1),
    ]
    # partner B sees none of them, and cannot read A's endpoint
    assert owner_b.get(f"/partner/webhooks/{endpoint_id}/deliveries").status_code == 404


def test_a_failing_endpoint_is_retried_with_backoff_dead_lettered_and_redelivered(stack, seeder, receiver):
    partner_id = bff.new_partner(seeder)
    owner = bff.partner_user(stack, partner_id)
    path = f"/fail-{partner_id}"
    receiver.status[path] = 500
    made = register(owner, receiver.url(path), ["key.suspended"])
    endpoint_id, secret = made["endpoint"]["id"], made["secret"]
    key = seeder.funded_key(partner_id, 10, ["gpt-4o-mini"])
    seeder.keys.SuspendKey(
        pb.SuspendKeyRequest(actor=pb.Actor(partner_id=partner_id), key_id=key.key_id, note="unpaid"), timeout=5
    )

    eventually(lambda: len(receiver.at(path)) >= MAX_ATTEMPTS, timeout_s=30, what="every attempt")
    base = f"/partner/webhooks/{endpoint_id}/deliveries"
    dead = eventually(lambda: owner.ok("GET", base, params={"state": "dead"})["data"], what="a dead letter")
    time.sleep(2)  # no attempt after the last
    attempts = receiver.at(path)
    assert len(attempts) == MAX_ATTEMPTS
    ids = {r.headers["webhook-id"] for r in attempts}
    assert len(ids) == 1  # the same webhook-id on every retry
    for r in attempts:
        assert verified(secret, r)["type"] == "key.suspended"
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
    expected = [RETRY_FIRST_S * RETRY_FACTOR**i for i in range(MAX_ATTEMPTS - 1)]
    # each wait at least its backoff (the POST-to-POST gap also holds a claim and a report)
    assert all(g >= 0.85 * e for g, e in zip(gaps, expected, strict=True)), gaps
    assert gaps[-1] > gaps[0] + 1.5, gaps  # it backs off

    (delivery,) = dead
    assert delivery["attempts"] == MAX_ATTEMPTS and delivery["last_status_code"] == 500
    assert delivery["event_id"] in ids
    detail = owner.ok("GET", f"{base}/{delivery['id']}")
    assert [a["outcome"] for a in detail["attempt_log"]] == ["retrying"] * (MAX_ATTEMPTS - 1) + ["dead"]
    assert detail["payload"]["data"]["key_id"] == key.key_id and detail["payload"]["data"]["suspension"] == "by_partner"

    # the endpoint is fixed: redeliver sends it again, with the same webhook-id, once
    receiver.status[path] = 204
    viewer = bff.partner_user(stack, partner_id, "viewer", via=owner)
    assert viewer.post(f"{base}/{delivery['id']}/redeliver").status_code == 403
    again = owner.ok("POST", f"{base}/{delivery['id']}/redeliver")
    assert again["state"] == "pending" and again["generation"] == 1 and again["attempts"] == 0
    done = eventually(
        lambda: (d := owner.ok("GET", f"{base}/{delivery['id']}"))["state"] == "succeeded" and d,
        timeout_s=15,
        what="the redelivery",
    )
    time.sleep(1)
    after = receiver.at(path)
    assert len(after) == MAX_ATTEMPTS + 1
    assert after[-1].headers["webhook-id"] == delivery["event_id"]
    verified(secret, after[-1])
    assert done["generation"] == 1 and done["attempts"] == 1
    assert [(a["generation"], a["outcome"]) for a in done["attempt_log"]][-1] == (1, "succeeded")
    assert owner.ok("GET", base, params={"state": "dead"})["data"] == []


# -- budget and balance events: the worker's own rules, told when to look by usage events ---

ONE_UCR_PER_TOKEN = lpb.Price(input_usd_per_mtok="0.01", output_usd_per_mtok="0.01")


def spend(stack, seeder: Seeder, key, credits: int) -> None:
    """Settles ``credits`` on the key straight in the ledger, then a usage event makes the
    worker look at the key (as a proxied request would)."""
    rid = uuid.uuid4().hex
    amount = credits * UCR_PER_CREDIT
    seeder.ledger.Reserve(
        lpb.ReserveRequest(request_id=rid, account=key.account, model="m", price=ONE_UCR_PER_TOKEN,
                           max_input_tokens=amount),
        timeout=5,
    )  # fmt: skip
    seeder.ledger.Settle(
        lpb.SettleRequest(request_id=rid, input_tokens=amount, usage_source=lpb.USAGE_SOURCE_PROVIDER), timeout=5
    )

    async def nudge() -> None:
        nc = await nats.connect(stack.nats_url)
        event = epb.UsageEvent(request_id=rid, key_id=key.key_id, partner_id=key.partner_id, model="gpt-4o-mini")
        await nc.jetstream().publish(natsx.usage_subject(key.partner_id, key.key_id), event.SerializeToString())
        await nc.drain()

    asyncio.run(nudge())


def types_at(receiver: Receiver, path: str, secret: str) -> list[tuple[str, str]]:
    return [(e["type"], e["id"]) for e in (verified(secret, r) for r in receiver.at(path))]


def test_budget_events_low_budget_auto_top_up_exhausted_each_once(stack, seeder, receiver):
    partner_id = bff.new_partner(seeder, credits=10_000)
    owner = bff.partner_user(stack, partner_id)
    path = f"/budget-{partner_id}"
    made = register(owner, receiver.url(path), ["key.low_budget", "key.exhausted", "auto_topup.succeeded"])
    secret = made["secret"]
    plain = seeder.funded_key(partner_id, 100, ["gpt-4o-mini"], name="plain")
    spend(stack, seeder, plain, 95)  # 5 of 100 credits left: below 10%
    spend(stack, seeder, plain, 1)  # still the same crossing
    eventually(lambda: len(receiver.at(path)) >= 1, timeout_s=20, what="key.low_budget")
    spend(stack, seeder, plain, 4)  # nothing left: exhausted
    eventually(lambda: len(receiver.at(path)) >= 2, timeout_s=20, what="key.exhausted")
    auto = seeder.funded_key(
        partner_id, 600, ["gpt-4o-mini"], name="auto",
        auto_topup=pb.AutoTopUp(enabled=True, threshold_usd="5", amount_usd="20"),
    )  # fmt: skip
    spend(stack, seeder, auto, 101)  # 499 credits settled remaining: below the $5 threshold
    eventually(lambda: len(receiver.at(path)) >= 3, timeout_s=20, what="auto_topup.succeeded")
    spend(stack, seeder, auto, 1)  # topped up: no more
    time.sleep(2)
    got = types_at(receiver, path, secret)
    funded = 100 * UCR_PER_CREDIT
    assert [t for t, _ in got] == ["key.low_budget", "key.exhausted", "auto_topup.succeeded"], got
    assert got[0][1] == f"key_low_budget:{plain.key_id}:{funded}"
    assert got[1][1].startswith(f"key_exhausted:{plain.key_id}:")
    assert got[2][1] == f"auto_topup_succeeded:{auto.key_id}:{600 * UCR_PER_CREDIT}"
    topped = verified(secret, receiver.at(path)[2])["data"]
    assert (topped["amount_credits"], topped["remaining_credits"]) == ("2000", "499")


def test_partner_balance_low_once_per_crossing(stack, seeder, receiver):
    partner_id = bff.new_partner(seeder, credits=2_500)
    owner = bff.partner_user(stack, partner_id)
    path = f"/balance-{partner_id}"
    secret = register(owner, receiver.url(path), ["partner.balance_low"])["secret"]
    seeder.funded_key(partner_id, 1_000, ["gpt-4o-mini"])  # the balance falls below 2,000 credits
    eventually(lambda: len(receiver.at(path)) >= 1, timeout_s=20, what="partner.balance_low")
    seeder.funded_key(partner_id, 10, ["gpt-4o-mini"])  # lower still: the same crossing
    seeder.ledger.Deposit(
        lpb.DepositRequest(idempotency_id=bff.unique("dep"), account=f"partner:{partner_id}",
                           amount_ucr=10_000 * UCR_PER_CREDIT, memo="top up"),
        timeout=5,
    )  # fmt: skip
    time.sleep(2)  # the worker sees the balance back above the line: re-armed
    seeder.funded_key(partner_id, 9_000, ["gpt-4o-mini"])  # below again: a second crossing
    eventually(lambda: len(receiver.at(path)) >= 2, timeout_s=20, what="a second partner.balance_low")
    time.sleep(2)
    got = types_at(receiver, path, secret)
    assert [i for _, i in got] == [f"partner_balance_low:{partner_id}:1", f"partner_balance_low:{partner_id}:2"]
    data = verified(secret, receiver.at(path)[0])["data"]
    assert int(data["balance_ucr"]) < 2_000 * UCR_PER_CREDIT and data["threshold_credits"] == "2000"
