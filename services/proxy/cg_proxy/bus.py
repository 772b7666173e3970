"""The proxy's NATS connection: made in the background (the proxy serves without it and
keeps retrying, with ``cglib.retry``), shared by usage publication and key-change
subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from cg_proxy.collaborators import Handler
from cglib import natsx, tracing
from cglib.retry import retrying

log = logging.getLogger(__name__)

# The first pause after a failed connection, doubling up to the longest.
CONNECT_FIRST_DELAY_S = 0.2
CONNECT_MAX_DELAY_S = 5.0


class Bus:
    def __init__(self, url: str) -> None:
        self.url = url
        self.nc: NatsClient | None = None
        self.ready = asyncio.Event()
        self._subscriptions: list[tuple[str, Handler]] = []
        self._on_reconnect: list[Callable[[], None]] = []
        self._task: asyncio.Task[None] | None = None

    def on(self, subject: str, handler: Handler) -> None:
        """Subscribes ``handler`` (given each message's payload) to ``subject`` once connected
        (call before ``start``)."""
        self._subscriptions.append((subject, handler))

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Called after each reconnection: what was published on the subscribed subjects
        while the connection was down never arrives (they are plain subscriptions)."""
        self._on_reconnect.append(callback)

    async def _reconnected(self) -> None:
        for callback in self._on_reconnect:
            callback()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        # until it works: the proxy serves meanwhile, its usage events waiting in the outbox
        self.nc = await retrying(
            self._connect_once,
            what="nats connect",
            first_delay_s=CONNECT_FIRST_DELAY_S,
            max_delay_s=CONNECT_MAX_DELAY_S,
        )
        self.ready.set()

    async def _connect_once(self) -> NatsClient:
        nc = await natsx.connect(self.url, "proxy", reconnected=self._reconnected)
        try:
            js = nc.jetstream()
            await natsx.ensure_usage_stream(js)
            await natsx.ensure_keys_stream(js)
            for subject, handler in self._subscriptions:
                await nc.subscribe(subject, cb=_payload_to(handler))
        except Exception:
            with contextlib.suppress(Exception):  # the next attempt makes a new connection
                await nc.close()
            raise
        return nc

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def publish(
        self, subject: str, payload: bytes, msg_id: str, timeout_s: float, headers: Mapping[str, str] | None = None
    ) -> None:
        nc = self.nc
        if nc is None:
            raise ConnectionError("nats not connected")
        headers = {**(headers or {}), "Nats-Msg-Id": msg_id}
        if tracing.ENABLED:  # the request's trace continues in the consumers (traceparent)
            tracing.inject(headers)
        await nc.jetstream().publish(subject, payload, timeout=timeout_s, headers=headers)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.nc is not None and not self.nc.is_closed:
            # drain() refuses a connection that is reconnecting (NATS down): just close it
            await (self.nc.drain() if self.nc.is_connected else self.nc.close())


def _payload_to(handler: Handler) -> Callable[[Msg], Awaitable[None]]:
    """The subscription callback nats calls with each message: its payload to ``handler``."""

    async def deliver(msg: Msg) -> None:
        await handler(msg.data)

    return deliver
