"""The OpenAI API surface of the gateway: the raw JSON of every endpoint and error,
validated against OpenAI's own OpenAPI description (support.openapi), the exception
classes of the official Python SDK, the official Node SDK (tests/e2e/node), and exact
billing of legacy completions and embeddings. Runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from creditgate.ledger.v1 import ledger_pb2
from helpers import client, eventually, expected_cost_ucr
from support import openapi

MODELS = ["gpt-4o-mini", "claude-haiku-4-5"]
REPLY = "Hello from the Creditgate mock upstream. This reply is deterministic so usage can be priced exactly."
NODE_DIR = Path(__file__).parent / "node"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def key(seeder):
    return seeder.funded_key(seeder.partner("surface", credits=1000), 100, MODELS)


def _balance(seeder, account: str) -> ledger_pb2.GetBalanceResponse:
    return seeder.ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=account), timeout=5)


def _idle_posted_ucr(seeder, account: str) -> int:
    """The posted balance once no hold is pending: a request of an earlier test settles
    after its client has the answer, and must not be counted in this test's charge."""
    return eventually(
        lambda: (b := _balance(seeder, account)).pending_ucr == 0 and b, what="no pending hold"
    ).posted_ucr


def _charged(seeder, account: str, before_ucr: int) -> int:
    """What the request in flight cost, once settled (no hold left, posted moved)."""

    def settled():
        b = _balance(seeder, account)
        return b if b.pending_ucr == 0 and b.posted_ucr != before_ucr else None

    return before_ucr - eventually(settled, what="settlement").posted_ucr


def _sse(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The JSON chunks of an SSE stream, which must end with ``data: [DONE]``."""
    chunks: list[dict[str, Any]] = []
    done = False
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        assert not done, "data after [DONE]"
        if data == "[DONE]":
            done = True
        else:
            chunks.append(json.loads(data))
    assert done, "the stream did not end with [DONE]"
    return chunks


def _valid(schema: str, instance: Any) -> Any:
    openapi.validate(schema, instance)
    return instance


# -- chat ----------------------------------------------------------------------------


def test_chat_completion_json_matches_the_spec(stack, key):
    raw = client(stack, key.secret).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello in five words"}]
    )
    assert raw.headers["x-request-id"].startswith("req")
    body = _valid("CreateChatCompletionResponse", raw.http_response.json())
    assert body["choices"][0]["message"]["content"] == REPLY


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_chunks_match_the_spec(stack, key, include_usage):
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    with client(stack, key.secret).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True, **extra
    ) as resp:
        assert resp.headers["x-request-id"] and resp.headers["content-type"].startswith("text/event-stream")
        chunks = _sse(resp.iter_lines())
    for chunk in chunks:
        _valid("CreateChatCompletionStreamResponse", chunk)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == REPLY
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert len(usage_chunks) == (1 if include_usage else 0)
    if include_usage:
        assert usage_chunks[0]["choices"] == [] and usage_chunks[0] is chunks[-1]


# -- legacy completions --------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["Say hello", ["Say hello", "and once more"]])
def test_completion_json_matches_the_spec_and_is_billed_exactly(stack, seeder, key, prompt):
    before = _idle_posted_ucr(seeder, key.account)
    raw = client(stack, key.secret).completions.with_raw_response.create(
        model="gpt-4o-mini", prompt=prompt, max_tokens=5
    )
    assert raw.headers["x-request-id"]
    body = _valid("CreateCompletionResponse", raw.http_response.json())
    prompts = [prompt] if isinstance(prompt, str) else prompt
    assert [c["text"] for c in body["choices"]] == ["Hello from the Creditgate mock"] * len(prompts)
    assert {c["finish_reason"] for c in body["choices"]} == {"length"}
    # the mock: words + 1 per prompt; one token per reply word, max_tokens of them per prompt
    prompt_tokens = sum(len(p.split()) + 1 for p in prompts)
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt_tokens, 5 * len(prompts))
    assert _charged(seeder, key.account, before) == expected_cost_ucr("gpt-4o-mini", prompt_tokens, 5 * len(prompts))
    assert raw.parse().choices[0].text == "Hello from the Creditgate mock"


def _completion_chunk_errors(chunk: dict[str, Any], last: bool) -> list[str]:
    """Spec errors of a streamed completion chunk, less one known gap of the spec:
    CreateCompletionResponse (shared by streamed and non-streamed replies) does not let
    `finish_reason` be null, yet every streamed chunk but a choice's last has null there,
    from OpenAI's API as from the mock. That null is tolerated, on a non-final chunk only."""
    out = []
    for e in openapi.errors("CreateCompletionResponse", chunk):
        path = list(e.absolute_path)
        if not last and e.instance is None and len(path) == 3 and path[0] == "choices" and path[2] == "finish_reason":
            continue
        out.append(f"{'/'.join(map(str, path))}: {e.message}")
    return out


@pytest.mark.parametrize("include_usage", [True, False])
def test_completion_stream_matches_the_spec_and_is_billed_exactly(stack, seeder, key, include_usage):
    before = _idle_posted_ucr(seeder, key.account)
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    with client(stack, key.secret).completions.with_streaming_response.create(
        model="claude-haiku-4-5", prompt="Tell me something", stream=True, **extra
    ) as resp:
        assert resp.headers["x-request-id"]
        chunks = _sse(resp.iter_lines())
    text_chunks = [c for c in chunks if c["choices"]]
    for i, chunk in enumerate(text_chunks):
        assert _completion_chunk_errors(chunk, last=i == len(text_chunks) - 1) == [], chunk
    assert "".join(c["choices"][0]["text"] for c in text_chunks) == REPLY
    assert text_chunks[-1]["choices"][0]["finish_reason"] == "stop"
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert len(usage_chunks) == (1 if include_usage else 0)
    if include_usage:
        assert usage_chunks[0] is chunks[-1] and usage_chunks[0]["choices"] == []
        _valid("CreateCompletionResponse", usage_chunks[0])
        assert (usage_chunks[0]["usage"]["prompt_tokens"], usage_chunks[0]["usage"]["completion_tokens"]) == (4, 16)
    # billed with the provider's usage even when the client did not ask to see it
    assert _charged(seeder, key.account, before) == expected_cost_ucr("claude-haiku-4-5", 4, 16)


def test_completion_stream_parses_with_the_sdk(stack, key):
    stream = client(stack, key.secret).completions.create(
        model="gpt-4o-mini", prompt="Hi", stream=True, stream_options={"include_usage": True}
    )
    parts = list(stream)
    assert "".join(p.choices[0].text for p in parts if p.choices) == REPLY
    assert parts[-1].usage.completion_tokens == 16


# -- embeddings ----------------------------------------------------------------------


def test_embeddings_match_the_spec_and_are_billed_exactly(stack, seeder, key):
    inputs = ["hello world", "a second, longer input"]
    before = _idle_posted_ucr(seeder, key.account)
    raw = client(stack, key.secret).embeddings.with_raw_response.create(
        model="gpt-4o-mini", input=inputs, encoding_format="float"
    )
    assert raw.headers["x-request-id"]
    body = _valid("CreateEmbeddingResponse", raw.http_response.json())
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in body["data"])
    prompt_tokens = sum(len(t.split()) + 1 for t in inputs)  # the mock: words + 1 per input
    assert body["usage"] == {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    # no output tokens: input price only
    assert _charged(seeder, key.account, before) == expected_cost_ucr("gpt-4o-mini", prompt_tokens, 0)

    # deterministic, and the SDK's default (base64, decoded by the SDK) gives the same floats
    again = client(stack, key.secret).embeddings.with_raw_response.create(model="gpt-4o-mini", input=inputs[0])
    encoded = again.http_response.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)  # the SDK asked for base64 on its own
    assert list(struct.unpack("<8f", base64.b64decode(encoded))) == body["data"][0]["embedding"]
    assert again.parse().data[0].embedding == body["data"][0]["embedding"]


# -- models --------------------------------------------------------------------------


def test_models_list_and_retrieve_match_the_spec(stack, key):
    c = client(stack, key.secret)
    listed = c.models.with_raw_response.list()
    assert listed.headers["x-request-id"]
    body = _valid("ListModelsResponse", listed.http_response.json())
    assert [m["id"] for m in body["data"]] == MODELS
    one = c.models.with_raw_response.retrieve("claude-haiku-4-5")
    assert one.headers["x-request-id"]
    assert _valid("Model", one.http_response.json())["id"] == "claude-haiku-4-5"


# -- errors --------------------------------------------------------------------------


def _error_body(exc: openai.APIStatusError) -> dict[str, Any]:
    assert exc.response.headers.get("x-request-id"), "an error without x-request-id"
    body = _valid("ErrorResponse", exc.response.json())
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def _unchanged(seeder, account: str, before_ucr: int) -> None:
    b = _balance(seeder, account)
    assert (b.posted_ucr, b.pending_ucr) == (before_ucr, 0)


def test_wrong_key_is_401_authentication_error(stack):
    bad = client(stack, "sk-cg-" + "x" * 40)
    for call in (
        lambda: bad.completions.create(model="gpt-4o-mini", prompt="hi"),
        lambda: bad.embeddings.create(model="gpt-4o-mini", input="hi"),
        lambda: bad.models.list(),
    ):
        with pytest.raises(openai.AuthenticationError) as e:
            call()
        assert e.value.status_code == 401
        assert _error_body(e.value)["code"] == "invalid_api_key"


def test_model_not_allowed_is_404_not_found_error(stack, seeder, key):
    before = _idle_posted_ucr(seeder, key.account)
    c = client(stack, key.secret)
    for call in (
        lambda: c.completions.create(model="gpt-4o", prompt="hi"),
        lambda: c.embeddings.create(model="gpt-4o", input="hi"),
        lambda: c.models.retrieve("gpt-4o"),
    ):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        err = _error_body(e.value)
        assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "model_not_found", "model")
    _unchanged(seeder, key.account, before)


@pytest.mark.parametrize(
    "endpoint, fields, param",
    [
        ("completions", {"prompt": {"text": "hi"}}, "prompt"),
        ("completions", {"prompt": ["hi", 3]}, "prompt[1]"),
        ("completions", {"prompt": []}, "prompt"),
        ("completions", {}, "prompt"),
        ("completions", {"prompt": "hi", "max_tokens": 0}, "max_tokens"),
        ("completions", {"prompt": "hi", "n": "two"}, "n"),
        ("completions", {"prompt": "hi", "stream": "yes"}, "stream"),
        ("embeddings", {"input": ""}, "input"),
        ("embeddings", {"input": ["ok", ""]}, "input[1]"),
        ("embeddings", {"input": 42}, "input"),
        ("embeddings", {}, "input"),
        ("embeddings", {"input": "hi", "encoding_format": "int8"}, "encoding_format"),
        ("embeddings", {"input": "hi", "dimensions": 0}, "dimensions"),
        ("chat/completions", {"messages": "hi"}, "messages"),
    ],
)
def test_invalid_fields_are_400_bad_request_error_with_param(stack, seeder, key, endpoint, fields, param):
    before = _idle_posted_ucr(seeder, key.account)
    c = client(stack, key.secret)
    with pytest.raises(openai.BadRequestError) as e:
        c.post(f"/{endpoint}", body={"model": "gpt-4o-mini", **fields}, cast_to=object)
    err = _error_body(e.value)
    assert (err["type"], err["param"]) == ("invalid_request_error", param)
    _unchanged(seeder, key.account, before)


def test_body_over_the_limit_is_413_and_charges_nothing(stack, seeder, key):
    before = _idle_posted_ucr(seeder, key.account)
    big = "word " * MIB  # 5 MiB of prompt, over the 4 MiB default
    c = client(stack, key.secret)
    for call in (
        lambda: c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": big}]),
        lambda: c.completions.create(model="gpt-4o-mini", prompt=big),
        lambda: c.embeddings.create(model="gpt-4o-mini", input=big),
    ):
        with pytest.raises(openai.APIStatusError) as e:
            call()
        assert type(e.value) is openai.APIStatusError and e.value.status_code == 413
        err = _error_body(e.value)
        assert (err["type"], err["code"]) == ("invalid_request_error", "request_too_large")

    # a chunked body has no Content-Length: refused while it is read
    def chunked():
        yield b'{"model": "gpt-4o-mini", "prompt": "'
        for _ in range(5):
            yield b"x" * MIB
        yield b'"}'

    r = httpx.post(
        f"{stack.proxy_url}/v1/completions",
        content=chunked(),
        timeout=30,
        headers={"Authorization": f"Bearer {key.secret}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.headers["x-request-id"], r.text
    assert _valid("ErrorResponse", r.json())["error"]["code"] == "request_too_large"
    _unchanged(seeder, key.account, before)


def test_not_enough_credits_is_429_rate_limit_error(stack, seeder):
    poor = seeder.funded_key(seeder.partner("surface-poor", credits=10), 1, ["claude-haiku-4-5"], name="one credit")
    c = client(stack, poor.secret)
    # no max_tokens: the hold is the model's 64,000-token output cap, 32 credits > 1
    with pytest.raises(openai.RateLimitError) as e:
        c.completions.create(model="claude-haiku-4-5", prompt="hi")
    err = _error_body(e.value)
    assert (err["type"], err["code"]) == ("insufficient_quota", "insufficient_quota")
    # each prompt of a list gets up to max_tokens: 3 x 1,000 tokens of output are 1.5 credits
    with pytest.raises(openai.RateLimitError):
        c.completions.create(model="claude-haiku-4-5", prompt=["a", "b", "c"], max_tokens=1_000)
    _unchanged(seeder, poor.account, 1_000_000)
    # ... while one prompt's 1,000 (0.5 credits) fit, and embeddings hold nothing for output
    assert c.completions.create(model="claude-haiku-4-5", prompt="a", max_tokens=1_000).usage.completion_tokens == 16
    assert c.embeddings.create(model="claude-haiku-4-5", input="hi", encoding_format="float").usage.prompt_tokens == 2


# -- the Node SDK --------------------------------------------------------------------


def test_node_sdk(stack, key):
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("the openai npm package is not installed: run `make node-deps`")
    node = shutil.which("node")
    assert node, "node is not on PATH"
    env = {
        **os.environ,
        "OPENAI_BASE_URL": f"{stack.proxy_url}/v1",
        "OPENAI_API_KEY": key.secret,
        "CG_MODEL": "gpt-4o-mini",
    }
    proc = subprocess.run(
        [node, str(NODE_DIR / "sdk_check.mjs")], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["failures"] == []
    results = report["results"]
    assert results["chat"]["content"] == REPLY and results["chat"]["request_id"]
    assert results["chat_stream"]["text"] == REPLY
    assert (results["chat_stream"]["usage"]["prompt_tokens"], results["chat_stream"]["usage"]["completion_tokens"]) == (
        11,
        16,
    )
    assert (results["completions"]["text"], results["completions"]["usage"]["completion_tokens"]) == (
        "Hello from the Creditgate mock",
        5,
    )
    assert len(results["embeddings"]["vectors"]) == 2 and results["embeddings"]["usage"]["prompt_tokens"] == 6
    assert results["models"] == MODELS
    assert results["wrong_key"] == {
        "class": "AuthenticationError",
        "status": 401,
        "code": "invalid_api_key",
        "authentication_error": True,
    }
