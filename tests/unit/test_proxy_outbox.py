"""The proxy's usage-event outbox on a real SQLite file, and how the recorder uses it:
oldest first, deleted only after an ack, kept across a reopen, and the healthy path
never touching the file."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from cg_proxy import usage_recorder
from cg_proxy.collaborators import Finished
from cg_proxy.outbox import Outbox
from cg_proxy.token_usage import Usage
from cg_proxy.usage_recorder import UsageRecorder
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2


class Publisher:
    """Records publications; fails the listed message ids once each; may hang."""

    def __init__(self, fail_once: tuple[str, ...] = (), hang: bool = False) -> None:
        self.sent: list[tuple[str, bytes, str]] = []
        self.fail_once = set(fail_once)
        self.hang = hang
        self.connected = True

    async def __call__(self, subject: str, payload: bytes, msg_id: str) -> None:
        if self.hang:
            await asyncio.Event().wait()
        if msg_id in self.fail_once:
            self.fail_once.discard(msg_id)
            raise TimeoutError("nats: timeout")
        self.sent.append((subject, payload, msg_id))


def rows(path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT request_id, attempts FROM outbox ORDER BY created_unix_ms, rowid").fetchall()


async def until(probe, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def fill(outbox: Outbox, ids: list[str]) -> None:
    for i in ids:
        await outbox.put(i, f"usage.p.{i}", i.encode())
        await asyncio.sleep(0.002)  # distinct creation times


async def test_put_is_idempotent_and_entries_come_oldest_first(tmp_path):
    outbox = Outbox(tmp_path / "o.sqlite3")
    await fill(outbox, ["c", "a", "b"])
    await outbox.put("a", "usage.p.other", b"again")  # same request id: ignored
    assert outbox.depth == 3
    assert [(e.request_id, e.subject, e.payload) for e in await outbox.oldest()] == [
        ("c", "usage.p.c", b"c"),
        ("a", "usage.p.a", b"a"),
        ("b", "usage.p.b", b"b"),
    ]
    assert [e.request_id for e in await outbox.oldest(limit=2)] == ["c", "a"]
    outbox.close()


async def test_the_relay_sends_oldest_first_and_deletes_only_after_the_ack(tmp_path):
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path)
    await fill(outbox, ["r1", "r2", "r3"])
    publish = Publisher(fail_once=("r2",))
    relay = asyncio.create_task(outbox.relay(publish, lambda: publish.connected, poll_s=0.01))
    try:
        await until(lambda: outbox.depth == 0)
        # r2 failed once: r1 went out, r2 was retried before r3 was tried
        assert [m for _, _, m in publish.sent] == ["r1", "r2", "r3"]
        assert publish.sent[0] == ("usage.p.r1", b"r1", "r1")
        assert rows(path) == []
        await outbox.put("r4", "usage.p.r4", b"r4")  # a new entry wakes the idle relay
        await until(lambda: outbox.depth == 0)
        assert publish.sent[-1][2] == "r4"
    finally:
        relay.cancel()
        outbox.close()


async def test_a_failed_publish_keeps_the_entry_and_counts_the_attempt(tmp_path):
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path)
    await fill(outbox, ["r1"])
    publish = Publisher(fail_once=("r1",))
    relay = asyncio.create_task(outbox.relay(publish, lambda: True, poll_s=0.5))
    try:
        await until(lambda: rows(path) == [("r1", 1)])  # seen during the 0.5 s backoff
        assert publish.sent == [] and outbox.depth == 1
        await until(lambda: outbox.depth == 0)  # the retry after it
        assert [m for _, _, m in publish.sent] == ["r1"]
    finally:
        relay.cancel()
        outbox.close()


async def test_nothing_is_sent_while_disconnected_nor_deleted_without_an_ack(tmp_path):
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path)
    await fill(outbox, ["r1", "r2"])
    publish = Publisher()
    publish.connected = False
    relay = asyncio.create_task(outbox.relay(publish, lambda: publish.connected, poll_s=0.01))
    await asyncio.sleep(0.1)
    assert publish.sent == [] and outbox.depth == 2
    publish.hang = True  # connected, but the ack never comes
    publish.connected = True
    await asyncio.sleep(0.1)
    relay.cancel()
    await asyncio.gather(relay, return_exceptions=True)
    assert [r for r, _ in rows(path)] == ["r1", "r2"] and outbox.depth == 2
    outbox.close()


async def test_entries_survive_a_reopen_and_are_relayed_by_the_next_run(tmp_path):
    path = tmp_path / "sub" / "o.sqlite3"  # the parent directory is created
    first = Outbox(path)
    await fill(first, ["r1", "r2"])
    first.close()
    second = Outbox(path)
    assert second.depth == 2
    publish = Publisher()
    relay = asyncio.create_task(second.relay(publish, lambda: True, poll_s=0.01))
    try:
        await until(lambda: second.depth == 0)
        assert [m for _, _, m in publish.sent] == ["r1", "r2"]
    finally:
        relay.cancel()
        second.close()
    assert rows(path) == []


# -- the recorder: publish first, the outbox only when that fails ------------------------


class FakeBus:
    """The recorder's side of ``EventBus``: publish and connected."""

    def __init__(self, publish: Publisher) -> None:
        self._publish = publish

    async def publish(self, subject: str, payload: bytes, msg_id: str, timeout_s: float) -> None:
        await self._publish(subject, payload, msg_id)

    @property
    def connected(self) -> bool:
        return self._publish.connected


class FakeLedger:
    async def release_lease(self, lease_id: str) -> None:
        pass

    def lease_of(self, request_id: str) -> None:
        return None

    async def settle(self, request_id: str, usage: Usage, lease=None, requested_at_ms=0) -> ledger_pb2.SettleResponse:
        return ledger_pb2.SettleResponse(request_id=request_id, charged_ucr=42, price_book_version="v1")


def finished(request_id: str) -> Finished:
    key = keys_pb2.Key(id="key1", partner_id="p1")
    usage = Usage(3, 4, ledger_pb2.USAGE_SOURCE_PROVIDER)
    return Finished(
        request_id, key, "cust1", "gpt-4o-mini", usage, events_pb2.USAGE_OUTCOME_OK, time.perf_counter(), False
    )


@pytest.mark.parametrize("case", ["healthy", "disconnected", "publish_fails", "hangs_at_shutdown"])
async def test_the_recorder_uses_the_outbox_only_when_publishing_fails(tmp_path, case, monkeypatch):
    monkeypatch.setattr(usage_recorder, "OUTBOX_FLUSH_S", 0.2)  # the bound of the flush at shutdown
    path = tmp_path / "o.sqlite3"
    outbox = Outbox(path)
    publish = Publisher(fail_once=("req1",) if case == "publish_fails" else (), hang=case == "hangs_at_shutdown")
    publish.connected = case != "disconnected"
    recorder = UsageRecorder(FakeLedger(), FakeBus(publish), outbox)
    recorder.record(finished("req1"))
    await recorder.drain(0.2)  # a hanging publish is cancelled, and its event stored
    if case == "healthy":
        assert [(s, m) for s, _, m in publish.sent] == [("usage.p1.key1", "req1")]
        event = events_pb2.UsageEvent.FromString(publish.sent[0][1])
        assert (event.charged_ucr, event.customer_id, event.price_book_version) == (42, "cust1", "v1")
        assert (event.outcome, event.source) == (events_pb2.USAGE_OUTCOME_OK, ledger_pb2.USAGE_SOURCE_PROVIDER)
        assert rows(path) == []
    elif case == "publish_fails":
        # the failed publish put it in the outbox; the flush at shutdown (connected) sent it
        assert [m for _, _, m in publish.sent] == ["req1"] and rows(path) == []
    else:
        assert publish.sent == [] and rows(path) == [("req1", 0)]
        entry = (await outbox.oldest())[0]
        event = events_pb2.UsageEvent.FromString(entry.payload)
        assert (entry.subject, event.request_id, event.charged_ucr) == ("usage.p1.key1", "req1", 42)
    outbox.close()
