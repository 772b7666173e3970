"""cglib.usage_batch: a proxy's batch of usage events is a UsageEvents message built from
the events' bytes, read back (with a lone event's message) by every consumer alike."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError

from cglib import usage_batch
from creditgate.events.v1 import events_pb2


def usage(i: int, **kw) -> events_pb2.UsageEvent:
    return events_pb2.UsageEvent(request_id=f"req_{i}", key_id="k1", partner_id="p1", charged_ucr=i * 10**12, **kw)


@pytest.mark.parametrize("n", [1, 2, 255, 256])
def test_a_batch_of_serialized_events_is_the_usage_events_message(n):
    events = [usage(i, model="m" * (i % 300)) for i in range(n)]  # lengths past one varint byte
    payload = usage_batch.batch([e.SerializeToString() for e in events])
    assert list(events_pb2.UsageEvents.FromString(payload).events) == events
    assert usage_batch.events_of(payload, {usage_batch.HEADER: str(n)}) == events


def test_a_message_without_the_header_is_one_event():
    e = usage(7)
    assert usage_batch.events_of(e.SerializeToString(), None) == [e]
    assert usage_batch.events_of(e.SerializeToString(), {"Nats-Msg-Id": "req_7"}) == [e]


def test_garbage_is_a_decode_error_in_either_form():
    with pytest.raises(DecodeError):
        usage_batch.events_of(b"\xff\xff not a protobuf", None)
    with pytest.raises(DecodeError):
        usage_batch.events_of(b"\xff\xff not a protobuf", {usage_batch.HEADER: "2"})


def test_a_batch_has_its_own_dedup_id():
    assert usage_batch.batch_id(["req_1", "req_2", "req_3"]) == "batch:req_1:3"
