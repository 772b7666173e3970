"""An Anthropic upstream end to end: the proxy routes provider ``anthropic`` to the mock's
Messages API (``/anthropic/v1/messages``) and translates both ways; the official openai
SDK sees an OpenAI provider. Usage is billed exactly, a 429 is retried transparently,
and a provider failure charges nothing."""

from __future__ import annotations

import json
import re
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from cg_devstack import Stack, StackConfig
from creditgate.ledger.v1 import ledger_pb2
from helpers import client, eventually, expected_cost_ucr

MODEL = "claude-haiku-4-5"
REPLY = "Hello from the Creditgate mock upstream. This reply is deterministic so usage can be priced exactly."
PROVIDER_KEY = "sk-ant-mock-e2e-0123456789"


@pytest.fixture(scope="module")
def stack():
    with tempfile.TemporaryDirectory(prefix="cg-anthropic-") as var:
        stack = Stack(StackConfig(var_dir=Path(var), services=("nats", "keys", "ledger", "mock", "proxy")))
        # the mock's port is known once the Stack is built, before anything starts
        stack.config.env["proxy"] = {
            "CG_PROXY_UPSTREAMS__ANTHROPIC__BASE_URL": f"http://127.0.0.1:{stack.ports['mock']}/anthropic/v1",
            "CG_PROXY_UPSTREAMS__ANTHROPIC__API": "anthropic",
            "CG_PROXY_UPSTREAMS__ANTHROPIC__API_KEY": PROVIDER_KEY,
        }
        with stack:
            yield stack


@pytest.fixture
def key(seeder, request):
    partner = seeder.partner(f"anthropic-{request.node.name}", credits=1000)
    return seeder.funded_key(partner, 100, [MODEL])


def _balance(seeder, account) -> ledger_pb2.GetBalanceResponse:
    return seeder.ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=account), timeout=5)


def _charged(seeder, key, before: int) -> int:
    """What the key paid once nothing is pending any more."""
    b = eventually(
        lambda: (lambda b: b if b.pending_ucr == 0 and b.posted_ucr != before else None)(_balance(seeder, key.account)),
        what="settlement",
    )
    return before - b.posted_ucr


def _cost(prompt_tokens: int, completion_tokens: int) -> int:
    # claude-haiku-4-5 lists $1.00 / $5.00 per 1M tokens: x100 in ucr, and no fraction to round here
    assert (
        expected_cost_ucr(MODEL, prompt_tokens, completion_tokens) == (prompt_tokens * 1 + completion_tokens * 5) * 100
    )
    return (prompt_tokens * 1 + completion_tokens * 5) * 100


def _retries(stack, reason: str = '[^"]+') -> float:
    """Retried attempts to the anthropic upstream so far (for one reason, or all)."""
    text = httpx.get(stack.proxy_url + "/metrics").text
    pattern = rf'^cg_proxy_upstream_retries_total{{provider="anthropic",reason="{reason}"}} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def test_json_completion_is_translated_and_billed_exactly(stack, seeder, key):
    before = seeder.balance_ucr(key.account)
    completion = client(stack, key.secret).chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello in five words"}],
    )
    assert completion.object == "chat.completion" and completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content == REPLY
    # the mock's rule: 3 + (3 + 2 words of system) + (3 + 5 words) prompt tokens, 16 reply words
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (16, 16, 32)
    assert _charged(seeder, key, before) == _cost(16, 16)


def test_max_tokens_reaches_anthropic_and_length_comes_back(stack, seeder, key):
    before = seeder.balance_ucr(key.account)
    completion = client(stack, key.secret).chat.completions.create(
        model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Hi"}]
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Hello from the Creditgate mock"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (7, 5)
    assert _charged(seeder, key, before) == _cost(7, 5)


def test_stream_with_usage_is_translated_and_billed_exactly(stack, seeder, key):
    before = seeder.balance_ucr(key.account)
    chunks = list(
        client(stack, key.secret).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and chunks[-1].choices == []
    assert (usage_chunks[0].usage.prompt_tokens, usage_chunks[0].usage.completion_tokens) == (7, 16)
    assert _charged(seeder, key, before) == _cost(7, 16)


def test_stream_without_usage_hides_it_but_bills_it(stack, seeder, key):
    before = seeder.balance_ucr(key.account)
    chunks = list(
        client(stack, key.secret).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True
        )
    )
    assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
    assert _charged(seeder, key, before) == _cost(7, 16)


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Looks a text up",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        },
    }
]


def test_tool_calls_both_ways(stack, key):
    c = client(stack, key.secret)
    messages = [{"role": "user", "content": "Look something up"}]
    completion = c.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="required")
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "lookup" and json.loads(call.function.arguments) == {"text": REPLY}

    chunks = list(
        c.chat.completions.create(
            model=MODEL,
            messages=messages,
            tools=TOOLS,
            stream=True,
            tool_choice={"type": "function", "function": {"name": "lookup"}},
        )
    )
    deltas = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or ())]
    assert deltas[0].id.startswith("toolu_") and deltas[0].function.name == "lookup"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"text": REPLY}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"

    # the tool's answer goes back as a tool_result; the mock then answers in text
    follow_up = c.chat.completions.create(
        model=MODEL,
        tools=TOOLS,
        messages=[
            *messages,
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "found it"},
        ],
    )
    assert follow_up.choices[0].message.content == REPLY
    # 3 + (3 + 3 words) + (3 + 0: the assistant's tool_use) + (3 + 2 words of the tool result)
    assert follow_up.usage.prompt_tokens == 17


def test_429_once_is_retried_transparently_and_billed_once(stack, seeder, key):
    before = seeder.balance_ucr(key.account)
    retries_before = _retries(stack, "429")
    started = time.monotonic()
    text = f"mock-fail-429-once {uuid.uuid4().hex}"  # 3 + (3 + 2 words) prompt tokens
    completion = client(stack, key.secret).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}]
    )
    assert time.monotonic() - started >= 1.0  # the mock's Retry-After: 1 was honoured
    assert completion.choices[0].message.content == REPLY
    assert _retries(stack, "429") == retries_before + 1
    assert _charged(seeder, key, before) == _cost(8, 16)


@pytest.mark.parametrize(
    "failure, status, code, retried",
    [
        ("mock-fail-500", 502, "upstream_error", 2),  # max_retries = 2
        ("mock-fail-529", 503, "upstream_overloaded", 2),
        ("mock-fail-401", 502, "upstream_auth_failed", 0),  # our provider key, not the client's problem
        ("mock-fail-400", 400, "upstream_rejected", 0),
    ],
)
def test_provider_failure_is_openai_shaped_and_charges_nothing(stack, seeder, key, failure, status, code, retried):
    before = _balance(seeder, key.account)
    reason = failure.rsplit("-", 1)[1]
    retries_before = _retries(stack, reason)
    with pytest.raises(openai.APIStatusError) as e:
        client(stack, key.secret).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": failure}])
    assert e.value.status_code == status
    body = e.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and PROVIDER_KEY not in e.value.response.text
    assert _retries(stack, reason) == retries_before + retried
    after = eventually(
        lambda: (lambda b: b if b.pending_ucr == 0 else None)(_balance(seeder, key.account)), what="the hold voided"
    )
    assert after.posted_ucr == before.posted_ucr


def test_error_mid_stream_reaches_the_client_and_is_not_retried(stack, seeder, key):
    before = seeder.balance_ucr(key.account)
    retries_before = _retries(stack)
    stream = client(stack, key.secret).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "mock-fail-midstream"}], stream=True
    )
    seen = []
    with pytest.raises(openai.APIError) as e:
        for chunk in stream:
            seen.append(chunk)
    assert "Overloaded" in str(e.value)
    assert "".join(c.choices[0].delta.content or "" for c in seen if c.choices) == "Hello"
    assert _retries(stack) == retries_before
    # billed: the provider's 3 + (3 + 1 word) input tokens, and "Hello" streamed = 2 tokens at ~4 characters each
    assert _charged(seeder, key, before) == _cost(7, 2)
