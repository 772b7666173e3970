"""Live updates: a tenant's own usage, balance and key changes, from NATS to the browser
as server-sent events.

Each connection makes its own *core* NATS subscriptions (not JetStream: nothing is
stored or acknowledged for a browser), on subjects that carry the principal's partner
id, so nothing of another partner ever reaches it:

| principal | subjects | sent as |
|---|---|---|
| partner | ``usage.<partner>.>``, ``ledger.balance.<partner>``, ``keys.<partner>.>`` | ``usage``, ``balance``, ``key`` |
| customer | ``usage.<partner>.>`` (only events billed to it), ``keys.<partner>.>`` (only keys it may see, asked of keys) | ``usage``, ``key`` |

A customer never gets its partner's balance nor the provider cost of a request. Events
are JSON (``LiveUsage``, ``LiveBalance``, ``LiveKey``); there is no replay: a client
that reconnects reloads what it shows from the REST API.

The stream ends cleanly (the subscriptions are removed, the response is finished)
when the client disconnects, when the BFF shuts down (``LiveHub.close``, which the
usage_live job calls on SIGTERM/SIGINT, before uvicorn starts waiting for open
responses, and at the app's shutdown), and when the client is too slow: events wait
in a bounded per-connection queue (``queue_max``), and a connection whose queue
overflows, or whose write does not complete within ``send_timeout_s``, is dropped (the
browser's EventSource reconnects). A comment line every ``heartbeat_s`` keeps proxies
from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from google.protobuf.message import DecodeError
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter, Gauge
from pydantic import BaseModel
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from cg_bff import errors
from cg_bff.principal import Principal
from cg_bff.state import BffState
from cg_bff.usage.ingest import OUTCOMES, SOURCES, UNKNOWN
from cglib import usage_batch
from creditgate.events.v1 import events_pb2 as epb
from creditgate.keys.v1 import keys_pb2 as kpb

log = logging.getLogger(__name__)

CONNECTIONS = Gauge("cg_bff_live_connections", "Open live-update streams")
DROPPED = Counter("cg_bff_live_dropped_total", "Live-update streams dropped", ["why"])
KEY_VISIBILITY_TTL_S = 30.0
_UNSAFE_TOKEN = set(".*> \t\r\n")
_KEY_STATUS = {
    kpb.KEY_STATUS_ACTIVE: "active",
    kpb.KEY_STATUS_SUSPENDED: "suspended",
    kpb.KEY_STATUS_EXHAUSTED: "exhausted",
    kpb.KEY_STATUS_EXPIRED: "expired",
    kpb.KEY_STATUS_REVOKED: "revoked",
}
KeyVisible = Callable[[str], Awaitable[bool]]


class LiveUsage(BaseModel):
    request_id: str
    key_id: str
    customer_id: str | None
    model: str
    input_tokens: int
    output_tokens: int
    cost_ucr: int | None  # partners only
    ai_credits_uai: int
    outcome: str
    source: str
    latency_ms: int
    stream: bool
    time_ms: int


class LiveBalance(BaseModel):
    account: str
    posted_ucr: int
    available_ucr: int
    time_ms: int


class LiveKey(BaseModel):
    key_id: str
    status: str
    change: str
    time_ms: int


def sse(event: str, data: BaseModel) -> bytes:
    body = json.dumps(data.model_dump(exclude_none=True), separators=(",", ":"))
    return f"event: {event}\ndata: {body}\n\n".encode()


def subjects(principal: Principal) -> list[str]:
    partner = principal.partner_id or ""
    if not partner or _UNSAFE_TOKEN & set(partner):  # never a wildcard, never another subject
        raise errors.forbidden("Live updates are for a partner's or a customer's users.")
    if principal.kind == "partner":
        return [f"usage.{partner}.>", f"ledger.balance.{partner}", f"keys.{partner}.>"]
    if principal.kind == "customer" and principal.customer_id:
        return [f"usage.{partner}.>", f"keys.{partner}.>"]
    raise errors.forbidden("Live updates are for a partner's or a customer's users.")


class LiveHub:
    """The open streams of this BFF process, so that a shutdown can end them all."""

    def __init__(self, queue_max: int = 1000, heartbeat_s: float = 15.0, send_timeout_s: float = 10.0) -> None:
        self.queue_max = queue_max
        self.heartbeat_s = heartbeat_s
        self.send_timeout_s = send_timeout_s
        self.closing = False
        self.connections: set[Connection] = set()

    def close(self) -> None:
        """Ends every stream (and refuses new ones): the app is shutting down."""
        self.closing = True
        for conn in list(self.connections):
            conn.wake()


HUB = "live"  # its name in BffState.extras


def hub_of(state: BffState) -> LiveHub:
    """The app's hub, made on first use (by the usage_live job or the first stream)."""
    hub = state.extras.get(HUB)
    if not isinstance(hub, LiveHub):
        hub = state.extras[HUB] = LiveHub()
    return hub


class Connection:
    def __init__(self, hub: LiveHub, nc: Client, principal: Principal, key_visible: KeyVisible) -> None:
        self.hub = hub
        self.nc = nc
        self.principal = principal
        self.key_visible = key_visible
        self.queue: asyncio.Queue[Msg | None] = asyncio.Queue(maxsize=hub.queue_max)
        self.overflowed = False
        self.disconnected = False
        self.subs: list[Subscription] = []
        self._visible: dict[str, tuple[bool, float]] = {}

    async def open(self) -> None:
        for subject in subjects(self.principal):
            self.subs.append(await self.nc.subscribe(subject, cb=self._on_msg))
        self.hub.connections.add(self)
        CONNECTIONS.inc()

    async def close(self) -> None:
        if self in self.hub.connections:
            self.hub.connections.discard(self)
            CONNECTIONS.dec()
        subs, self.subs = self.subs, []
        for sub in subs:
            with contextlib.suppress(Exception):  # the connection may be closing already
                await sub.unsubscribe()

    def wake(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a full queue is being read anyway
            self.queue.put_nowait(None)

    async def _on_msg(self, msg: Msg) -> None:
        if self.overflowed:
            return
        # a customer's usage is filtered here, so that others' usage never fills its queue
        if self.principal.kind == "customer" and msg.subject.startswith("usage.") and not self._customers_usage(msg):
            return
        try:
            self.queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.overflowed = True

    def _customers_usage(self, msg: Msg) -> bool:
        try:
            events = usage_batch.events_of(msg.data, msg.headers)
        except DecodeError:
            return False
        return any(u.customer_id == self.principal.customer_id for u in events)

    @property
    def ended(self) -> bool:
        return self.hub.closing or self.overflowed or self.disconnected

    async def frames(self) -> AsyncIterator[bytes]:
        """The stream's bytes: a first comment, then events and heartbeats, until it ends."""
        yield b"retry: 3000\n: connected\n\n"
        while not self.ended:
            try:
                msg = await asyncio.wait_for(self.queue.get(), timeout=self.hub.heartbeat_s)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if msg is None or self.ended:
                continue
            try:
                frame = await self.render(msg)
            except Exception:  # one bad event must not end the stream
                log.warning("live event not rendered", extra={"subject": msg.subject}, exc_info=True)
                continue
            if frame is not None:
                yield frame
        if self.overflowed:
            DROPPED.labels("overflow").inc()

    async def render(self, msg: Msg) -> bytes | None:
        """The SSE frame of a message, or None when this principal may not see it."""
        partner = self.principal.partner_id
        is_partner = self.principal.kind == "partner"
        if msg.subject.startswith("usage."):  # one event, or a proxy's batch of a key's events
            frames = [
                sse("usage", _usage(u, is_partner))
                for u in usage_batch.events_of(msg.data, msg.headers)
                if u.partner_id == partner and (is_partner or u.customer_id == self.principal.customer_id)
            ]
            return b"".join(frames) or None
        if msg.subject.startswith("ledger.balance."):
            b = epb.BalanceChanged.FromString(msg.data)
            if not is_partner or b.partner_id != partner:
                return None
            balance = LiveBalance(
                account=b.account, posted_ucr=b.posted_ucr, available_ucr=b.available_ucr, time_ms=b.time_unix_ms
            )
            return sse("balance", balance)
        if msg.subject.startswith("keys."):
            k = epb.KeyChanged.FromString(msg.data)
            if k.partner_id != partner or not (is_partner or await self._key_visible(k.key_id, k.change)):
                return None
            change = epb.KeyChange.Name(k.change).removeprefix("KEY_CHANGE_").lower()
            return sse("key", LiveKey(key_id=k.key_id, status=k.status, change=change, time_ms=k.time_unix_ms))
        return None

    async def _key_visible(self, key_id: str, change: int) -> bool:
        """Whether the customer may see the key (keys decides; cached a little while,
        asked again after an update, which may change who the key bills)."""
        now = time.monotonic()
        cached = self._visible.get(key_id)
        if cached is not None and cached[1] > now and change != epb.KEY_CHANGE_UPDATED:
            return cached[0]
        try:
            visible = await self.key_visible(key_id)
        except Exception:  # keys unavailable: not shown (never shown by mistake)
            return False
        self._visible[key_id] = (visible, now + KEY_VISIBILITY_TTL_S)
        return visible


def _usage(u: epb.UsageEvent, for_partner: bool) -> LiveUsage:
    return LiveUsage(
        request_id=u.request_id,
        key_id=u.key_id,
        customer_id=u.customer_id or None,
        model=u.model,
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cost_ucr=u.charged_ucr if for_partner else None,
        ai_credits_uai=u.customer_charged_uai,
        outcome=OUTCOMES.get(u.outcome, UNKNOWN),
        source=SOURCES.get(u.source, UNKNOWN),
        latency_ms=u.latency_ms,
        stream=u.stream,
        time_ms=u.time_unix_ms,
    )


class EventStream(Response):
    """``text/event-stream`` of one ``Connection``: it subscribes when the response
    starts and unsubscribes however the response ends."""

    media_type = "text/event-stream"

    def __init__(self, conn: Connection, status_code: int = 200) -> None:
        # as StreamingResponse does: no body, so no Content-Length
        self.status_code = status_code
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.conn = conn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn, timeout = self.conn, self.conn.hub.send_timeout_s
        try:
            await conn.open()
        except Exception:
            await conn.close()
            await errors.unavailable("live updates").response()(scope, receive, send)
            return

        async def until_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            conn.disconnected = True
            conn.wake()

        listener = asyncio.create_task(until_disconnect())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in conn.frames():
                try:
                    await asyncio.wait_for(
                        send({"type": "http.response.body", "body": chunk, "more_body": True}), timeout
                    )
                except TimeoutError:  # the client does not read: drop it, keep nothing for it
                    DROPPED.labels("slow").inc()
                    log.info("live stream dropped: the client is too slow")
                    return
            if not conn.disconnected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(send({"type": "http.response.body", "body": b""}), timeout)
        finally:
            listener.cancel()
            await conn.close()
