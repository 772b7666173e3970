"""GET /events: a tenant's live usage, balance and key changes from a real NATS, through
the in-process app (uvicorn), on SQLite and PostgreSQL: delivered to the right tenant
within 2 s and never to another; heartbeats; subscriptions gone after a disconnect and a
shutdown; a client that cannot keep up is dropped."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from cg_bff.principal import Principal
from cg_bff.settings import Settings
from cg_bff.usage.live import Connection, EventStream, LiveHub, hub_of
from cglib import natsx
from creditgate.events.v1 import events_pb2 as epb
from support.bff_usage import (
    ADMIN,
    PRINCIPAL_HEADER,
    FakeAuth,
    FakeKeys,
    customer,
    fake_backends,
    nats_server,
    partner,
    publish,
    served,
    usage_event,
    wait_for,
)

PRINCIPALS = {
    "p1": partner("p1"),
    "p2": partner("p2"),
    "c1": customer("p1", "c1"),
    "c2": customer("p1", "c2"),
    "admin": ADMIN,
}


@pytest.fixture(scope="module")
def nats_stack(tmp_path_factory) -> Iterator[Any]:
    with nats_server(tmp_path_factory.mktemp("nats")) as stack:
        yield stack


def fake_keys() -> FakeKeys:
    keys = FakeKeys()
    keys.add_key("p1", "k1", customer_id="c1")  # billed to c1
    keys.add_key("p1", "k3", kind="customer", customer_id="c2")  # c2's own
    keys.add_key("p2", "k9")
    return keys


@pytest.fixture
async def app(db_url: str, nats_stack) -> AsyncIterator[Any]:
    settings = Settings(database_url=db_url, nats_url=nats_stack.nats_url, grpc_port=0)
    async with served(settings, fake_backends(fake_keys()), FakeAuth(PRINCIPALS)) as s:
        await wait_for(lambda: s.state.nats is not None and s.state.nats.is_connected, what="the BFF's NATS")
        yield s


@pytest.fixture
async def nc(nats_stack) -> AsyncIterator[Any]:
    conn = await natsx.connect(nats_stack.nats_url, "test-publisher")
    await natsx.ensure_usage_stream(conn.jetstream())
    await natsx.ensure_keys_stream(conn.jetstream())
    await natsx.ensure_ledger_stream(conn.jetstream())
    yield conn
    await conn.close()


class Listener:
    """One SSE client: what it receives, parsed, in order."""

    def __init__(self, client: httpx.AsyncClient, who: str) -> None:
        self.client, self.who = client, who
        self.events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.ended = asyncio.Event()

    async def _read(self, response: httpx.Response) -> None:
        buffer = ""
        try:
            async for text in response.aiter_text():
                buffer += text
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    name, data, comments = "message", None, []
                    for line in block.split("\n"):
                        if line.startswith(":"):
                            comments.append(line[1:].strip())
                        elif line.startswith("event: "):
                            name = line[7:]
                        elif line.startswith("data: "):
                            data = json.loads(line[6:])
                    if data is not None:
                        await self.events.put((name, data))
                    for c in comments:
                        await self.events.put(("comment", c))
        except (httpx.ReadError, httpx.RemoteProtocolError):
            pass
        finally:
            self.ended.set()

    async def next(self, timeout_s: float = 2.0, skip_comments: bool = True) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            item = await asyncio.wait_for(self.events.get(), timeout=max(deadline - time.monotonic(), 0.001))
            if not (skip_comments and item[0] == "comment"):
                return item


@contextlib.asynccontextmanager
async def listening(base_url: str, who: str) -> AsyncIterator[Listener]:
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10, read=None)) as client:
        listener = Listener(client, who)
        async with client.stream("GET", "/api/v1/events", headers={PRINCIPAL_HEADER: who}) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            task = asyncio.create_task(listener._read(response))
            assert await listener.next(skip_comments=False) == ("comment", "connected")
            try:
                yield listener
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def key_changed(partner_id: str, key_id: str, change: int = epb.KEY_CHANGE_TOPPED_UP) -> tuple[str, bytes]:
    e = epb.KeyChanged(key_id=key_id, partner_id=partner_id, status="active", change=change, time_unix_ms=1)  # type: ignore[arg-type]
    return natsx.key_subject(partner_id, key_id), e.SerializeToString()


def balance_changed(partner_id: str, available: int) -> tuple[str, bytes]:
    e = epb.BalanceChanged(
        account=f"partner:{partner_id}", partner_id=partner_id, posted_ucr=5, available_ucr=available
    )
    return natsx.balance_subject(partner_id), e.SerializeToString()


async def test_each_tenant_gets_its_own_events_and_nothing_else(app, nc) -> None:
    js = nc.jetstream()
    async with (
        listening(app.url, "p1") as p1,
        listening(app.url, "p2") as p2,
        listening(app.url, "c1") as c1,
        listening(app.url, "c2") as c2,
    ):
        sent = time.monotonic()
        await publish(js, [usage_event("u-p2", "p2", "k9", charged_ucr=777)])  # p2's, first
        await publish(
            js, [usage_event("u-c1", "p1", "k1", customer_id="c1", charged_ucr=1234, customer_charged_uai=99)]
        )
        name, data = await p1.next()
        assert (name, data["request_id"], data["cost_ucr"], data["ai_credits_uai"]) == ("usage", "u-c1", 1234, 99)
        assert time.monotonic() - sent < 2.0
        name, data = await c1.next()
        assert (name, data["request_id"], data["ai_credits_uai"]) == ("usage", "u-c1", 99)
        assert "cost_ucr" not in data  # a customer never sees its partner's cost
        name, data = await p2.next()
        assert (name, data["request_id"], data["cost_ucr"]) == ("usage", "u-p2", 777)

        for subject, payload in (balance_changed("p2", 1), balance_changed("p1", 42)):
            await js.publish(subject, payload)
        assert await p1.next() == (
            "balance",
            {"account": "partner:p1", "posted_ucr": 5, "available_ucr": 42, "time_ms": 0},
        )
        assert (await p2.next())[1]["available_ucr"] == 1

        for subject, payload in (key_changed("p2", "k9"), key_changed("p1", "k1"), key_changed("p1", "k3")):
            await js.publish(subject, payload)
        assert [(await p1.next())[1]["key_id"] for _ in range(2)] == ["k1", "k3"]
        assert (await p2.next())[1] == {"key_id": "k9", "status": "active", "change": "topped_up", "time_ms": 1}
        assert (await c1.next())[1]["key_id"] == "k1"  # billed to c1; k3 is not c1's
        assert (await c2.next())[1]["key_id"] == "k3"  # its own; nothing of k1, c1's usage or p1's balance

        # the markers: everything published before them reached each listener before them
        await publish(js, [usage_event("m-p1", "p1", "k2"), usage_event("m-c1", "p1", "k1", customer_id="c1")])
        await publish(js, [usage_event("m-c2", "p1", "k3", customer_id="c2"), usage_event("m-p2", "p2", "k9")])
        assert [(await p1.next())[1]["request_id"] for _ in range(3)] == ["m-p1", "m-c1", "m-c2"]
        assert (await c1.next())[1]["request_id"] == "m-c1"
        assert (await c2.next())[1]["request_id"] == "m-c2"
        assert (await p2.next())[1]["request_id"] == "m-p2"
        for listener in (p1, p2, c1, c2):  # nothing else came
            with pytest.raises(TimeoutError):
                await listener.next(timeout_s=0.3)


async def test_the_read_model_has_the_request_within_2_s(app, nc) -> None:
    request_id = f"rm-{uuid.uuid4()}"  # the module's NATS dedups request ids across tests
    sent = time.monotonic()
    await publish(nc.jetstream(), [usage_event(request_id, "p1", "k1", customer_id="c1", charged_ucr=4321)])
    async with httpx.AsyncClient(base_url=app.url + "/api/v1", headers={PRINCIPAL_HEADER: "p1"}) as client:

        async def found() -> bool:
            page = (await client.get("/partner/usage/requests", params={"key_id": "k1"})).json()
            return any(r["request_id"] == request_id and r["cost_ucr"] == 4321 for r in page["data"])

        await wait_for(found, timeout_s=2.0, what="the request in the log")
        assert time.monotonic() - sent < 2.0
        series = (await client.get("/partner/usage/series", params={"by": "key", "id": "k1"})).json()
        assert sum(p["cost_ucr"] for p in series["points"]) >= 4321


def live_subs(app) -> int:
    """The BFF's core NATS subscriptions of live streams (not the consumer's inbox)."""
    return sum(1 for sub in app.state.nats._subs.values() if not sub.subject.startswith("_INBOX"))


async def test_heartbeats_and_a_clean_end_on_disconnect(app) -> None:
    hub = LiveHub(heartbeat_s=0.2)
    app.state.extras["live"] = hub
    async with listening(app.url, "p1") as p1:
        assert len(hub.connections) == 1 and live_subs(app) == 3
        assert await p1.next(timeout_s=1.0, skip_comments=False) == ("comment", "keep-alive")
    await wait_for(lambda: not hub.connections and live_subs(app) == 0, timeout_s=5, what="the cleanup")


async def test_a_clean_end_on_shutdown(app) -> None:
    hub = hub_of(app.state)
    async with listening(app.url, "p1") as p1, listening(app.url, "c1") as c1:
        assert live_subs(app) == 5
        hub.close()  # what SIGTERM and the app's shutdown do
        await asyncio.wait_for(asyncio.gather(p1.ended.wait(), c1.ended.wait()), timeout=2)
    await wait_for(lambda: not hub.connections and live_subs(app) == 0, timeout_s=5, what="the cleanup")
    async with httpx.AsyncClient(base_url=app.url) as client:  # no new streams while shutting down
        r = await client.get("/api/v1/events", headers={PRINCIPAL_HEADER: "p1"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"


async def test_who_may_listen(app) -> None:
    async with httpx.AsyncClient(base_url=app.url) as client:
        assert (await client.get("/api/v1/events")).status_code == 401
        r = await client.get("/api/v1/events", headers={PRINCIPAL_HEADER: "admin"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        nats, app.state.nats = app.state.nats, None
        try:
            assert (await client.get("/api/v1/events", headers={PRINCIPAL_HEADER: "p1"})).status_code == 503
        finally:
            app.state.nats = nats


# -- a slow client, with fakes of NATS and of the ASGI server -------------------------------


class FakeSub:
    def __init__(self, nc: FakeNats) -> None:
        self.nc = nc

    async def unsubscribe(self) -> None:
        self.nc.subs.remove(self)


class FakeNats:
    def __init__(self) -> None:
        self.subs: list[FakeSub] = []
        self.callbacks: dict[str, Any] = {}

    async def subscribe(self, subject: str, cb: Any) -> FakeSub:
        self.callbacks[subject] = cb
        sub = FakeSub(self)
        self.subs.append(sub)
        return sub


class FakeMsg:
    def __init__(self, subject: str, data: bytes) -> None:
        self.subject, self.data = subject, data


async def _unused_key_check(key_id: str) -> bool:
    return False


async def test_an_overflowing_queue_drops_the_client() -> None:
    hub, nc = LiveHub(queue_max=3), FakeNats()
    conn = Connection(hub, nc, partner("p1"), _unused_key_check)  # type: ignore[arg-type]
    await conn.open()
    cb = nc.callbacks["usage.p1.>"]
    for i in range(5):  # a burst the stream has not read
        await cb(FakeMsg("usage.p1.k1", usage_event(f"r{i}", "p1", "k1").SerializeToString()))
    assert conn.overflowed
    frames = [f async for f in conn.frames()]
    assert frames == [b"retry: 3000\n: connected\n\n"]  # ended at once, nothing kept for it
    await conn.close()
    assert nc.subs == [] and not hub.connections


async def test_a_client_that_does_not_read_is_dropped() -> None:
    hub, nc = LiveHub(send_timeout_s=0.2, heartbeat_s=0.05), FakeNats()
    conn = Connection(hub, nc, customer("p1", "c1"), _unused_key_check)  # type: ignore[arg-type]
    sent: list[dict] = []
    blocked = asyncio.Event()

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) > 2:
            blocked.set()
            await asyncio.Event().wait()  # the socket's buffers are full: never returns

    async def receive() -> dict:
        await asyncio.Event().wait()
        return {}

    started = time.monotonic()
    await asyncio.wait_for(EventStream(conn)({"type": "http"}, receive, send), timeout=3)
    assert blocked.is_set() and time.monotonic() - started < 2
    assert nc.subs == [] and not hub.connections


def test_subjects_never_reach_beyond_the_principal() -> None:
    from cg_bff import errors
    from cg_bff.usage.live import subjects

    assert subjects(partner("p1")) == ["usage.p1.>", "ledger.balance.p1", "keys.p1.>"]
    assert subjects(customer("p1", "c1")) == ["usage.p1.>", "keys.p1.>"]
    for bad in ("p1.*", ">", "p1 x", ""):
        with pytest.raises(errors.ApiError):
            subjects(partner(bad))
    with pytest.raises(errors.ApiError):
        subjects(Principal(kind="customer", via="session", partner_id="p1"))  # no customer id
