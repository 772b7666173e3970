"""OpenTelemetry tracing, off unless an exporter is configured, and free when off.

On when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set
(and ``OTEL_SDK_DISABLED`` is not ``true``): ``setup(service)`` at a process's entry point,
before any gRPC channel or server exists, then

- exports spans over OTLP/HTTP (batched; the standard ``OTEL_*`` variables tune it),
  with ``service.name`` = ``creditgate-<service>`` unless ``OTEL_SERVICE_NAME`` says otherwise;
- instruments every gRPC aio channel and server (``opentelemetry-instrumentation-grpc``),
  so trace context travels proxy -> keys -> ledger in the calls' metadata (health checks
  are left out: they would drown the rest);
- lets the proxy open a server span per metered request (``server_span``, continuing a
  client's ``traceparent``) and put the context in a usage event's NATS headers
  (``inject``), and a consumer link back to it (``links_from``).

Off, ``ENABLED`` is False and nothing of the SDK is imported: the hot path checks one
module attribute and takes ``NO_SPAN`` (a ``contextlib.nullcontext``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

ENABLED = False
NO_SPAN: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
_ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_tracer: Any = None


def configured() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(v) for v in _ENDPOINT_VARS)


def setup(service: str) -> bool:
    """Turns tracing on for this process when an exporter is configured; returns whether it did."""
    global ENABLED, _tracer
    if ENABLED or not configured():
        return ENABLED
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
    from opentelemetry.instrumentation.grpc.filters import negate, service_name
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"creditgate-{service}"
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    not_health = negate(service_name("grpc.health.v1.Health"))
    GrpcAioInstrumentorClient(filter_=not_health).instrument()
    GrpcAioInstrumentorServer(filter_=not_health).instrument()
    _tracer = trace.get_tracer("creditgate")
    ENABLED = True
    log.info("tracing on", extra={"service_name": name})
    return True


def shutdown() -> None:
    """Flushes the spans not yet exported (at a graceful exit)."""
    if ENABLED:
        from opentelemetry import trace

        provider = trace.get_tracer_provider()
        with contextlib.suppress(Exception):
            provider.shutdown()  # type: ignore[attr-defined]


def server_span(name: str, headers: Mapping[str, str]) -> contextlib.AbstractContextManager[Any]:
    """A server span continuing the caller's ``traceparent`` (``NO_SPAN`` when off)."""
    if not ENABLED:
        return NO_SPAN
    from opentelemetry import propagate, trace

    return _tracer.start_as_current_span(name, context=propagate.extract(headers), kind=trace.SpanKind.SERVER)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Adds the current trace context (``traceparent``) to message headers; as is when off."""
    if ENABLED:
        from opentelemetry import propagate

        propagate.inject(headers)
    return headers


def consumer_span(name: str, headers: Iterable[Mapping[str, str] | None]) -> contextlib.AbstractContextManager[Any]:
    """A consumer span for a batch of messages, linked to the trace of each one that
    carried a context (a batch has many parents: links, not a parent)."""
    if not ENABLED:
        return NO_SPAN
    from opentelemetry import propagate, trace

    links = []
    for h in headers:
        if h:
            ctx = trace.get_current_span(propagate.extract(h)).get_span_context()
            if ctx.is_valid:
                links.append(trace.Link(ctx))
    return _tracer.start_as_current_span(name, kind=trace.SpanKind.CONSUMER, links=links)
