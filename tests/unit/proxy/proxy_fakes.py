"""Fakes of the proxy's collaborators (``cg_proxy.collaborators``), and a harness that runs
the real app in-process with them: no sockets, no gRPC, no NATS.

The key authenticator is the real ``KeyAuthenticator`` (its refusals are what the auth
tests check) over ``FakeKeys``, a stand-in for the keys service's gRPC stub. The other
collaborators are fakes of their interface that record what the routes asked of them:
``FakeLedger`` (reserve, settle, void), ``FakeUpstreams`` (open), ``FakeRecorder``
(record, void, track) and ``FakeBus``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx

from cg_proxy.app import create_app
from cg_proxy.auth import KeyAuthenticator
from cg_proxy.collaborators import Finished, Handler, Recorder
from cg_proxy.http_client import Disconnected
from cg_proxy.ledger_client import refusal
from cg_proxy.middleware import RequestContext
from cg_proxy.outbox import Outbox
from cg_proxy.settings import Settings
from cg_proxy.token_usage import Usage
from cg_proxy.usage_recorder import UsageRecorder
from cglib.keysecret import hash_secret, new_secret
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2

GPT = keys_pb2.ModelRoute(
    id="gpt-4o-mini",
    provider="openai",
    upstream_model="gpt-4o-mini-2024-07-18",
    input_usd_per_mtok="0.15",
    output_usd_per_mtok="0.60",
    max_output_tokens=16384,
    price_book_version="pb-1",
)
CLAUDE = keys_pb2.ModelRoute(
    id="claude-haiku-4-5", provider="anthropic", upstream_model="claude-haiku-4-5", max_output_tokens=64000
)
# bounded by the body's bytes (not OpenAI's: no second tiktoken encoding to load, ~0.5 s)
INSTRUCT = keys_pb2.ModelRoute(id="llama-3-8b-instruct", provider="together", upstream_model="meta-llama/Llama-3-8b")
EMBED = keys_pb2.ModelRoute(id="mistral-embed", provider="mistral", upstream_model="mistral-embed")
ROUTES = (GPT, CLAUDE, INSTRUCT, EMBED)
BILLING = keys_pb2.LedgerBilling(
    payer_account="key:key_1",
    customer_account="customer:cust_1",
    revenue_account="partnerrev:p_1",
    profit_multiplier="1.5",
    price_per_ai_credit_cents="1",
)


def rpc_error(code: grpc.StatusCode, details: str = "fake") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


# -- keys -------------------------------------------------------------------------------


class FakeKeys:
    """The keys service's ``AuthenticateKey``: one key, or a failure."""

    def __init__(self) -> None:
        self.secret = new_secret()
        self.key = keys_pb2.Key(id="key_1", partner_id="p_1", status=keys_pb2.KEY_STATUS_ACTIVE)
        self.billing = keys_pb2.LedgerBilling()
        self.billing.CopyFrom(BILLING)
        self.fail: grpc.StatusCode | None = None
        self.calls = 0

    async def AuthenticateKey(
        self, request: keys_pb2.AuthenticateKeyRequest, timeout: float | None = None
    ) -> keys_pb2.AuthenticateKeyResponse:
        self.calls += 1
        if self.fail is not None:
            raise rpc_error(self.fail)
        if request.key_hash != hash_secret(self.secret):
            raise rpc_error(grpc.StatusCode.NOT_FOUND)
        return keys_pb2.AuthenticateKeyResponse(key=self.key, models=ROUTES, billing=self.billing)


# -- ledger -----------------------------------------------------------------------------


@dataclass
class Reserved:
    request_id: str
    billing: keys_pb2.LedgerBilling
    model: str
    max_input: int
    max_output: int
    rate_limit: ledger_pb2.RateLimit | None


class FakeLedger:
    """``Ledger``: holds whatever is asked, or refuses as the real client does for a gRPC
    code (``refuse``); ``rate_limit`` is the window's state it answers."""

    async def release_lease(self, lease_id: str) -> None:
        pass

    def lease_of(self, request_id: str) -> None:
        return None  # it reserves every request on its own

    def __init__(self) -> None:
        self.reserved: list[Reserved] = []
        self.settled: list[tuple[str, Usage]] = []
        self.voided: list[tuple[str, str]] = []
        self.refuse: grpc.StatusCode | None = None
        self.rate_limit: ledger_pb2.RateLimitState | None = None

    async def reserve(
        self,
        request_id: str,
        billing: keys_pb2.LedgerBilling,
        route: keys_pb2.ModelRoute,
        max_input: int,
        max_output: int,
        rate_limit: ledger_pb2.RateLimit | None = None,
    ) -> ledger_pb2.ReserveResponse:
        self.reserved.append(Reserved(request_id, billing, route.id, max_input, max_output, rate_limit))
        if self.refuse is not None:
            raise refusal(self.refuse) or rpc_error(self.refuse)  # as LedgerClient.reserve does
        resp = ledger_pb2.ReserveResponse(request_id=request_id, held_ucr=1000)
        if self.rate_limit is not None:
            resp.rate_limit.CopyFrom(self.rate_limit)
        return resp

    async def settle(self, request_id: str, usage: Usage, lease=None, requested_at_ms=0) -> ledger_pb2.SettleResponse:
        self.settled.append((request_id, usage))
        return ledger_pb2.SettleResponse(request_id=request_id, charged_ucr=123, price_book_version="pb-1")

    async def void(self, request_id: str, reason: str) -> ledger_pb2.VoidResponse:
        self.voided.append((request_id, reason))
        return ledger_pb2.VoidResponse(request_id=request_id)


# -- upstreams ----------------------------------------------------------------------------


class FakeResponse:
    """``UpstreamResponse``: ``pieces`` as the provider sends them, ``delay_s`` apart; after
    ``fail_after`` pieces the connection breaks (a JSON reply: its read fails)."""

    def __init__(self, *pieces: bytes, fail_after: int | None = None, delay_s: float = 0.0, status: int = 200) -> None:
        self.pieces = pieces
        self.fail_after = fail_after
        self.delay_s = delay_s
        self.status = status
        self.content = self
        self.released = False

    async def iter_any(self) -> AsyncIterator[bytes]:
        for i, piece in enumerate(self.pieces):
            if i == self.fail_after:
                raise Disconnected("connection broke")
            await asyncio.sleep(self.delay_s)
            yield piece
        if self.fail_after is not None and self.fail_after >= len(self.pieces):
            raise Disconnected("connection broke")

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.iter_any()])

    def release(self) -> None:
        self.released = True


@dataclass
class Opened:
    path: str
    model: str
    body: dict[str, Any]
    stream: bool


class FakeUpstreams:
    """``UpstreamPool``: answers each ``open`` with the next of ``answers`` (a response, or
    an exception to raise); ``hang`` makes ``open`` wait for ever."""

    def __init__(self) -> None:
        self.answers: list[FakeResponse | BaseException] = []
        self.opened: list[Opened] = []
        self.hang = False
        self.started = self.closed = False

    def answer(self, *answers: FakeResponse | BaseException) -> None:
        self.answers.extend(answers)

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    async def open(self, path: str, route: keys_pb2.ModelRoute, body: dict[str, Any], *, stream: bool) -> FakeResponse:
        self.opened.append(Opened(path, route.id, body, stream))
        if self.hang:
            await asyncio.Event().wait()
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


# -- recorder and bus -------------------------------------------------------------------


class FakeRecorder:
    """``Recorder``: notes what is recorded and voided; runs tracked work as tasks."""

    def __init__(self) -> None:
        self.recorded: list[Finished] = []
        self.voided: list[tuple[str, str]] = []
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        pass

    def record(self, finished: Finished) -> None:
        self.recorded.append(finished)

    def void(self, request_id: str, reason: str) -> None:
        self.voided.append((request_id, reason))

    def track(self, work: Coroutine[Any, Any, None]) -> None:
        self.tasks.append(asyncio.create_task(work))

    async def drain(self, timeout_s: float) -> None:
        await asyncio.wait_for(asyncio.gather(*self.tasks), timeout_s)


class FakeBus:
    """``EventBus``: connected or not; what is published is kept."""

    def __init__(self) -> None:
        self.connected = True
        self.subscriptions: list[tuple[str, Handler]] = []
        self.published: list[tuple[str, bytes, str]] = []
        self.reconnect_callbacks: list[Callable[[], None]] = []

    def on(self, subject: str, handler: Handler) -> None:
        self.subscriptions.append((subject, handler))

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        self.reconnect_callbacks.append(callback)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def publish(self, subject: str, payload: bytes, msg_id: str, timeout_s: float) -> None:
        if not self.connected:
            raise ConnectionError("nats not connected")
        self.published.append((subject, payload, msg_id))


# -- the harness ------------------------------------------------------------------------


@dataclass
class Proxy:
    """The app with its fakes, and a client to call it with."""

    app: RequestContext
    client: httpx.AsyncClient
    keys: FakeKeys
    ledger: FakeLedger
    upstreams: FakeUpstreams
    recorder: Recorder
    bus: FakeBus
    settings: Settings
    headers: dict[str, str] = field(default_factory=dict)

    async def post(self, path: str, body: Any = None, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.client.post(path, json=body, headers=headers, **kwargs)

    @property
    def fake_recorder(self) -> FakeRecorder:
        assert isinstance(self.recorder, FakeRecorder)
        return self.recorder


@contextlib.asynccontextmanager
async def running(outbox: Path | None = None, **settings: Any) -> AsyncIterator[Proxy]:
    """The proxy app with fresh fakes, its lifespan entered (and left on the way out: the
    recorder drained). With ``outbox`` (a file path) the recorder is the real
    ``UsageRecorder``, over the fake ledger and bus, instead of ``FakeRecorder``."""
    keys, ledger, upstreams, bus = FakeKeys(), FakeLedger(), FakeUpstreams(), FakeBus()
    the_settings = Settings(**{"max_body_bytes": 64 * 1024, "body_read_timeout_s": 5.0, **settings})
    stored = Outbox(outbox) if outbox is not None else None
    the_recorder: Recorder = UsageRecorder(ledger, bus, stored) if stored is not None else FakeRecorder()
    app = create_app(
        the_settings,
        auth=KeyAuthenticator(keys, ttl_s=60, timeout_s=1),  # over the fake stub
        ledger=ledger,
        upstreams=upstreams,
        recorder=the_recorder,
        bus=bus,
    )
    try:
        async with app.app.router.lifespan_context(app.app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as client:
                yield Proxy(
                    app,
                    client,
                    keys,
                    ledger,
                    upstreams,
                    the_recorder,
                    bus,
                    the_settings,
                    {"Authorization": f"Bearer {keys.secret}"},
                )
    finally:
        if stored is not None:
            stored.close()


# -- a client that goes away -------------------------------------------------------------


@dataclass
class RawExchange:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)


async def raw_post(
    app: RequestContext,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    leave_after_chunks: int | None = None,
    cut_body: bool = False,
) -> RawExchange:
    """A POST driven through the ASGI interface by hand, for what httpx's transport cannot
    do: a client that disconnects after ``leave_after_chunks`` response chunks, or
    (``cut_body``) before its body is complete."""
    left = asyncio.Event()
    sent_body = False
    out = RawExchange()

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": cut_body}
        if not cut_body:
            await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out.status = message["status"]
            out.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body" and message.get("body"):
            out.chunks.append(message["body"])
            if leave_after_chunks is not None and len(out.chunks) >= leave_after_chunks:
                left.set()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("proxy", 80),
    }
    await app(scope, receive, send)
    return out


async def until(probe: Any, timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)
