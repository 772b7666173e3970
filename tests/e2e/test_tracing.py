"""OpenTelemetry tracing across the services, exported over OTLP/HTTP to a tiny receiver
in the test: one chat completion, sent with a client's ``traceparent``, yields spans from
the proxy, keys and the ledger in that one trace, and its usage event carries the trace
context in its NATS headers. Off by default: without an exporter the SDK is never
imported and the metered routes are not wrapped."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from cg_devstack import Stack, StackConfig
from cg_devstack.seed import Seeder
from cglib import natsx
from helpers import client, eventually, usage_messages

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Receiver:
    """An OTLP/HTTP trace receiver: (service.name, span name, trace id) of every span posted."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []
        self.posts: list[str] = []
        spans, posts = self.spans, self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append(self.path)
                request = ExportTraceServiceRequest.FromString(body)
                for rs in request.resource_spans:
                    attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                    for ss in rs.scope_spans:
                        spans.extend((attrs.get("service.name", ""), s.name, s.trace_id.hex()) for s in ss.spans)
                data = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def stack(receiver: Receiver) -> Iterator[Stack]:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with tempfile.TemporaryDirectory(prefix="cg-tracing-") as var:
        config = StackConfig(
            var_dir=Path(var),
            services=("nats", "keys", "ledger", "mock", "proxy"),
            env={"keys": otel, "ledger": otel, "proxy": otel},
        )
        s = Stack(config)
        try:
            for name in config.services:  # the SDK's imports make a start slower: a longer wait
                s.start_service(name, timeout_s=180)
            yield s
        finally:
            s.stop()


def usage_headers(stack: Stack, subject: str) -> list[dict[str, str]]:
    return [headers for _, headers in usage_messages(stack, subject)]


def test_one_completion_is_one_trace_across_proxy_keys_and_ledger(stack: Stack, receiver: Receiver):
    seeder = Seeder(stack.keys_addr, stack.ledger_addr)
    try:
        key = seeder.funded_key(seeder.partner("traced", credits=100), 10, ["gpt-4o-mini"])
    finally:
        seeder.close()
    reply = client(stack, key.secret).chat.completions.create(
        model="gpt-4o-mini",
        max_tokens=5,
        messages=[{"role": "user", "content": "trace me"}],
        extra_headers={"traceparent": TRACEPARENT},
    )
    assert reply.choices[0].message.content

    expected = {
        ("creditgate-proxy", "POST /v1/chat/completions"),  # the request, continuing the client's trace
        ("creditgate-proxy", "/creditgate.keys.v1.KeysService/AuthenticateKey"),  # its gRPC calls ...
        # the key's first request takes its budget lease (leases are on by default)
        ("creditgate-proxy", "/creditgate.ledger.v1.LedgerService/AcquireLease"),
        ("creditgate-keys", "/creditgate.keys.v1.KeysService/AuthenticateKey"),  # ... served in keys
        ("creditgate-ledger", "/creditgate.ledger.v1.LedgerService/AcquireLease"),  # ... and the ledger
    }

    def in_trace() -> set[tuple[str, str]] | None:
        found = {(svc, name) for svc, name, trace_id in receiver.spans if trace_id == TRACE_ID}
        return found if expected <= found else None

    eventually(in_trace, timeout_s=30, what=f"{expected} in the client's trace")
    assert not any("grpc.health" in name for _, name, _ in receiver.spans), "health checks are not traced"
    assert set(receiver.posts) == {"/v1/traces"}

    # through NATS: the usage event carries the request's trace context
    subject = natsx.usage_subject(key.partner_id, key.key_id)
    headers = eventually(lambda: usage_headers(stack, subject) or None, what="the usage event")
    assert headers[0]["traceparent"].split("-")[1] == TRACE_ID


def test_off_by_default_the_sdk_is_never_imported():
    probe = """
import sys
from cg_proxy.app import create_app
from cg_proxy.fastpath import MeteredRoute
from cg_proxy.settings import Settings
from cglib import tracing
assert not tracing.setup("proxy"), "on without an exporter"
gateway = create_app(Settings())
assert all(type(r) is MeteredRoute for r in gateway.metered.values()), "a traced route while off"
# the API alone may be there (FastAPI imports it when installed: no-op without an SDK)
heavy = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")
loaded = sorted(m for m in sys.modules if m.startswith(heavy))
assert not loaded, loaded
"""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
