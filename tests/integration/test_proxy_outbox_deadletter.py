"""The proxy's outbox against a real JetStream: an entry refused for good (larger than
the server's max_payload, over a stream's max_msg_size, a subject no stream takes) goes
to the dead-letter table of the same file, counted, and the entries behind it are sent;
the bounded flush on shutdown sends what it can and leaves the rest."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

import pytest
from nats.js.api import StreamConfig

from cg_proxy import outbox as outbox_module
from cg_proxy.bus import Bus
from cg_proxy.outbox import Outbox
from cglib import natsx
from support.bff_usage import nats_server

PUBLISH_TIMEOUT_S = 2.0


@pytest.fixture
def nats_stack(tmp_path: Path):
    with nats_server(tmp_path / "nats-var") as stack:
        yield stack


async def connected_bus(url: str) -> Bus:
    bus = Bus(url)
    await bus.start()
    await asyncio.wait_for(bus.ready.wait(), timeout=10)
    # a stream whose messages may be 100 bytes at most: JetStream refuses more with a 400
    await bus.nc.jetstream().add_stream(StreamConfig(name="SMALL", subjects=["small.>"], max_msg_size=100))  # type: ignore[union-attr]
    return bus


def publisher(bus: Bus):
    async def publish(subject: str, payload: bytes, msg_id: str) -> None:
        await bus.publish(subject, payload, msg_id, PUBLISH_TIMEOUT_S)

    return publish


async def in_stream(bus: Bus, stream: str) -> list[str]:
    """The Nats-Msg-Id of every message of ``stream``, in order."""
    js = bus.nc.jetstream()  # type: ignore[union-attr]
    info = await js.stream_info(stream)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(stream, seq)
        ids.append((msg.headers or {}).get("Nats-Msg-Id"))
    return [i for i in ids if i is not None]


def table(path: Path, name: str) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute(f"SELECT request_id FROM {name} ORDER BY created_unix_ms, rowid")]


def dead_lettered(error: str) -> float:
    return outbox_module.DEAD_LETTERED.labels(error)._value.get()


async def until(probe, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_entries_refused_for_good_are_set_aside_and_the_rest_flow(nats_stack, tmp_path):
    bus = await connected_bus(nats_stack.nats_url)
    path = tmp_path / "outbox.sqlite3"
    outbox = Outbox(path)
    before = {e: dead_lettered(e) for e in ("MaxPayloadError", "BadRequestError", "NoStreamResponseError")}
    entries = [
        ("req-a", natsx.usage_subject("p", "k1"), b"a"),
        ("req-huge", natsx.usage_subject("p", "k2"), b"x" * (2 * 1024 * 1024)),  # over max_payload (1 MiB)
        ("req-b", natsx.usage_subject("p", "k3"), b"b"),
        ("req-wide", "small.p", b"y" * 1000),  # over the SMALL stream's max_msg_size
        ("req-lost", "nostream.p.k4", b"z"),  # no stream takes it
        ("req-c", natsx.usage_subject("p", "k5"), b"c"),
    ]
    for request_id, subject, payload in entries:
        await outbox.put(request_id, subject, payload)
        await asyncio.sleep(0.002)  # distinct creation times: a known order
    relay = asyncio.create_task(outbox.relay(publisher(bus), lambda: bus.connected, poll_s=0.01, max_backoff_s=0.05))
    try:

        async def emptied() -> bool:
            return outbox.depth == 0

        await until(emptied)
        assert await in_stream(bus, natsx.USAGE_STREAM) == ["req-a", "req-b", "req-c"], "nothing held back"
        assert table(path, "outbox") == []
        dead = await outbox.dead_letters()
        assert [d[0] for d in dead] == ["req-huge", "req-wide", "req-lost"]
        reasons = {d[0]: d[5] for d in dead}
        assert reasons["req-huge"].startswith("MaxPayloadError")
        assert reasons["req-wide"].startswith("BadRequestError: 400")
        assert reasons["req-lost"].startswith("NoStreamResponseError")
        by_id = {d[0]: d for d in dead}
        assert by_id["req-huge"][2] == b"x" * (2 * 1024 * 1024), "the event itself is kept"
        assert by_id["req-lost"][4] >= outbox_module.deadletter.NO_STREAM_ATTEMPTS, "no stream: a few tries first"
        assert by_id["req-huge"][4] == 1, "too large: set aside at once"
        assert outbox_module.DEAD._value.get() == 3
        for error in before:
            assert dead_lettered(error) == before[error] + 1
    finally:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
        outbox.close()
        await bus.close()
    # the dead letters are in the file: a reopen (the next run) counts them and does not send them
    again = Outbox(path)
    assert (again.depth, again.dead) == (0, 3)
    again.close()


async def test_the_shutdown_flush_sends_what_it_can_and_is_bounded(nats_stack, tmp_path):
    bus = await connected_bus(nats_stack.nats_url)
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    try:
        for request_id, payload in (("req-1", b"1"), ("req-big", b"x" * (2 * 1024 * 1024)), ("req-2", b"2")):
            await outbox.put(request_id, natsx.usage_subject("p", request_id), payload)
            await asyncio.sleep(0.002)
        assert await outbox.flush(publisher(bus), timeout_s=5) == 3
        assert await in_stream(bus, natsx.USAGE_STREAM) == ["req-1", "req-2"]
        assert (outbox.depth, [d[0] for d in await outbox.dead_letters()]) == (0, ["req-big"])

        # NATS gone: the flush gives up within its bound and keeps every entry
        await outbox.put("req-3", natsx.usage_subject("p", "k"), b"3")
        nats_stack.stop_service("nats")
        start = time.monotonic()
        assert await outbox.flush(publisher(bus), timeout_s=1.0) == 0
        assert time.monotonic() - start < 2.0
        assert outbox.depth == 1
    finally:
        outbox.close()
        with contextlib.suppress(ConnectionError):  # NATS may be gone under it
            await bus.close()
