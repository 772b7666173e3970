"""Partner balance changes on NATS: ``ledger.balance.<partner_id>`` (JetStream stream
LEDGER), published after a committed movement of a partner's balance so the worker
learns of deposits and spending without polling. Published in the background with
retries, never on the caller's path; the event is a trigger (the worker reads the
current balance), so a late or repeated one is harmless."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from nats.aio.client import Client

from cg_ledger.book import Book
from cglib import natsx
from cglib.retry import retrying
from creditgate.events.v1 import events_pb2

log = logging.getLogger(__name__)

# How long an event is retried before it is dropped (and logged as such): the worker's
# next event about the partner re-reads the balance anyway.
PUBLISH_GIVE_UP_S = 170.0


class BalanceEvents:
    def __init__(self, url: str) -> None:
        self.url = url
        self.nc: Client | None = None
        self.book: Book | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.url:
            self._spawn(self._connect())

    async def _connect(self) -> None:
        async def connect() -> Client:
            nc = await natsx.connect(self.url, "ledger")
            try:
                await natsx.ensure_ledger_stream(nc.jetstream())
            except BaseException:
                await nc.close()
                raise
            return nc

        self.nc = await retrying(connect, what="nats connect", first_delay_s=0.2)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def changed(self, accounts: Iterable[str]) -> None:
        """Called by the book after a commit; publishes for every partner account."""
        if not self.url:
            return
        for account in {a for a in accounts if a.startswith("partner:")}:
            self._spawn(self._publish(account))

    async def _publish(self, account: str) -> None:
        partner_id = account.split(":", 1)[1]

        async def publish() -> None:
            if self.nc is None or self.book is None:
                raise ConnectionError("not connected yet")
            b = await self.book.balance(account)
            event = events_pb2.BalanceChanged(
                account=account,
                partner_id=partner_id,
                posted_ucr=b.posted,
                available_ucr=b.available,
                time_unix_ms=int(time.time() * 1000),
            )
            await self.nc.jetstream().publish(natsx.balance_subject(partner_id), event.SerializeToString(), timeout=2)

        try:
            await retrying(
                publish,
                what="balance event publish",
                give_up_after_s=PUBLISH_GIVE_UP_S,
                first_delay_s=0.05,
                extra={"account": account},
            )
        except Exception as e:
            log.error("balance event dropped", extra={"account": account, "error": repr(e)})

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        for task in self._tasks:
            task.cancel()
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()
