"""The metered routes in-process (``cg_proxy.routes.metered``): every way a request is
refused or fails, with what was held, forwarded, voided and recorded each time, against
fakes of the proxy's collaborators (``proxy_fakes``). Streams: ``test_proxy_streams``."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from proxy_fakes import BILLING, EMBED, GPT, INSTRUCT, FakeResponse, Proxy, raw_post, running, until

from cg_proxy import errors
from cg_proxy.token_usage import Usage
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
}
REPLY_BYTES = json.dumps(REPLY).encode()
PROVIDER, ESTIMATED = ledger_pb2.USAGE_SOURCE_PROVIDER, ledger_pb2.USAGE_SOURCE_ESTIMATED


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    async with running() as p:
        yield p


def refused(resp: httpx.Response, status: int, code: str | None, param: str | None = None) -> dict[str, Any]:
    """Asserts an error in OpenAI's shape, with the request's id; returns the error."""
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param), error
    assert resp.headers["x-request-id"].startswith("req")
    return error


def nothing_happened(p: Proxy, *, reserved: int = 0) -> None:
    """Nothing was forwarded, voided or recorded (and ``reserved`` holds were asked for)."""
    assert len(p.ledger.reserved) == reserved
    assert p.upstreams.opened == []
    assert p.fake_recorder.voided == [] and p.fake_recorder.recorded == []


# -- the body: size and time, before and after the key -----------------------------------------


async def test_a_declared_body_over_the_limit_is_413_before_the_key_is_even_looked_up():
    async with running(max_body_bytes=1024) as p:
        resp = await p.client.post("/v1/chat/completions", content=b"x" * 1025, headers=p.headers)
        refused(resp, 413, "request_too_large")
        assert p.keys.calls == 0
        nothing_happened(p)


async def test_a_streamed_body_over_the_limit_is_413_as_soon_as_it_passes():
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * 600  # no Content-Length: chunked

    async with running(max_body_bytes=1024) as p:
        resp = await p.client.post("/v1/chat/completions", content=chunks(), headers=p.headers)
        refused(resp, 413, "request_too_large")
        assert p.keys.calls == 1
        nothing_happened(p)


async def test_a_body_not_sent_in_time_is_408_and_the_connection_closes():
    async def stalls() -> AsyncIterator[bytes]:
        yield b'{"model": "gpt-4o-mini", '
        await asyncio.sleep(5)
        yield b"}"

    async with running(body_read_timeout_s=0.05) as p:
        started = time.monotonic()
        resp = await p.client.post("/v1/chat/completions", content=stalls(), headers=p.headers)
        refused(resp, 408, "request_timeout")
        assert resp.headers["connection"] == "close" and time.monotonic() - started < 1
        nothing_happened(p)


async def test_a_body_cut_off_by_the_client_is_400(proxy):
    out = await raw_post(proxy.app, "/v1/chat/completions", b'{"model": ', proxy.headers, cut_body=True)
    assert out.status == 400 and json.loads(out.chunks[0])["error"]["code"] == "incomplete_body"
    nothing_happened(proxy)


# -- the key ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization, status, code",
    [
        (None, 401, "missing_api_key"),
        ("Basic abc", 401, "missing_api_key"),
        ("Bearer sk-not-a-key", 401, "invalid_api_key"),
        ("Bearer sk-cg-" + "A" * 40, 401, "invalid_api_key"),  # well formed, unknown to keys
    ],
)
async def test_a_missing_or_unknown_key_is_401(proxy, authorization, status, code):
    headers = {"Authorization": authorization} if authorization else {}
    resp = await proxy.client.post("/v1/chat/completions", json=CHAT, headers=headers)
    error = refused(resp, status, code)
    assert error["type"] == "invalid_request_error"
    nothing_happened(proxy)


@pytest.mark.parametrize(
    "key_status, status, code",
    [
        (keys_pb2.KEY_STATUS_REVOKED, 401, "invalid_api_key"),  # as if it never existed
        (keys_pb2.KEY_STATUS_SUSPENDED, 403, "key_suspended"),
        (keys_pb2.KEY_STATUS_EXHAUSTED, 403, "key_exhausted"),
        (keys_pb2.KEY_STATUS_EXPIRED, 403, "key_expired"),
    ],
)
async def test_a_key_that_is_not_active_is_refused(proxy, key_status, status, code):
    proxy.keys.key.status = key_status
    refused(await proxy.post("/v1/chat/completions", CHAT), status, code)
    nothing_happened(proxy)


async def test_an_active_key_past_its_expiry_is_403_expired(proxy):
    proxy.keys.key.expires_at_unix = int(time.time()) - 1
    error = refused(await proxy.post("/v1/chat/completions", CHAT), 403, "key_expired")
    assert error["type"] == "permission_error"
    nothing_happened(proxy)


@pytest.mark.parametrize(
    "origin, allowed", [(None, False), ("https://evil.example.org", False), ("https://app.example.com", True)]
)
async def test_a_domain_restricted_key_is_used_only_from_its_domains(proxy, origin, allowed):
    proxy.keys.key.allowed_domains.append("app.example.com")
    proxy.upstreams.answer(FakeResponse(REPLY_BYTES))
    resp = await proxy.post("/v1/chat/completions", CHAT, headers={"origin": origin} if origin else {})
    if allowed:
        assert resp.status_code == 200 and len(proxy.ledger.reserved) == 1
    else:
        refused(resp, 403, "domain_not_allowed")
        nothing_happened(proxy)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
async def test_keys_unavailable_is_a_503_with_retry_after(proxy, code):
    proxy.keys.fail = code
    resp = await proxy.post("/v1/chat/completions", CHAT)
    error = refused(resp, 503, "service_unavailable")
    assert "keys" in error["message"] and resp.headers["retry-after"] == "1"
    nothing_happened(proxy)


async def test_an_unexpected_answer_from_keys_is_a_500_that_names_the_request(proxy):
    proxy.keys.fail = grpc.StatusCode.INTERNAL
    resp = await proxy.post("/v1/chat/completions", CHAT)
    error = refused(resp, 500, None)
    assert resp.headers["x-request-id"] in error["message"] and "fake" not in resp.text
    nothing_happened(proxy)


async def test_a_key_change_event_drops_the_cached_key(proxy):
    proxy.upstreams.answer(FakeResponse(REPLY_BYTES), FakeResponse(REPLY_BYTES), FakeResponse(REPLY_BYTES))
    assert (await proxy.post("/v1/chat/completions", CHAT)).status_code == 200
    assert (await proxy.post("/v1/chat/completions", CHAT)).status_code == 200
    assert proxy.keys.calls == 1  # cached
    ((subject, handler),) = proxy.bus.subscriptions
    assert subject == "keys.>"
    await handler(events_pb2.KeyChanged(key_id="key_1", change=events_pb2.KEY_CHANGE_UPDATED).SerializeToString())
    await handler(b"\xff not a KeyChanged")  # ignored
    assert (await proxy.post("/v1/chat/completions", CHAT)).status_code == 200
    assert proxy.keys.calls == 2


# -- the body: valid, a model of the key, within its output cap ------------------------------------


@pytest.mark.parametrize(
    "body, param",
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (json.dumps({"messages": [{"role": "user", "content": "Hi"}]}).encode(), "model"),
        (json.dumps({**CHAT, "temperature": 5}).encode(), "temperature"),
        (json.dumps({**CHAT, "max_tokens": 0}).encode(), "max_tokens"),
        (json.dumps({**CHAT, "stream": "yes"}).encode(), "stream"),
    ],
)
async def test_an_invalid_body_is_400_before_anything_is_held(proxy, body, param):
    resp = await proxy.client.post("/v1/chat/completions", content=body, headers=proxy.headers)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    nothing_happened(proxy)


async def test_max_tokens_above_the_models_cap_is_400(proxy):
    refused(await proxy.post("/v1/chat/completions", {**CHAT, "max_tokens": 16385}), 400, "invalid_value", "max_tokens")
    nothing_happened(proxy)


async def test_a_model_the_key_may_not_use_is_404(proxy):
    error = refused(
        await proxy.post("/v1/chat/completions", {**CHAT, "model": "gpt-5"}), 404, "model_not_found", "model"
    )
    assert "gpt-5" in error["message"]
    nothing_happened(proxy)


# -- the hold -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, status, error_code, param",
    [
        (grpc.StatusCode.FAILED_PRECONDITION, 429, "insufficient_quota", None),
        (grpc.StatusCode.NOT_FOUND, 429, "insufficient_quota", None),
        (grpc.StatusCode.OUT_OF_RANGE, 400, None, "max_tokens"),
        (grpc.StatusCode.UNAVAILABLE, 503, "service_unavailable", None),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 503, "service_unavailable", None),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 503, "service_unavailable", None),
        (grpc.StatusCode.INTERNAL, 500, None, None),
    ],
)
async def test_a_hold_the_ledger_refuses_is_answered_and_nothing_is_forwarded(proxy, code, status, error_code, param):
    proxy.ledger.refuse = code
    resp = await proxy.post("/v1/chat/completions", CHAT)
    error = refused(resp, status, error_code, param)
    if status == 429:
        assert error["type"] == "insufficient_quota"
    if status == 503:
        assert "ledger" in error["message"] and resp.headers["retry-after"] == "1"
    nothing_happened(proxy, reserved=1)


async def test_a_rate_limited_key_is_429_with_openais_headers_and_nothing_held(proxy):
    proxy.keys.key.rpm_limit, proxy.keys.key.tpm_limit = 60, 1000
    proxy.ledger.rate_limit = ledger_pb2.RateLimitState(
        limited=True,
        limited_by="tokens",
        retry_after_ms=1500,
        limit_requests=60,
        remaining_requests=59,
        reset_requests_ms=1000,
        limit_tokens=1000,
        remaining_tokens=0,
        reset_tokens_ms=1500,
    )
    resp = await proxy.post("/v1/chat/completions", CHAT)
    error = refused(resp, 429, "rate_limit_exceeded")
    assert error["type"] == "tokens" and "TPM" in error["message"]
    assert resp.headers["retry-after"] == "2"
    assert (resp.headers["x-ratelimit-limit-tokens"], resp.headers["x-ratelimit-remaining-tokens"]) == ("1000", "0")
    assert (resp.headers["x-ratelimit-limit-requests"], resp.headers["x-ratelimit-reset-requests"]) == ("60", "1s")
    assert proxy.ledger.reserved[0].rate_limit == ledger_pb2.RateLimit(key="key_1", rpm=60, tpm=1000)
    nothing_happened(proxy, reserved=1)  # a refused window holds nothing: no void either


async def test_a_limited_keys_answer_carries_the_windows_headers(proxy):
    proxy.keys.key.rpm_limit = 60
    proxy.ledger.rate_limit = ledger_pb2.RateLimitState(limit_requests=60, remaining_requests=12, reset_requests_ms=120)
    proxy.upstreams.answer(FakeResponse(REPLY_BYTES))
    resp = await proxy.post("/v1/chat/completions", CHAT)
    assert resp.status_code == 200
    assert (resp.headers["x-ratelimit-remaining-requests"], resp.headers["x-ratelimit-reset-requests"]) == (
        "12",
        "120ms",
    )
    assert "x-ratelimit-limit-tokens" not in resp.headers


# -- what is held, forwarded and recorded for an answer -------------------------------------------


async def test_a_json_answer_is_passed_on_and_its_usage_recorded(proxy):
    proxy.upstreams.answer(FakeResponse(REPLY_BYTES))
    resp = await proxy.post("/v1/chat/completions", {**CHAT, "stream": None})  # null: not a stream
    assert resp.status_code == 200 and resp.content == REPLY_BYTES
    assert resp.headers["content-type"] == "application/json"
    request_id = resp.headers["x-request-id"]

    (held,) = proxy.ledger.reserved
    assert (held.request_id, held.billing, held.model, held.rate_limit) == (request_id, BILLING, "gpt-4o-mini", None)
    assert held.max_output == GPT.max_output_tokens and 0 < held.max_input < 64  # a tokenized bound
    (opened,) = proxy.upstreams.opened
    assert (opened.path, opened.model, opened.stream) == ("/chat/completions", "gpt-4o-mini", False)
    assert opened.body == {**CHAT, "model": GPT.upstream_model, "stream": None}  # the upstream's name
    (done,) = proxy.fake_recorder.recorded
    assert (done.request_id, done.key.id, done.customer_id, done.model) == (
        request_id,
        "key_1",
        "cust_1",
        "gpt-4o-mini",
    )
    assert (done.usage, done.outcome, done.stream) == (Usage(9, 2, PROVIDER), events_pb2.USAGE_OUTCOME_OK, False)
    assert proxy.fake_recorder.voided == []


@pytest.mark.parametrize(
    "path, route, body, max_output",
    [
        ("/v1/chat/completions", GPT, {**CHAT, "max_tokens": 100, "n": 3}, 300),
        ("/v1/chat/completions", GPT, {**CHAT, "max_completion_tokens": 50, "max_tokens": 100}, 50),
        (
            "/v1/completions",
            INSTRUCT,
            {"model": INSTRUCT.id, "prompt": ["a", "b"], "max_tokens": 10, "n": 2, "best_of": 3},
            60,
        ),
        ("/v1/completions", INSTRUCT, {"model": INSTRUCT.id, "prompt": "a"}, 4096),  # no cap known, none asked
        ("/v1/embeddings", EMBED, {"model": EMBED.id, "input": "hello"}, 0),
    ],
)
async def test_the_output_bound_held_for_each_endpoint(proxy, path, route, body, max_output):
    proxy.upstreams.answer(FakeResponse(b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}'))
    assert (await proxy.post(path, body)).status_code == 200
    assert proxy.ledger.reserved[0].max_output == max_output
    assert proxy.upstreams.opened[0].path == path.removeprefix("/v1")


async def test_embeddings_never_stream_and_bill_no_output(proxy):
    reply = {"object": "list", "data": [], "model": EMBED.id, "usage": {"prompt_tokens": 2, "total_tokens": 2}}
    proxy.upstreams.answer(FakeResponse(json.dumps(reply).encode()))
    resp = await proxy.post("/v1/embeddings", {"model": EMBED.id, "input": "hello", "stream": True})
    assert resp.status_code == 200 and resp.json() == reply
    assert proxy.upstreams.opened[0].stream is False and "stream_options" not in proxy.upstreams.opened[0].body
    assert proxy.fake_recorder.recorded[0].usage == Usage(2, 0, PROVIDER)


@pytest.mark.parametrize(
    "reply, output_tokens",
    [
        (b"<html>bad gateway</html>", 6),  # not JSON: 24 characters, ~4 a token
        (json.dumps({"choices": [{"message": {"content": "abcdefgh"}}]}).encode(), 2),  # JSON without usage
        (b"[1, 2, 3]", 3),  # JSON, not an object
    ],
)
async def test_a_reply_without_usage_is_passed_on_and_billed_a_marked_estimate(proxy, reply, output_tokens):
    proxy.upstreams.answer(FakeResponse(reply))
    resp = await proxy.post("/v1/chat/completions", CHAT)
    assert resp.status_code == 200 and resp.content == reply
    (done,) = proxy.fake_recorder.recorded
    prompt_bound = proxy.ledger.reserved[0].max_input
    assert done.usage == Usage(prompt_bound, output_tokens, ESTIMATED)
    assert done.outcome == events_pb2.USAGE_OUTCOME_OK and proxy.fake_recorder.voided == []


# -- the provider fails: the hold is voided -----------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        errors.APIError(
            503, "Overloaded", type="server_error", code="upstream_overloaded", headers={"Retry-After": "1"}
        ),
        errors.APIError(429, "Slow down", type="rate_limit_error", code="upstream_rate_limited"),
        errors.APIError(504, "late", type="server_error", code="upstream_timeout"),
        errors.APIError(400, "`n` > 1 is not supported", param="n"),  # an adapter refusing the request
    ],
)
async def test_a_provider_error_voids_the_hold_and_is_passed_on(proxy, error):
    proxy.upstreams.answer(error)
    resp = await proxy.post("/v1/chat/completions", CHAT)
    assert resp.status_code == error.status and resp.json() == error.body()
    if "Retry-After" in error.headers:
        assert resp.headers["retry-after"] == error.headers["Retry-After"]
    assert proxy.fake_recorder.voided == [(resp.headers["x-request-id"], "upstream_error")]
    assert proxy.fake_recorder.recorded == []


async def test_an_unexpected_exception_while_forwarding_voids_and_is_a_502(proxy):
    proxy.upstreams.answer(RuntimeError("secret detail of an adapter bug"))
    resp = await proxy.post("/v1/chat/completions", CHAT)
    error = refused(resp, 502, "upstream_error")
    assert error["type"] == "server_error" and "secret detail" not in resp.text
    assert proxy.fake_recorder.voided == [(resp.headers["x-request-id"], "upstream_error")]
    assert proxy.fake_recorder.recorded == []


async def test_a_json_reply_cut_off_voids_and_is_a_502(proxy):
    cut = FakeResponse(b'{"id": "chatcmpl-1", ', b"...", fail_after=1)
    proxy.upstreams.answer(cut)
    resp = await proxy.post("/v1/chat/completions", CHAT)
    error = refused(resp, 502, "upstream_error")
    assert "cut off" in error["message"] and cut.released
    assert proxy.fake_recorder.voided == [(resp.headers["x-request-id"], "upstream_read_failed")]
    assert proxy.fake_recorder.recorded == []


async def test_a_request_cancelled_while_forwarding_voids_its_hold(proxy):
    proxy.upstreams.hang = True
    body = json.dumps(CHAT).encode()
    call = asyncio.create_task(raw_post(proxy.app, "/v1/chat/completions", body, proxy.headers))
    await until(lambda: proxy.upstreams.opened)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert proxy.fake_recorder.voided == [(proxy.ledger.reserved[0].request_id, "cancelled")]
    assert proxy.fake_recorder.recorded == []


# -- the rest of the surface --------------------------------------------------------------------


async def test_models_are_the_keys_models(proxy):
    resp = await proxy.client.get("/v1/models", headers=proxy.headers)
    assert [(m["id"], m["owned_by"]) for m in resp.json()["data"]] == [
        ("gpt-4o-mini", "openai"),
        ("claude-haiku-4-5", "anthropic"),
        ("llama-3-8b-instruct", "together"),
        ("mistral-embed", "mistral"),
    ]
    assert (await proxy.client.get("/v1/models/gpt-4o-mini", headers=proxy.headers)).json()["id"] == "gpt-4o-mini"
    refused(await proxy.client.get("/v1/models/gpt-5", headers=proxy.headers), 404, "model_not_found", "model")
    refused(await proxy.client.get("/v1/models"), 401, "missing_api_key")


async def test_unknown_urls_and_methods_answer_in_openais_shape(proxy):
    refused(await proxy.client.get("/v1/nope"), 404, "unknown_url")
    refused(await proxy.client.get("/v1/chat/completions"), 405, None)


async def test_ready_with_nats_down_which_is_reported(proxy):
    resp = await proxy.client.get("/readyz")
    assert (resp.status_code, resp.json()) == (200, {"status": "ready", "checks": {"nats": "serving"}})
    proxy.bus.connected = False  # usage events wait in the outbox: still ready
    resp = await proxy.client.get("/readyz")
    assert (resp.status_code, resp.json()) == (200, {"status": "ready", "checks": {"nats": "not_connected"}})
    assert proxy.upstreams.started
