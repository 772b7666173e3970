"""The usage read model's consumer against a real JetStream, on SQLite and PostgreSQL:
duplicates, redeliveries and a crash between commit and ack change nothing; replicas
split the work; NATS down and a busy database are waited out; bad events are dropped."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from cg_bff.app import MIGRATIONS
from cg_bff.models.usage import HOURLY, REQUESTS
from cg_bff.usage import consumer as consumer_module
from cg_bff.usage import ingest
from cg_bff.usage.consumer import UsageConsumer
from cglib import natsx, usage_batch
from cglib.db import make_engine, migrate
from creditgate.events.v1 import events_pb2 as epb
from support.bff_usage import consumer_drained, nats_server, publish, usage_event, wait_for

DAY_MS = 86_400_000


@pytest.fixture
def nats_stack(tmp_path: Path):
    with nats_server(tmp_path / "nats-var") as stack:
        yield stack


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator:
    e = make_engine(db_url)
    await migrate(e, MIGRATIONS)
    yield e
    await e.dispose()


@contextlib.asynccontextmanager
async def running(consumer: UsageConsumer) -> AsyncIterator[asyncio.Task]:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        yield task
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


async def totals(engine) -> dict[str, int]:
    """What the log and the aggregates hold, summed."""
    async with engine.connect() as conn:
        log = (
            await conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(REQUESTS.c.cost_ucr), 0),
                    func.coalesce(func.sum(REQUESTS.c.input_tokens + REQUESTS.c.output_tokens), 0),
                    func.coalesce(func.sum(REQUESTS.c.customer_charged_uai), 0),
                )
            )
        ).one()
        agg = (
            await conn.execute(
                select(
                    func.coalesce(func.sum(HOURLY.c.requests), 0),
                    func.coalesce(func.sum(HOURLY.c.cost_ucr), 0),
                    func.coalesce(func.sum(HOURLY.c.input_tokens + HOURLY.c.output_tokens), 0),
                    func.coalesce(func.sum(HOURLY.c.customer_charged_uai), 0),
                )
            )
        ).one()
    return {
        "rows": int(log[0]),
        "cost": int(log[1]),
        "tokens": int(log[2]),
        "uai": int(log[3]),
        "agg_requests": int(agg[0]),
        "agg_cost": int(agg[1]),
        "agg_tokens": int(agg[2]),
        "agg_uai": int(agg[3]),
    }


def expected(events: list[epb.UsageEvent]) -> dict[str, int]:
    unique = {e.request_id: e for e in events}.values()
    cost = sum(e.charged_ucr for e in unique)
    tokens = sum(e.input_tokens + e.output_tokens for e in unique)
    uai = sum(e.customer_charged_uai for e in unique)
    n = len(unique)
    return {
        "rows": n,
        "cost": cost,
        "tokens": tokens,
        "uai": uai,
        "agg_requests": n,
        "agg_cost": cost,
        "agg_tokens": tokens,
        "agg_uai": uai,
    }


def events(n: int, prefix: str = "r", partner_id: str = "p1") -> list[epb.UsageEvent]:
    now = int(time.time() * 1000)
    return [
        usage_event(
            f"{prefix}{i:04d}",
            partner_id,
            f"k{i % 3}",
            customer_id="c1" if i % 2 else "",
            customer_charged_uai=1_000 + i if i % 2 else 0,
            cents="1.5" if i % 2 else "",
            charged_ucr=10_000 + i * 7,
            input_tokens=100 + i,
            output_tokens=i,
            time_ms=now - i * 60_000,  # across hours
        )
        for i in range(n)
    ]


async def connect(stack) -> nats.aio.client.Client:
    nc = await natsx.connect(stack.nats_url, "test")
    await natsx.ensure_usage_stream(nc.jetstream())
    return nc


async def pending(nc, durable: str = consumer_module.DURABLE) -> tuple[int, int]:
    info = await nc.jetstream().consumer_info(natsx.USAGE_STREAM, durable)
    return info.num_pending, info.num_ack_pending


async def test_duplicates_change_nothing(nats_stack, engine) -> None:
    nc = await connect(nats_stack)
    try:
        batch = events(60)
        await publish(nc.jetstream(), batch)
        await publish(nc.jetstream(), batch[:20])  # JetStream's dedup window drops these
        await publish(nc.jetstream(), batch[10:40], dedup=False)  # stored again: real duplicates
        async with running(UsageConsumer(nc, engine, ack_wait_s=2)):
            await wait_for(lambda: _drained(nc), what="every event acknowledged")
            assert await totals(engine) == expected(batch)
            await publish(nc.jetstream(), batch, dedup=False)  # the whole lot once more
            await wait_for(lambda: _drained(nc), what="every event acknowledged")
            assert await totals(engine) == expected(batch)
    finally:
        await nc.close()


async def _drained(nc) -> bool:
    return await consumer_drained(nc.jetstream())


async def test_crash_between_commit_and_ack_changes_nothing(nats_stack, engine) -> None:
    batch = events(40)
    first = await connect(nats_stack)
    committed = asyncio.Event()

    async def crash(new_ids: list[str]) -> None:  # committed, never acknowledged
        committed.set()
        await asyncio.Event().wait()

    await publish(first.jetstream(), batch)
    task = asyncio.create_task(
        UsageConsumer(first, engine, ack_wait_s=1, batch=500, after_commit=crash).run(asyncio.Event())
    )
    await asyncio.wait_for(committed.wait(), timeout=20)
    task.cancel()  # the replica dies here
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await first.close()
    after_crash = await totals(engine)
    stored = after_crash["rows"]
    assert 0 < stored <= len(batch)  # the first batch is committed...
    assert after_crash["agg_requests"] == stored and after_crash["agg_cost"] == after_crash["cost"]

    second = await connect(nats_stack)
    try:
        assert sum(await pending(second)) == len(batch)  # ...and nothing is acknowledged
        async with running(UsageConsumer(second, engine, ack_wait_s=1)):
            await wait_for(lambda: _drained(second), timeout_s=20, what="the redeliveries acknowledged")
        assert await totals(engine) == expected(batch)  # the redelivered batch added nothing
    finally:
        await second.close()


async def test_replicas_share_the_durable_consumer(nats_stack, engine) -> None:
    nc1, nc2 = await connect(nats_stack), await connect(nats_stack)
    stored: dict[str, int] = {"a": 0, "b": 0}

    def counting(name: str):
        async def hook(new_ids: list[str]) -> None:
            stored[name] += len(new_ids)
            await asyncio.sleep(0.01)  # a little work per batch, so both replicas get some

        return hook

    batch = events(400, "s")
    try:
        async with (
            running(UsageConsumer(nc1, engine, batch=8, linger_s=0, after_commit=counting("a"))),
            running(UsageConsumer(nc2, engine, batch=8, linger_s=0, after_commit=counting("b"))),
        ):
            await asyncio.sleep(1.0)  # both bound to the durable consumer
            await publish(nc1.jetstream(), batch)
            await wait_for(lambda: _drained(nc1), timeout_s=60, what="every event acknowledged")
        assert await totals(engine) == expected(batch)
        assert stored["a"] + stored["b"] == len(batch)
        assert stored["a"] > 0 and stored["b"] > 0, stored
    finally:
        await nc1.close()
        await nc2.close()


async def test_nats_down_and_back(nats_stack, engine) -> None:
    nc = await connect(nats_stack)
    first, second = events(20, "a"), events(20, "b")
    try:
        async with running(UsageConsumer(nc, engine)) as task:
            await publish(nc.jetstream(), first)
            await wait_for(lambda: _count(engine, len(first)), what="the first events")
            nats_stack.stop_service("nats")
            await asyncio.sleep(2.0)  # fetches fail meanwhile; the consumer must not end
            assert not task.done()
            nats_stack.start_service("nats")
            await wait_for(lambda: nc.is_connected, timeout_s=20, what="the reconnection")
            await publish(nc.jetstream(), second)
            await wait_for(lambda: _count(engine, 40), timeout_s=30, what="the events after the restart")
        assert await totals(engine) == expected(first + second)
    finally:
        await nc.close()


async def _count(engine, n: int) -> bool:
    return (await totals(engine))["rows"] >= n


async def test_a_busy_database_is_waited_out(nats_stack, engine, db_url: str) -> None:
    nc = await connect(nats_stack)
    batch = events(30)
    try:
        async with running(UsageConsumer(nc, engine)):
            async with _held_lock(engine, db_url):
                await publish(nc.jetstream(), batch)
                await asyncio.sleep(2.0)
                assert (await _rows_direct(db_url)) == 0
            await wait_for(lambda: _drained(nc), timeout_s=30, what="every event acknowledged")
        assert await totals(engine) == expected(batch)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def _held_lock(engine, db_url: str) -> AsyncIterator[None]:
    """Another client holds the write lock (SQLite) or an exclusive table lock (PostgreSQL)."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.split(":///", 1)[1], isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    other = make_engine(db_url)
    try:
        async with other.connect() as conn:
            await conn.execute(text("LOCK TABLE usage_requests IN ACCESS EXCLUSIVE MODE"))
            yield
            await conn.rollback()
    finally:
        await other.dispose()


async def _rows_direct(db_url: str) -> int:
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.split(":///", 1)[1])
        try:
            return int(conn.execute("SELECT count(*) FROM usage_requests").fetchone()[0])
        finally:
            conn.close()
    return 0  # PostgreSQL: the locked table cannot be read either; the end state says it all


async def test_a_failing_database_gets_the_batch_back(nats_stack, engine, monkeypatch) -> None:
    real = ingest.store
    failures = {"left": 3}

    async def flaky(*args, **kwargs):
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return await real(*args, **kwargs)

    monkeypatch.setattr(ingest, "store", flaky)
    nc = await connect(nats_stack)
    batch = events(25)
    try:
        async with running(UsageConsumer(nc, engine)):
            await publish(nc.jetstream(), batch)
            await wait_for(lambda: _drained(nc), timeout_s=30, what="every event acknowledged")
        assert failures["left"] == 0
        assert await totals(engine) == expected(batch)
    finally:
        await nc.close()


async def test_bad_events_are_dropped_and_the_rest_stored(nats_stack, engine) -> None:
    nc = await connect(nats_stack)
    good = events(5)
    js = nc.jetstream()
    try:
        await js.publish("usage.p1.k1", b"\xff\xff not a protobuf")
        await js.publish("usage.p1.k1", usage_event("", "p1", "k1").SerializeToString())  # no request id
        # a subject of one partner carrying another partner's event: never stored under either
        await js.publish("usage.p2.k1", usage_event("forged", "p1", "k1").SerializeToString())
        await js.publish("usage.p1.k1", usage_event("x" * 121, "p1", "k1").SerializeToString())  # too long
        await publish(js, good)
        async with running(UsageConsumer(nc, engine)):
            await wait_for(lambda: _drained(nc), timeout_s=20, what="every event handled")
        assert await totals(engine) == expected(good)
    finally:
        await nc.close()


async def test_events_past_retention_are_not_stored(nats_stack, engine) -> None:
    nc = await connect(nats_stack)
    now = int(time.time() * 1000)
    old = usage_event("old", time_ms=now - 3 * DAY_MS)
    fresh = usage_event("fresh", time_ms=now)
    try:
        await publish(nc.jetstream(), [old, fresh])
        async with running(UsageConsumer(nc, engine, retention_days=2)):
            await wait_for(lambda: _drained(nc), what="both handled")
        assert await totals(engine) == expected([fresh])
    finally:
        await nc.close()


async def test_an_event_the_database_refuses_does_not_hold_back_the_others(nats_stack, engine, monkeypatch) -> None:
    real = ingest.store

    async def picky(engine_, rows, *args, **kwargs):  # a refusal that is not about availability
        if any(r["request_id"] == "r0003" for r in rows):
            raise ValueError("refused")
        return await real(engine_, rows, *args, **kwargs)

    monkeypatch.setattr(ingest, "store", picky)
    nc = await connect(nats_stack)
    batch = events(8)
    try:
        await publish(nc.jetstream(), batch)
        async with running(UsageConsumer(nc, engine)):
            await wait_for(lambda: _drained(nc), timeout_s=20, what="every event handled")
        assert await totals(engine) == expected([e for e in batch if e.request_id != "r0003"])
    finally:
        await nc.close()


async def test_a_proxys_batch_is_stored_event_by_event_and_its_bad_event_alone_is_dropped(nats_stack, engine) -> None:
    """A proxy under load publishes a key's events together (cglib.usage_batch): each is a
    row; a batch sent again changes nothing; an event that can never be stored (here: no
    request id) is dropped without the batch's others."""
    nc = await connect(nats_stack)
    good = [e for e in events(12) if e.key_id == "k1"]
    bad = usage_event("", "p1", "k1")
    payload = usage_batch.batch([e.SerializeToString() for e in [*good[:2], bad, *good[2:]]])
    headers = {usage_batch.HEADER: str(len(good) + 1)}
    js = nc.jetstream()
    try:
        await js.publish("usage.p1.k1", payload, headers=headers)
        await js.publish("usage.p1.k1", payload, headers=headers)  # sent again (no dedup id)
        await publish(js, good[:1], dedup=False)  # and one of them alone, as the outbox would
        async with running(UsageConsumer(nc, engine)):
            await wait_for(lambda: _drained(nc), timeout_s=20, what="every message handled")
        assert len(good) == 4 and await totals(engine) == expected(good)
    finally:
        await nc.close()
