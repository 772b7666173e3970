"""The proxy's NATS connection: made in the background (the proxy serves without it and
keeps retrying), shared by usage publication and key-change subscriptions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from cglib import natsx

log = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]


class Bus:
    def __init__(self, url: str) -> None:
        self.url = url
        self.nc: NatsClient | None = None
        self.ready = asyncio.Event()
        self._subscriptions: list[tuple[str, Handler]] = []
        self._task: asyncio.Task | None = None

    def on(self, subject: str, handler: Handler) -> None:
        """Subscribes ``handler`` to ``subject`` once connected (call before ``start``)."""
        self._subscriptions.append((subject, handler))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            try:
                nc = await natsx.connect(self.url, "proxy")
                js = nc.jetstream()
                await natsx.ensure_usage_stream(js)
                await natsx.ensure_keys_stream(js)
                for subject, handler in self._subscriptions:
                    await nc.subscribe(subject, cb=handler)
                self.nc = nc
                self.ready.set()
                return
            except Exception as e:
                log.warning("nats not reachable yet", extra={"error": repr(e)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.nc is not None and not self.nc.is_closed:
            # drain() refuses a connection that is reconnecting (NATS down): just close it
            await (self.nc.drain() if self.nc.is_connected else self.nc.close())
