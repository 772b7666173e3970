"""The webhook event types, by the names partners see (``key.exhausted``, ...), read from
the contract (``creditgate.bff.v1.WebhookEventType``'s ``event_name`` option): the
vocabulary is spelled once, in bff.proto."""

from __future__ import annotations

from typing import TypeAlias

from creditgate.bff.v1 import bff_pb2

EventType: TypeAlias = bff_pb2.WebhookEventType.ValueType

NAMES: dict[EventType, str] = {
    bff_pb2.WebhookEventType.Value(v.name): v.GetOptions().Extensions[bff_pb2.event_name]
    for v in bff_pb2.WebhookEventType.DESCRIPTOR.values
    if v.number != bff_pb2.WEBHOOK_EVENT_TYPE_UNSPECIFIED
}
BY_NAME: dict[str, EventType] = {name: number for number, name in NAMES.items()}
TEST = NAMES[bff_pb2.WEBHOOK_EVENT_TYPE_TEST]
# What an endpoint may subscribe to (the test event goes to one endpoint, on request).
SUBSCRIBABLE: tuple[str, ...] = tuple(name for name in NAMES.values() if name != TEST)
