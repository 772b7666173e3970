"""The proxy's usage events in batches (cg_proxy.event_batches): alone when nothing else
comes, together when they come within the linger or while JetStream acknowledges the last,
each caller told its own event's fate. Most tests here set no linger, to see the batching
by acknowledgement alone."""

from __future__ import annotations

import asyncio

import pytest

from cg_proxy.event_batches import EventBatcher
from cglib import usage_batch
from creditgate.events.v1 import events_pb2

SUBJECT = "usage.p1.k1"


class GatedBus:
    """Publishes when the test opens the gate; records (subject, payload, msg_id, headers)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, str, dict[str, str]]] = []
        self.gate = asyncio.Event()
        self.fail_next: Exception | None = None
        self.started = 0

    async def publish(self, subject, payload, msg_id, timeout_s, headers=None) -> None:
        self.started += 1
        await self.gate.wait()
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.sent.append((subject, payload, msg_id, dict(headers or {})))


def event(i: int) -> bytes:
    return events_pb2.UsageEvent(request_id=f"req_{i}", key_id="k1", partner_id="p1", charged_ucr=i).SerializeToString()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_lone_event_goes_out_at_once_as_itself():
    bus = GatedBus()
    bus.gate.set()
    await EventBatcher(bus, 2.0, linger_s=0).publish(SUBJECT, event(1), "req_1")
    assert bus.sent == [(SUBJECT, event(1), "req_1", {})]


async def test_events_that_come_during_a_publication_go_in_the_next_as_one_batch():
    bus = GatedBus()
    batcher = EventBatcher(bus, 2.0, linger_s=0)
    first = asyncio.create_task(batcher.publish(SUBJECT, event(0), "req_0"))
    await settle()
    rest = [asyncio.create_task(batcher.publish(SUBJECT, event(i), f"req_{i}")) for i in range(1, 6)]
    await settle()
    assert bus.started == 1  # the others wait for the first's acknowledgement
    bus.gate.set()
    await asyncio.gather(first, *rest)
    assert [(s, m) for s, _, m, _ in bus.sent] == [(SUBJECT, "req_0"), (SUBJECT, "batch:req_1:5")]
    _, payload, _, headers = bus.sent[1]
    assert headers == {usage_batch.HEADER: "5"}
    got = usage_batch.events_of(payload, headers)
    assert [e.request_id for e in got] == [f"req_{i}" for i in range(1, 6)]  # in order
    assert [e.charged_ucr for e in got] == [1, 2, 3, 4, 5]


async def test_subjects_are_batched_apart():
    bus = GatedBus()
    batcher = EventBatcher(bus, 2.0, linger_s=0)
    tasks = [asyncio.create_task(batcher.publish(f"usage.p1.k{i % 2}", event(i), f"req_{i}")) for i in range(6)]
    await settle()
    bus.gate.set()
    await asyncio.gather(*tasks)
    by_subject: dict[str, list[str]] = {}
    for subject, payload, _, headers in bus.sent:
        by_subject.setdefault(subject, []).extend(e.request_id for e in usage_batch.events_of(payload, headers))
    assert by_subject == {"usage.p1.k0": ["req_0", "req_2", "req_4"], "usage.p1.k1": ["req_1", "req_3", "req_5"]}


async def test_a_batch_holds_at_most_max_events():
    bus = GatedBus()
    batcher = EventBatcher(bus, 2.0, max_events=3, linger_s=0)
    tasks = [asyncio.create_task(batcher.publish(SUBJECT, event(i), f"req_{i}")) for i in range(8)]
    await settle()
    bus.gate.set()
    await asyncio.gather(*tasks)
    sizes = [len(usage_batch.events_of(p, h)) for _, p, _, h in bus.sent]
    assert max(sizes) == 3 and sum(sizes) == 8


async def test_a_failed_publication_fails_each_of_its_events_and_the_next_goes_on():
    bus = GatedBus()
    batcher = EventBatcher(bus, 2.0, linger_s=0)
    first = asyncio.create_task(batcher.publish(SUBJECT, event(0), "req_0"))
    await settle()
    batched = [asyncio.create_task(batcher.publish(SUBJECT, event(i), f"req_{i}")) for i in (1, 2)]
    await settle()
    bus.fail_next = TimeoutError("no ack")
    bus.gate.set()
    with pytest.raises(TimeoutError):
        await first  # the first publication failed: its caller stores the event in the outbox
    await asyncio.gather(*batched)  # the next one (the batch) went through
    assert [m for _, _, m, _ in bus.sent] == ["batch:req_1:2"]
    await batcher.publish(SUBJECT, event(9), "req_9")  # and the subject is usable after
    assert bus.sent[-1][2] == "req_9"


async def test_a_caller_that_gives_up_does_not_stop_the_others():
    bus = GatedBus()
    batcher = EventBatcher(bus, 2.0, linger_s=0)
    first = asyncio.create_task(batcher.publish(SUBJECT, event(0), "req_0"))
    await settle()
    gone = asyncio.create_task(batcher.publish(SUBJECT, event(1), "req_1"))
    stays = asyncio.create_task(batcher.publish(SUBJECT, event(2), "req_2"))
    await settle()
    gone.cancel()
    bus.gate.set()
    await asyncio.gather(first, stays)
    assert gone.cancelled()
    # the cancelled caller's event was already queued: published anyway (at least once is the
    # rule; its caller stores it in the outbox too, and the consumers key by request id)
    assert [m for _, _, m, _ in bus.sent] == ["req_0", "batch:req_1:2"]


async def test_events_within_the_linger_go_as_one_message():
    bus = GatedBus()
    bus.gate.set()
    batcher = EventBatcher(bus, 2.0, linger_s=0.05)
    first = asyncio.create_task(batcher.publish(SUBJECT, event(0), "req_0"))
    await asyncio.sleep(0.01)
    assert bus.started == 0  # still lingering
    rest = [asyncio.create_task(batcher.publish(SUBJECT, event(i), f"req_{i}")) for i in (1, 2)]
    await asyncio.gather(first, *rest)
    assert [m for _, _, m, _ in bus.sent] == ["batch:req_0:3"]
    await batcher.publish(SUBJECT, event(3), "req_3")  # alone, after its linger: as itself
    assert bus.sent[-1][2:] == ("req_3", {})
