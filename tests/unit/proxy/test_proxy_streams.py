"""Streams through the metered routes in-process: decided once from the body, relayed,
and recorded with how they ended (ok, the provider broke, the client left); and the real
usage recorder over the fake ledger and bus, for the usage event the worker receives."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
from proxy_fakes import GPT, FakeResponse, Proxy, raw_post, running

from cg_proxy import errors
from cg_proxy.outbox import Outbox
from cg_proxy.token_usage import Usage
from creditgate.events.v1 import events_pb2
from creditgate.ledger.v1 import ledger_pb2

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
EVENTS = [
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"}}]}',
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}',
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}',
    b"data: [DONE]",
]
SSE = [event + b"\n\n" for event in EVENTS]
WITHOUT_USAGE = [SSE[0], SSE[1], SSE[2], SSE[4]]
PROVIDER, ESTIMATED = ledger_pb2.USAGE_SOURCE_PROVIDER, ledger_pb2.USAGE_SOURCE_ESTIMATED
OK = events_pb2.USAGE_OUTCOME_OK


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    async with running() as p:
        yield p


async def finished_streams(p: Proxy) -> None:
    """Waits for the relays' readers (they run on after the client has its last byte)."""
    await p.fake_recorder.drain(2)


@pytest.mark.parametrize("client_wants_usage", [False, True])
async def test_a_stream_is_relayed_and_billed_the_providers_usage(proxy, client_wants_usage):
    proxy.upstreams.answer(FakeResponse(*SSE))
    options = {"stream_options": {"include_usage": True}} if client_wants_usage else {}
    resp = await proxy.post("/v1/chat/completions", {**CHAT, "stream": True, **options})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream") and resp.headers["cache-control"] == "no-cache"
    sent = resp.content.split(b"\n\n")[:-1]
    assert sent == (EVENTS if client_wants_usage else [e for e in EVENTS if b'"usage"' not in e])
    (opened,) = proxy.upstreams.opened
    assert opened.stream is True and opened.body["stream_options"] == {"include_usage": True}  # always asked
    await finished_streams(proxy)
    (done,) = proxy.fake_recorder.recorded
    assert (done.usage, done.outcome, done.stream) == (Usage(7, 2, PROVIDER), OK, True)
    assert (done.request_id, done.customer_id) == (resp.headers["x-request-id"], "cust_1")
    assert proxy.fake_recorder.voided == []


async def test_a_stream_in_pieces_split_anywhere_is_relayed_whole(proxy):
    whole = b"".join(SSE).replace(b"\n", b"\r\n")  # CRLF line ends, a CR and its LF in separate reads
    proxy.upstreams.answer(FakeResponse(*[whole[i : i + 7] for i in range(0, len(whole), 7)]))
    resp = await proxy.post("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert resp.content.split(b"\n\n")[:-1] == EVENTS
    await finished_streams(proxy)
    assert proxy.fake_recorder.recorded[0].usage == Usage(7, 2, PROVIDER)


@pytest.mark.parametrize("stream", [False, None])
async def test_only_stream_true_streams(proxy, stream):
    proxy.upstreams.answer(FakeResponse(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}'))
    resp = await proxy.post("/v1/chat/completions", {**CHAT, "stream": stream})
    assert resp.headers["content-type"] == "application/json"
    assert proxy.upstreams.opened[0].stream is False and "stream_options" not in proxy.upstreams.opened[0].body


async def test_a_stream_without_usage_is_billed_a_marked_estimate(proxy):
    proxy.upstreams.answer(FakeResponse(*WITHOUT_USAGE))
    resp = await proxy.post("/v1/chat/completions", {**CHAT, "stream": True})
    assert resp.content.endswith(b"data: [DONE]\n\n")
    await finished_streams(proxy)
    (done,) = proxy.fake_recorder.recorded
    assert done.usage == Usage(proxy.ledger.reserved[0].max_input, 2, ESTIMATED)  # "Hello": 5 characters
    assert done.outcome == OK


async def test_a_provider_that_breaks_mid_stream_is_billed_what_it_produced(proxy):
    proxy.upstreams.answer(FakeResponse(*SSE, fail_after=2))  # the role chunk and "Hel", then nothing
    resp = await proxy.post("/v1/chat/completions", {**CHAT, "stream": True})
    assert resp.status_code == 200 and resp.content == SSE[0] + SSE[1]
    await finished_streams(proxy)
    (done,) = proxy.fake_recorder.recorded
    assert done.outcome == events_pb2.USAGE_OUTCOME_UPSTREAM_ERROR
    assert done.usage == Usage(proxy.ledger.reserved[0].max_input, 1, ESTIMATED)
    assert proxy.fake_recorder.voided == []


async def test_a_client_that_leaves_mid_stream_is_billed_the_providers_full_usage(proxy):
    upstream = FakeResponse(*SSE, delay_s=0.01)
    proxy.upstreams.answer(upstream)
    body = json.dumps({**CHAT, "stream": True}).encode()
    out = await raw_post(proxy.app, "/v1/chat/completions", body, proxy.headers, leave_after_chunks=1)
    assert out.status == 200 and len(out.chunks) == 1  # then the client went away
    await finished_streams(proxy)
    (done,) = proxy.fake_recorder.recorded
    assert (done.usage, done.outcome) == (Usage(7, 2, PROVIDER), events_pb2.USAGE_OUTCOME_CLIENT_DISCONNECTED)
    assert upstream.released and proxy.fake_recorder.voided == []


# -- the real recorder: settle, then the usage event --------------------------------------------


def published(p: Proxy) -> list[events_pb2.UsageEvent]:
    return [events_pb2.UsageEvent.FromString(payload) for _, payload, _ in p.bus.published]


async def test_an_answer_is_settled_and_its_usage_event_published(tmp_path):
    async with running(outbox=tmp_path / "outbox.sqlite3") as p:
        p.upstreams.answer(FakeResponse(b'{"usage": {"prompt_tokens": 9, "completion_tokens": 2}}'))
        resp = await p.post("/v1/chat/completions", CHAT)
        request_id = resp.headers["x-request-id"]
    # the lifespan is over: the recorder has drained
    assert p.ledger.settled == [(request_id, Usage(9, 2, PROVIDER))]
    ((subject, _, msg_id),) = p.bus.published
    assert (subject, msg_id) == ("usage.p_1.key_1", request_id)
    (event,) = published(p)
    assert (event.request_id, event.key_id, event.partner_id, event.customer_id) == (
        request_id,
        "key_1",
        "p_1",
        "cust_1",
    )
    assert (event.model, event.input_tokens, event.output_tokens, event.charged_ucr) == ("gpt-4o-mini", 9, 2, 123)
    assert (event.outcome, event.source, event.stream, event.price_book_version) == (OK, PROVIDER, False, "pb-1")


async def test_a_key_billed_to_no_customer_has_an_empty_customer_id(tmp_path):
    async with running(outbox=tmp_path / "outbox.sqlite3") as p:
        p.keys.billing.ClearField("customer_account")
        p.upstreams.answer(FakeResponse(b"not json"))
        await p.post("/v1/chat/completions", CHAT)
    (event,) = published(p)
    assert (event.customer_id, event.source) == ("", ESTIMATED)


async def test_a_stream_the_client_left_is_published_as_such(tmp_path):
    async with running(outbox=tmp_path / "outbox.sqlite3") as p:
        p.upstreams.answer(FakeResponse(*SSE, delay_s=0.01))
        body = json.dumps({**CHAT, "stream": True}).encode()
        await raw_post(p.app, "/v1/chat/completions", body, p.headers, leave_after_chunks=1)
    (event,) = published(p)
    assert (event.outcome, event.source, event.stream) == (events_pb2.USAGE_OUTCOME_CLIENT_DISCONNECTED, PROVIDER, True)
    assert (event.input_tokens, event.output_tokens) == (7, 2)


async def test_a_provider_error_voids_the_hold_in_the_ledger_and_publishes_nothing(tmp_path):
    async with running(outbox=tmp_path / "outbox.sqlite3") as p:
        p.upstreams.answer(errors.APIError(502, "boom", type="server_error", code="upstream_error"))
        resp = await p.post("/v1/chat/completions", CHAT)
    assert p.ledger.voided == [(resp.headers["x-request-id"], "upstream_error")]
    assert p.ledger.settled == [] and p.bus.published == []


async def test_with_nats_down_the_event_waits_in_the_outbox(tmp_path):
    async with running(outbox=tmp_path / "outbox.sqlite3") as p:
        p.bus.connected = False
        p.upstreams.answer(FakeResponse(b'{"usage": {"prompt_tokens": 9, "completion_tokens": 2}}'))
        resp = await p.post("/v1/chat/completions", CHAT)
    assert p.bus.published == [] and len(p.ledger.settled) == 1
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    try:
        (entry,) = await outbox.oldest()
    finally:
        outbox.close()
    assert entry.request_id == resp.headers["x-request-id"] and entry.subject == "usage.p_1.key_1"
    assert events_pb2.UsageEvent.FromString(entry.payload).model == GPT.id
