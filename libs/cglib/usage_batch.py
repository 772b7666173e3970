"""Usage events in batches on the USAGE stream.

A proxy publishes a key's usage events together: those of the same 100 ms, and those that
come while the key's last publication awaits JetStream's acknowledgement, go in one
``UsageEvents`` message with the header ``Cg-Usage-Batch`` (``cg_proxy.event_batches``);
an event with no company goes alone, as a plain ``UsageEvent``. Under load one message
(one publication, one delivery and one acknowledgement per consumer, one JetStream write)
then carries many requests. Consumers read both forms with ``events_of``; every consumer
keys its effects by request id, so an event delivered twice (a batch whose acknowledgement
was lost, then sent again from the outbox) changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from creditgate.events.v1 import events_pb2

# The header of a batch message; its value is the number of events in it.
HEADER = "Cg-Usage-Batch"
# The most events in one message: ~200 bytes each, far below NATS's 1 MB payload limit.
MAX_EVENTS = 256
# UsageEvents.events is field 1, length-delimited: tag byte (1 << 3) | 2.
_EVENTS_TAG = b"\x0a"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def batch(payloads: Sequence[bytes]) -> bytes:
    """A ``UsageEvents`` message of serialized ``UsageEvent`` payloads, without decoding
    them (a repeated message field is its elements' bytes, each behind its tag and length)."""
    return b"".join(_EVENTS_TAG + _varint(len(p)) + p for p in payloads)


def batch_id(request_ids: Sequence[str]) -> str:
    """The batch's ``Nats-Msg-Id``: JetStream drops the same batch sent twice (a retried
    publication) as it drops the same single event."""
    return f"batch:{request_ids[0]}:{len(request_ids)}"


def events_of(data: bytes, headers: Mapping[str, str] | None) -> list[events_pb2.UsageEvent]:
    """The usage events of one USAGE message, either form; raises ``DecodeError`` for a
    payload that is neither."""
    if headers and HEADER in headers:
        return list(events_pb2.UsageEvents.FromString(data).events)
    return [events_pb2.UsageEvent.FromString(data)]
