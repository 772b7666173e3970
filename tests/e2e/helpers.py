from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import ROUND_CEILING, Decimal
from typing import TypeVar

import grpc
import nats
import openai

from cg_devstack import Stack
from cg_devstack.bff import BffClient
from cg_keys.catalog import load_catalog
from cg_keys.settings import Settings as KeysSettings
from cglib import natsx, usage_batch
from creditgate.events.v1 import events_pb2
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc

T = TypeVar("T")
CATALOG = load_catalog(KeysSettings().catalog_path)


def client(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key, max_retries=0, timeout=10)


def expected_cost_ucr(model: str, prompt_tokens: int, completion_tokens: int) -> int:
    """Written independently of cglib.pricing: USD/1M tokens -> ucr is x100, rounded up."""
    m = CATALOG.get(model)
    exact = (prompt_tokens * m.input_usd_per_mtok + completion_tokens * m.output_usd_per_mtok) * 100
    return int(Decimal(exact).to_integral_value(ROUND_CEILING))


def eventually(probe: Callable[[], T], timeout_s: float = 20, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s}s")
        time.sleep(0.05)


def quiet_balance(seeder, account: str) -> int:
    """The posted balance once nothing is pending: a settlement of an earlier request may
    still be on its way (or retrying) and must not be counted."""
    from creditgate.ledger.v1 import ledger_pb2

    def settled():
        b = seeder.ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=account), timeout=5)
        return b if b.pending_ucr == 0 else None

    return eventually(settled, what="no reservation pending").posted_ucr


def usage_messages(stack: Stack, subject: str) -> list[tuple[bytes, dict[str, str]]]:
    """Every message on ``subject`` in the USAGE stream, as (payload, headers), read by
    sequence (no consumer)."""

    async def read() -> list[tuple[bytes, dict[str, str]]]:
        nc = await nats.connect(stack.nats_url)
        try:
            js = nc.jetstream()
            state = (await js.stream_info(natsx.USAGE_STREAM)).state
            found = []
            for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
                msg = await js.get_msg(natsx.USAGE_STREAM, seq)
                if msg.subject == subject:
                    found.append((msg.data, dict(msg.headers or {})))
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def usage_events(stack: Stack, subject: str) -> list[events_pb2.UsageEvent]:
    """Every usage event on ``subject`` (``usage_messages``), decoded: a message holds one,
    or a proxy's batch of them (``cglib.usage_batch``)."""
    return [e for data, headers in usage_messages(stack, subject) for e in usage_batch.events_of(data, headers)]


def ledger_statement(stack: Stack, account: str) -> list[ledger_pb2.LedgerTransfer]:
    """Every transfer of ``account``, all pages."""
    transfers: list[ledger_pb2.LedgerTransfer] = []
    with grpc.insecure_channel(stack.ledger_addr) as channel:
        ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
        token = ""
        while True:
            page = ledger.ListTransfers(
                ledger_pb2.ListTransfersRequest(account=account, page_size=500, page_token=token), timeout=5
            )
            transfers.extend(page.transfers)
            if not (token := page.next_page_token):
                return transfers


def ledger_posts(stack: Stack, account: str) -> dict[str, int]:
    """request id -> amount, of the posts that debited ``account`` (its statement); a
    request posted twice fails here."""
    posts: dict[str, int] = {}
    for t in ledger_statement(stack, account):
        if t.kind == "post" and t.debit_account == account:
            assert t.request_id not in posts, f"two posts for {t.request_id}"
            posts[t.request_id] = t.amount
    return posts


def read_model(owner: BffClient, key_id: str) -> dict[str, dict]:
    """request id -> row, every page of the request log for the key."""
    rows: dict[str, dict] = {}
    cursor = None
    while True:
        params = {"key_id": key_id, "limit": 200, **({"cursor": cursor} if cursor else {})}
        page = owner.ok("GET", "/partner/usage/requests", params=params)
        for r in page["data"]:
            assert r["request_id"] not in rows
            rows[r["request_id"]] = r
        if not (cursor := page["next_cursor"]):
            return rows
