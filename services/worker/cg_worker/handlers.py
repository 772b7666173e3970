"""What the worker does with each usage event."""

from __future__ import annotations

import logging

from prometheus_client import Counter

from creditgate.events.v1 import events_pb2

log = logging.getLogger("cg_worker.usage")

EVENTS = Counter("cg_worker_usage_events_total", "Usage events handled", ["status"])
CHARGED = Counter("cg_worker_charged_ucr_total", "Micro-credits charged, as reported by usage events")


async def handle_usage(event: events_pb2.UsageEvent) -> None:
    EVENTS.labels(event.status or "unknown").inc()
    CHARGED.inc(event.charged_ucr)
    log.info(
        "usage event",
        extra={
            "request_id": event.request_id,
            "partner_id": event.partner_id,
            "key_id": event.key_id,
            "model": event.model,
            "input_tokens": event.input_tokens,
            "output_tokens": event.output_tokens,
            "charged_ucr": event.charged_ucr,
            "usage_source": event.usage_source,
            "status": event.status,
            "stream": event.stream,
            "latency_ms": event.latency_ms,
        },
    )
