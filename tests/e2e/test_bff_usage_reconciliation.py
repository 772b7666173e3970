"""Reconciliation, through the whole stack on SQLite and PostgreSQL: after real requests
through the proxy (the openai SDK), duplicated events and a BFF killed between its commit
and its acks, the usage read model's cost of every request equals what the ledger
posted for it (the key account's statement: ListTransfers, kind "post"), to the µcr, and
the customer's AI credits equal the customer account's posts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import ROUND_FLOOR, Decimal

from cg_bff.usage.consumer import DURABLE
from cg_devstack import Stack
from cglib import natsx, usage_batch
from helpers import client, eventually, ledger_posts, read_model
from support.bff_usage import consumer_drained, partner_with_billed_key

CENTS = "1.25"
# The BFFs started after the crash redeclare the usage consumer with this ack_wait (30 s by
# default), so the crashed one's unacknowledged events come back within seconds.
ACK_WAIT = {"CG_BFF_USAGE_ACK_WAIT_S": "3"}


def call(stack: Stack, secret: str, model: str, n: int, stream: bool = False) -> None:
    ai = client(stack, secret)
    for i in range(n):
        messages = [{"role": "user", "content": f"count to {i + 3}, please"}]
        if stream:
            chunks = ai.chat.completions.create(
                model=model, messages=messages, stream=True, stream_options={"include_usage": True}
            )
            for _ in chunks:
                pass
        else:
            ai.chat.completions.create(model=model, messages=messages)


async def _republish_without_dedup(url: str, subject: str) -> int:
    """Every stored message of ``subject`` published again (a proxy's batch as a batch),
    without Nats-Msg-Id: stored again, so the BFF's consumer gets each event a second time.
    Returns how many events that is."""
    nc = await natsx.connect(url, "test-duplicator")
    try:
        js = nc.jetstream()
        sub = await js.subscribe(subject, ordered_consumer=True)
        messages = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:
                break
            headers = {k: v for k, v in (msg.headers or {}).items() if k == usage_batch.HEADER}
            messages.append((msg.data, headers))
        await sub.unsubscribe()
        for data, headers in messages:
            await js.publish(subject, data, headers=headers or None)
        return sum(len(usage_batch.events_of(data, headers)) for data, headers in messages)
    finally:
        await nc.close()


async def _consumer_drained(url: str) -> bool:
    nc = await natsx.connect(url, "test-probe")
    try:
        return await consumer_drained(nc.jetstream())
    finally:
        await nc.close()


async def _ack_wait_s(url: str) -> float:
    nc = await natsx.connect(url, "test-probe")
    try:
        info = await nc.jetstream().consumer_info(natsx.USAGE_STREAM, DURABLE)
        return float(info.config.ack_wait or 0)
    finally:
        await nc.close()


def _if_len(d: dict, n: int) -> dict | None:
    return d if len(d) == n else None


def test_the_read_model_reconciles_with_the_ledger(stack: Stack) -> None:
    k = partner_with_billed_key(stack, "recon", cents=CENTS)
    owner, key_account = k.owner, f"key:{k.key_id}"

    # one call: in the request log and the series within 2 s, at the ledger's exact cost
    call(stack, k.secret, k.model, 1)
    done = time.monotonic()
    first = eventually(lambda: read_model(owner, k.key_id), timeout_s=2.0, what="the call in the request log")
    elapsed = time.monotonic() - done
    series = owner.ok("GET", "/partner/usage/series", params={"by": "key", "id": k.key_id})
    assert elapsed < 2.0 and sum(p["requests"] for p in series["points"]) == 1
    ((rid, row),) = first.items()
    posts = eventually(lambda: ledger_posts(stack, key_account), what="the settlement")
    assert posts == {rid: row["cost_ucr"]} and sum(p["cost_ucr"] for p in series["points"]) == row["cost_ucr"]

    call(stack, k.secret, k.model, 5)
    call(stack, k.secret, k.model, 3, stream=True)
    eventually(lambda: len(read_model(owner, k.key_id)) == 9, what="nine requests in the read model")

    # duplicates: every event of the key once more, as new stream messages
    assert asyncio.run(_republish_without_dedup(stack.nats_url, natsx.usage_subject(k.partner_id, k.key_id))) == 9

    try:
        # a BFF killed between its commit and its acks: the events it stored come back to it
        stack.stop_service("bff")
        call(stack, k.secret, k.model, 4)  # wait in the stream meanwhile
        stack.config.env["bff"] = {"CG_CRASH_AT": "usage:after_commit", **ACK_WAIT}
        with contextlib.suppress(RuntimeError):  # it may die before it is ready
            stack.start_service("bff")
        crashed = stack.procs["bff"]
        eventually(lambda: not crashed.running, what="the BFF to crash after its commit")
        assert crashed.popen is not None and crashed.popen.returncode == 137, crashed.tail()
        stack.config.env["bff"] = ACK_WAIT
        stack.start_service("bff")

        # the dead replica's unacknowledged events come back after the consumer's ack_wait
        eventually(
            lambda: asyncio.run(_consumer_drained(stack.nats_url)), timeout_s=60, what="every event acknowledged"
        )
        assert asyncio.run(_ack_wait_s(stack.nats_url)) == 3.0
    finally:  # the other modules sharing this stack get the BFF as configured by default
        stack.config.env["bff"] = {}
        stack.stop_service("bff")
        stack.start_service("bff")
    eventually(lambda: asyncio.run(_ack_wait_s(stack.nats_url)) == 30.0, what="the default ack_wait again")
    posts = eventually(lambda: _if_len(ledger_posts(stack, key_account), 13), what="13 settlements")
    rows = read_model(owner, k.key_id)
    assert len(rows) == 13
    assert {rid: r["cost_ucr"] for rid, r in rows.items()} == posts  # request by request, to the µcr
    total_ucr = sum(posts.values())

    day = owner.ok("GET", "/partner/usage/series", params={"by": "key", "id": k.key_id, "granularity": "day"})
    assert sum(p["cost_ucr"] for p in day["points"]) == total_ucr
    assert sum(p["requests"] for p in day["points"]) == 13

    # the customer's AI credits: the customer account's posts, and the revenue at 1.25 cents
    customer_posts = ledger_posts(stack, f"customer:{k.customer_id}")
    assert {rid: r["ai_credits_uai"] for rid, r in rows.items()} == customer_posts
    uai = sum(customer_posts.values())
    assert all(r["ai_credit_price_cents"] == CENTS for r in rows.values())
    profit = owner.ok("GET", "/partner/usage/profit", params={"by": "key"})
    (p,) = profit["rows"]
    revenue = int((Decimal(uai) * Decimal(CENTS)).to_integral_value(ROUND_FLOOR))
    assert (p["id"], p["requests"], p["ai_credits_uai"], p["cost_ucr"]) == (k.key_id, 13, uai, total_ucr)
    assert (p["revenue_ucr"], p["margin_ucr"]) == (revenue, revenue - total_ucr)
    owner.close()
