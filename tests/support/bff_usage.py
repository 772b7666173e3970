"""Helpers of the BFF's usage tests: a real nats-server, the BFF app served in-process by
uvicorn (its lifespan, jobs and routes for real) with fakes of its collaborators: an
``Authenticator`` that takes the principal from a test header, and a keys stub that
answers GetKey / GetCustomer / ListKeys as keys does (NOT_FOUND for another tenant's)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from fastapi import FastAPI, Request

from cg_bff.app import create_app
from cg_bff.backends import Backends
from cg_bff.principal import Principal
from cg_bff.settings import Settings
from cg_bff.usage.consumer import DURABLE
from cg_devstack import Stack, StackConfig
from cglib import natsx
from creditgate.events.v1 import events_pb2 as epb
from creditgate.keys.v1 import keys_pb2 as kpb
from creditgate.ledger.v1 import ledger_pb2 as lpb

PRINCIPAL_HEADER = "X-Test-Principal"


@contextlib.contextmanager
def nats_server(var: Path) -> Iterator[Stack]:
    """A JetStream nats-server alone, on free ports, its store under ``var``."""
    with Stack(StackConfig(var_dir=var, services=("nats",))) as stack:
        yield stack


def partner(partner_id: str, role: str = "owner", via: str = "session") -> Principal:
    return Principal(kind="partner", via=via, user_id=f"u-{partner_id}-{role}", partner_id=partner_id, role=role)  # type: ignore[arg-type]


def customer(partner_id: str, customer_id: str) -> Principal:
    return Principal(
        kind="customer", via="session", user_id=f"u-{customer_id}", partner_id=partner_id, customer_id=customer_id
    )


ADMIN = Principal(kind="admin", via="session", user_id="u-admin")


class FakeAuth:
    """Principals by name; a request names its principal in ``X-Test-Principal``."""

    def __init__(self, principals: dict[str, Principal]) -> None:
        self.principals = principals

    async def authenticate(self, request: Request) -> Principal | None:
        name = request.headers.get(PRINCIPAL_HEADER)
        return self.principals.get(name) if name else None


def rpc_error(code: grpc.StatusCode, details: str = "fake") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


@dataclass
class FakeKeys:
    """Keys as the keys service shows them to an actor."""

    keys: dict[str, kpb.KeyDetail] = field(default_factory=dict)
    customers: dict[str, kpb.Customer] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def add_key(
        self,
        partner_id: str,
        key_id: str,
        *,
        settled_remaining_ucr: int = 0,
        min_request_ucr: int = 1,
        kind: str = "partner",
        customer_id: str = "",
        status: int = kpb.KEY_STATUS_ACTIVE,
        created_at_unix: int = 0,
        auto_topup: kpb.AutoTopUp | None = None,
    ) -> kpb.KeyDetail:
        key = kpb.Key(
            id=key_id,
            partner_id=partner_id,
            kind=kind,
            status=status,
            owner_customer_id=customer_id if kind == "customer" else "",
            created_at_unix=created_at_unix or int(time.time()) - 30 * 86400,
        )
        if customer_id:
            key.billing.customer_id = customer_id
        if auto_topup is not None:
            key.auto_topup.CopyFrom(auto_topup)
        detail = kpb.KeyDetail(key=key, settled_remaining_ucr=settled_remaining_ucr, min_request_ucr=min_request_ucr)
        self.keys[key_id] = detail
        return detail

    def add_customer(self, partner_id: str, customer_id: str) -> None:
        self.customers[customer_id] = kpb.Customer(id=customer_id, partner_id=partner_id)

    def _visible(self, actor: kpb.Actor, detail: kpb.KeyDetail | None) -> bool:
        if detail is None or detail.key.partner_id != actor.partner_id:
            return False
        k = detail.key
        return not actor.customer_id or actor.customer_id in (k.owner_customer_id, k.billing.customer_id)

    async def GetKey(self, request: kpb.GetKeyRequest, timeout: float | None = None) -> kpb.KeyDetail:
        self.calls.append(f"GetKey {request.key_id}")
        detail = self.keys.get(request.key_id)
        if not self._visible(request.actor, detail):
            raise rpc_error(grpc.StatusCode.NOT_FOUND, "key not found")
        assert detail is not None
        return detail

    async def GetCustomer(self, request: kpb.GetCustomerRequest, timeout: float | None = None) -> kpb.Customer:
        c = self.customers.get(request.customer_id)
        actor = request.actor
        if c is None or c.partner_id != actor.partner_id or (actor.customer_id and actor.customer_id != c.id):
            raise rpc_error(grpc.StatusCode.NOT_FOUND, "customer not found")
        return c

    async def ListKeys(self, request: kpb.ListKeysRequest, timeout: float | None = None) -> kpb.ListKeysResponse:
        keys = [d.key for d in self.keys.values() if self._visible(request.actor, d)]
        if not request.include_revoked:
            keys = [k for k in keys if k.status != kpb.KEY_STATUS_REVOKED]
        return kpb.ListKeysResponse(keys=keys)


def fake_backends(keys: FakeKeys) -> Backends:
    return Backends(keys=keys, ledger=None, ledger_admin=None)  # type: ignore[arg-type]  # fakes of the stubs


def usage_event(
    request_id: str,
    partner_id: str = "p1",
    key_id: str = "k1",
    *,
    customer_id: str = "",
    model: str = "gpt-4o-mini",
    time_ms: int | None = None,
    input_tokens: int = 100,
    output_tokens: int = 50,
    charged_ucr: int = 1_000,
    customer_charged_uai: int = 0,
    cents: str = "",
    outcome: int = epb.USAGE_OUTCOME_OK,
    source: int = lpb.USAGE_SOURCE_PROVIDER,
    latency_ms: int = 120,
    stream: bool = False,
) -> epb.UsageEvent:
    return epb.UsageEvent(
        request_id=request_id,
        key_id=key_id,
        partner_id=partner_id,
        customer_id=customer_id,
        model=model,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        charged_ucr=charged_ucr,
        customer_charged_uai=customer_charged_uai,
        price_per_ai_credit_cents=cents,
        outcome=outcome,  # type: ignore[arg-type]
        source=source,  # type: ignore[arg-type]
        latency_ms=latency_ms,
        stream=stream,
        time_unix_ms=int(time.time() * 1000) if time_ms is None else time_ms,
        price_book_version="pb-1",
    )


async def publish(js: Any, events: list[epb.UsageEvent], dedup: bool = True) -> None:
    """As the proxy publishes: on usage.<partner>.<key>, Nats-Msg-Id = request id (or,
    ``dedup=False``, without it: every copy is stored, as after the duplicate window)."""
    for e in events:
        headers = {"Nats-Msg-Id": e.request_id} if dedup else None
        await js.publish(natsx.usage_subject(e.partner_id, e.key_id), e.SerializeToString(), headers=headers)


class ServedApp:
    def __init__(self, app: FastAPI, server: uvicorn.Server, url: str) -> None:
        self.app, self.server, self.url = app, server, url

    @property
    def state(self) -> Any:
        return self.app.state.bff


@contextlib.asynccontextmanager
async def served(settings: Settings, backends: Backends, auth: FakeAuth) -> AsyncIterator[ServedApp]:
    """The BFF app (lifespan and jobs included) on a free loopback port, with these fakes."""
    app = create_app(settings, backends=backends)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done():
            task.result()
        assert time.monotonic() < deadline, "the BFF did not start"
        await asyncio.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    app.state.bff.auth = auth
    try:
        yield ServedApp(app, server, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


async def consumer_drained(js: Any, durable: str = DURABLE) -> bool:
    """Every message the USAGE stream holds was delivered to ``durable`` and acknowledged
    (or terminated): its ack floor has reached the stream's last message. Not
    ``num_pending == 0 and num_ack_pending == 0``: nats-server registers a consumer with
    its stream before it counts what the stream holds (consumer.go: ``setConsumer``, then
    ``setLeader``), so a consumer being created can be seen with nothing pending."""
    try:
        last = (await js.stream_info(natsx.USAGE_STREAM)).state.last_seq
        info = await js.consumer_info(natsx.USAGE_STREAM, durable)
    except Exception:  # not declared yet, or NATS busy: not drained
        return False
    return info.num_ack_pending == 0 and info.ack_floor.stream_seq >= last


async def wait_for(predicate: Any, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


# -- a fixed set of events, in whole buckets, for the query tests -------------------------

HOUR = 3_600_000
DAY = 86_400_000
NOW = int(time.time() * 1000)
H0 = NOW - NOW % DAY - 2 * DAY + 10 * HOUR  # 10:00 UTC two days ago: inside retention


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


EVENTS = [
    usage_event("r1", "p1", "k1", customer_id="c1", model="A", time_ms=H0 + 60_000, charged_ucr=1000,
                customer_charged_uai=700, cents="1.5", input_tokens=10, output_tokens=1, latency_ms=100),
    usage_event("r2", "p1", "k1", customer_id="c1", model="B", time_ms=H0 + 120_000, charged_ucr=2000,
                customer_charged_uai=1501, cents="1.50", input_tokens=20, output_tokens=2, latency_ms=300),
    usage_event("r3", "p1", "k2", model="A", time_ms=H0 + HOUR + 300_000, charged_ucr=500,
                input_tokens=30, output_tokens=3),
    usage_event("r4", "p1", "k3", customer_id="c2", model="A", time_ms=H0 + HOUR + 600_000, charged_ucr=300,
                customer_charged_uai=333, cents="2", outcome=epb.USAGE_OUTCOME_UPSTREAM_ERROR,
                source=lpb.USAGE_SOURCE_ESTIMATED, input_tokens=40, output_tokens=4, stream=True),
    usage_event("r5", "p1", "k1", customer_id="c1", model="A", time_ms=H0 + 25 * HOUR, charged_ucr=4000,
                customer_charged_uai=1000, cents="1.25", input_tokens=50, output_tokens=5),
    usage_event("r9", "p2", "k9", customer_id="c9", model="A", time_ms=H0 + 60_000, charged_ucr=99_999,
                customer_charged_uai=5555, cents="3", input_tokens=90, output_tokens=9),
]  # fmt: skip


# -- end to end: a partner with a customer-billed key, made over the management API -------


@dataclass
class BilledKey:
    """A partner (its owner signed in), a customer with AI credits, and a key that bills it."""

    owner: Any  # cg_devstack.bff.BffClient, signed in
    partner_id: str
    customer_id: str
    key_id: str
    secret: str
    model: str


def partner_with_billed_key(stack: Stack, ref: str, cents: str = "1.25", multiplier: str = "1.5") -> BilledKey:
    """Over HTTP only, as a platform admin and then a partner's owner would."""
    import uuid

    from cg_devstack.bff import BffClient, invite_and_accept

    model = "gpt-4o-mini"
    admin = BffClient(stack.bff_url).sign_in(stack.bff_admin["email"], stack.bff_admin["password"])
    try:
        partner = admin.ok("POST", "/admin/partners", json={"name": f"Usage {ref}", "tier": "growth"})
        admin.ok(
            "POST",
            f"/admin/partners/{partner['id']}/deposits",
            json={"amount_credits": "50000"},
            headers={"Idempotency-Key": f"deposit-{uuid.uuid4()}"},
        )
        owner = invite_and_accept(
            admin,
            f"/admin/partners/{partner['id']}/invites",
            {"email": f"owner-{ref}-{uuid.uuid4().hex[:8]}@usage.test", "role": "owner"},
            "a long enough password 1",
        )
    finally:
        admin.close()
    cust = owner.ok("POST", "/partner/customers", json={"name": f"Customer {ref}", "ai_credits_enabled": True})
    owner.ok(
        "POST",
        f"/partner/customers/{cust['id']}/ai-credits",
        json={"amount": "100000"},
        headers={"Idempotency-Key": f"grant-{uuid.uuid4()}"},
    )
    created = owner.ok(
        "POST",
        "/partner/keys",
        json={
            "name": f"Billed {ref}",
            "budget_credits": 5000,
            "allowed_models": [model],
            "billing": {"customer_id": cust["id"], "profit_multiplier": multiplier, "price_per_ai_credit_cents": cents},
        },
        headers={"Idempotency-Key": f"key-{uuid.uuid4()}"},
    )
    return BilledKey(owner, partner["id"], cust["id"], created["key"]["id"], created["secret"], model)
