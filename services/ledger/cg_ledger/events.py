"""Partner balance changes on NATS: ``ledger.balance.<partner_id>`` (JetStream stream
LEDGER), published after a committed movement of a partner's balance so the worker
learns of deposits and spending without polling. Published in the background with
retries, never on the caller's path; the event is a trigger (the worker reads the
current balance), so a late or repeated one is harmless."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from cg_ledger.book import Book
from cglib import natsx
from creditgate.events.v1 import events_pb2

log = logging.getLogger(__name__)


class BalanceEvents:
    def __init__(self, url: str) -> None:
        self.url = url
        self.nc = None
        self.book: Book | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        if self.url:
            self._spawn(self._connect())

    async def _connect(self) -> None:
        delay = 0.2
        while True:
            try:
                nc = await natsx.connect(self.url, "ledger")
                await natsx.ensure_ledger_stream(nc.jetstream())
                self.nc = nc
                return
            except Exception as e:
                log.warning("nats not reachable yet", extra={"error": repr(e)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _spawn(self, coro) -> None:
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
        delay = 0.05
        for _ in range(40):
            try:
                if self.nc is None:
                    raise ConnectionError("not connected yet")
                b = await self.book.balance(account)
                partner_id = account.split(":", 1)[1]
                event = events_pb2.BalanceChanged(
                    account=account,
                    partner_id=partner_id,
                    posted_ucr=b.posted,
                    available_ucr=b.available,
                    time_unix_ms=int(time.time() * 1000),
                )
                await self.nc.jetstream().publish(
                    natsx.balance_subject(partner_id), event.SerializeToString(), timeout=2
                )
                return
            except Exception as e:
                log.warning("balance event not published yet", extra={"account": account, "error": repr(e)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        log.error("balance event dropped", extra={"account": account})

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        for task in self._tasks:
            task.cancel()
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()
