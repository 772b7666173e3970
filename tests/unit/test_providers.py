"""Provider adapters: OpenAI ↔ Anthropic translation (requests, JSON replies, streams split
anywhere), provider error mapping, and the upstream retries against a local HTTP server."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from cg_proxy import errors, upstream
from cg_proxy.http_client import Disconnected
from cg_proxy.providers import adapter_for, provider_error
from cg_proxy.providers.anthropic import StreamTranslator, to_chat_completion
from cg_proxy.providers.anthropic_request import to_messages_request
from cg_proxy.providers.base import TranslatedStream, join_url
from cg_proxy.relay import StreamRelay
from cg_proxy.settings import Settings, Upstream
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2

ROUTE = keys_pb2.ModelRoute(
    id="claude-haiku-4-5", provider="anthropic", upstream_model="claude-haiku-4-5", max_output_tokens=64000
)


def _req(**fields):
    return {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}], **fields}


# -- requests ---------------------------------------------------------------------------


def test_request_system_turns_and_sampling():
    body = _req(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Why?"},
        ],
        stop="END",
        temperature=1.7,
        top_p=0.9,
        user="end-user-1",
        stream=True,
        seed=7,
        presence_penalty=0.5,
        logprobs=True,
        stream_options={"include_usage": True},
    )
    assert to_messages_request(body, ROUTE) == {
        "model": "claude-haiku-4-5",
        "max_tokens": 64000,
        "system": "Be brief.\n\nAnswer in French.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "again"}]},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Why?"},
        ],
        "stop_sequences": ["END"],
        "temperature": 1.0,  # Anthropic's maximum
        "top_p": 0.9,
        "metadata": {"user_id": "end-user-1"},
        "stream": True,
    }


@pytest.mark.parametrize(
    "fields, route_cap, expected",
    [
        ({}, 64000, 64000),
        ({"max_tokens": 50}, 64000, 50),
        ({"max_completion_tokens": 70, "max_tokens": 50}, 64000, 70),
        ({"max_tokens": 10**6}, 64000, 64000),
        ({}, 0, 4096),  # a route without a cap: token_usage.DEFAULT_OUTPUT_CAP
    ],
)
def test_request_max_tokens_is_the_reserved_bound(fields, route_cap, expected):
    route = keys_pb2.ModelRoute(id="m", max_output_tokens=route_cap)
    assert to_messages_request(_req(**fields), route)["max_tokens"] == expected


def test_request_stop_list_and_no_optional_fields():
    out = to_messages_request(_req(stop=["a", "b"]), ROUTE)
    assert out["stop_sequences"] == ["a", "b"]
    out = to_messages_request(_req(), ROUTE)
    assert set(out) == {"model", "max_tokens", "messages"}


def test_request_tool_round_trip():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
        {"type": "function", "function": {"name": "now"}},
    ]
    body = _req(
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
        messages=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "24C"}]},
            {"role": "user", "content": "Thanks"},
        ],
    )
    out = to_messages_request(body, ROUTE)
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert out["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [  # tool results first, then the user's text, in one turn
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


TOOLS = [{"type": "function", "function": {"name": "f"}}]


@pytest.mark.parametrize(
    "choice, parallel, expected",
    [
        (None, None, None),
        ("auto", None, {"type": "auto"}),
        ("none", False, {"type": "none"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, None, {"type": "tool", "name": "f"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_request_tool_choice(choice, parallel, expected):
    out = to_messages_request(_req(tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel), ROUTE)
    assert out.get("tool_choice") == expected


def test_request_images():
    body = _req(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
                ],
            }
        ]
    )
    assert to_messages_request(body, ROUTE)["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"n": 2}, "n"),
        ({"messages": [{"role": "function", "content": "x", "name": "f"}]}, "messages[0].role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "not json"}}
                        ],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"stop": 5}, "stop"),
        ({"temperature": "hot"}, "temperature"),
    ],
)
def test_request_refuses_what_anthropic_cannot_express(fields, param):
    with pytest.raises(errors.APIError) as e:
        to_messages_request(_req(**fields), ROUTE)
    assert (e.value.status, e.value.param) == (400, param)


def test_adapter_requests_carry_the_right_key_header_and_url():
    anthropic = Upstream(base_url="https://api.anthropic.com/v1/", api="anthropic", api_key="sk-ant-secret")
    req = adapter_for("anthropic").request(anthropic, "/chat/completions", ROUTE, _req())
    assert req.url == "https://api.anthropic.com/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant-secret" and req.headers["anthropic-version"] == "2023-06-01"
    assert json.loads(req.body)["max_tokens"] == 64000
    assert "sk-ant-secret" not in repr(req) and "sk-ant-secret" not in repr(anthropic)
    with pytest.raises(errors.APIError) as e:
        adapter_for("anthropic").request(anthropic, "/embeddings", ROUTE, _req())
    assert e.value.status == 404

    openai = Upstream(base_url="https://api.openai.com/v1", api_key="sk-proj-x")
    req = adapter_for("openai").request(openai, "/chat/completions", ROUTE, _req())
    assert (req.url, req.headers["Authorization"]) == ("https://api.openai.com/v1/chat/completions", "Bearer sk-proj-x")
    assert json.loads(req.body) == _req()  # passed through unchanged

    azure = Upstream(
        base_url="https://r.openai.azure.com/openai/deployments/gpt4o?api-version=2024-10-21",
        api_key="az-key",
        api_key_header="api-key",
    )
    req = adapter_for("openai").request(azure, "/chat/completions", ROUTE, _req())
    assert req.url == "https://r.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
    assert req.headers["api-key"] == "az-key" and "Authorization" not in req.headers

    keyless = Upstream(base_url="http://127.0.0.1:11434/v1")  # Ollama, vLLM
    assert "Authorization" not in adapter_for("openai").request(keyless, "/chat/completions", ROUTE, _req()).headers
    assert join_url("http://h/v1", "/x") == "http://h/v1/x"


def test_upstream_settings_from_env(monkeypatch):
    monkeypatch.setenv("CG_PROXY_UPSTREAMS__ANTHROPIC__BASE_URL", "https://api.anthropic.com/v1")
    monkeypatch.setenv("CG_PROXY_UPSTREAMS__ANTHROPIC__API_KEY", "sk-ant-env")
    monkeypatch.setenv("CG_PROXY_UPSTREAMS__ANTHROPIC__API", "anthropic")
    monkeypatch.setenv("CG_PROXY_UPSTREAMS__ANTHROPIC__MAX_RETRIES", "4")
    up = Settings().upstreams["anthropic"]
    assert (up.api, up.api_key.get_secret_value(), up.max_retries, up.timeout_s) == ("anthropic", "sk-ant-env", 4, None)
    assert Upstream(base_url="http://x").api == "openai"


# -- JSON replies -----------------------------------------------------------------------


def test_reply_text():
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 12,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    out = to_chat_completion(message, created=1700000000)
    assert out == {
        "id": "msg_1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-haiku-4-5-20251001",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    ChatCompletion.model_validate(out)


def test_reply_tool_calls_and_cached_prompt_tokens():
    message = {
        "id": "msg_2",
        "type": "message",
        "model": "m",
        "stop_reason": "tool_use",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 20,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 5,
        },
    }
    out = to_chat_completion(message, created=1)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    ]
    assert out["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 20,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    ChatCompletion.model_validate(out)


@pytest.mark.parametrize(
    "stop_reason, finish",
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_reply_finish_reasons(stop_reason, finish):
    out = to_chat_completion(
        {"content": [], "stop_reason": stop_reason, "usage": {"input_tokens": 1, "output_tokens": 0}}
    )
    assert out["choices"][0]["finish_reason"] == finish


def test_reply_that_is_not_a_message_is_a_502():
    with pytest.raises(errors.APIError) as e:
        adapter_for("anthropic").reply(b"<html>oops</html>")
    assert (e.value.status, e.value.code) == (502, "upstream_error")


# -- streams ----------------------------------------------------------------------------

# Shaped like a recorded Messages API stream: text (with multi-byte characters), a tool
# call streamed as partial JSON, a ping, cumulative usage in message_delta.
ANTHROPIC_SSE = "".join(
    f"event: {name}\ndata: {data}\n\n"
    for name, data in [
        (
            "message_start",
            '{"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message",'
            '"role":"assistant","content":[],"model":"claude-haiku-4-5-20251001","stop_reason":null,'
            '"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,'
            '"cache_read_input_tokens":0,"output_tokens":2}}}',
        ),
        ("content_block_start", '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}'),
        ("ping", '{"type": "ping"}'),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay — let me check ☀️ "}}',
        ),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"in Paris."}}',
        ),
        ("content_block_stop", '{"type":"content_block_stop","index":0}'),
        (
            "content_block_start",
            '{"type":"content_block_start","index":1,"content_block":{"type":"tool_use",'
            '"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}',
        ),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}',
        ),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
            '"partial_json":"{\\"city\\":"}}',
        ),
        (
            "content_block_delta",
            '{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
            '"partial_json":" \\"Paris\\"}"}}',
        ),
        ("content_block_stop", '{"type":"content_block_stop","index":1}'),
        (
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
            '"usage":{"output_tokens":89}}',
        ),
        ("message_stop", '{"type":"message_stop"}'),
    ]
).encode()

HEAD = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": "claude-haiku-4-5-20251001",
}


def _delta(delta, finish=None):
    return {**HEAD, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


EXPECTED = [
    _delta({"role": "assistant", "content": ""}),
    _delta({"content": "Okay — let me check ☀️ "}),
    _delta({"content": "in Paris."}),
    _delta(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ""},
                }
            ]
        }
    ),
    _delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    _delta({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
    _delta({}, "tool_calls"),
    {**HEAD, "choices": [], "usage": {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561}},
    "[DONE]",
]


def _translate(pieces) -> bytes:
    t = StreamTranslator(created=1700000000)
    return b"".join(t.feed(p) for p in pieces) + t.finish()


def _events(sse: bytes) -> list:
    assert sse.endswith(b"\n\n")
    out = []
    for event in sse[:-2].split(b"\n\n"):
        assert event.startswith(b"data: ") and b"\n" not in event
        payload = event[6:].decode()
        out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


@pytest.mark.parametrize("split", [1, 2, 3, 7, 13, 64, 10**6])
def test_stream_translation_at_any_split(split):
    pieces = [ANTHROPIC_SSE[i : i + split] for i in range(0, len(ANTHROPIC_SSE), split)]
    out = _translate(pieces)
    assert _events(out) == EXPECTED
    assert out == _translate([ANTHROPIC_SSE])
    for chunk in EXPECTED[:-1]:
        ChatCompletionChunk.model_validate(chunk)


def test_stream_translation_with_crlf_split_between_cr_and_lf():
    crlf = ANTHROPIC_SSE.replace(b"\n", b"\r\n")
    cut = crlf.index(b"\r\n\r\n") + 1  # between \r and \n
    assert _events(_translate([crlf[:cut], crlf[cut:]])) == EXPECTED


OVERLOADED = (
    b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
)
OVERLOADED_CHUNK = {
    "error": {"message": "Overloaded", "type": "server_error", "param": None, "code": "upstream_overloaded"}
}


def test_stream_error_event_bills_what_was_produced_and_ends_the_stream():
    start = ANTHROPIC_SSE.split(b"event: content_block_stop")[0]
    events = _events(_translate([start, OVERLOADED, b'event: message_stop\ndata: {"type":"message_stop"}\n\n']))
    assert events[:3] == EXPECTED[:3]
    streamed = len("Okay — let me check ☀️ in Paris.")  # 32 characters: 8 tokens at ~4 per token > the reported 2
    assert events[3:] == [
        {
            **HEAD,
            "choices": [],
            "usage": {
                "prompt_tokens": 472,
                "completion_tokens": (streamed + 3) // 4,
                "total_tokens": 472 + (streamed + 3) // 4,
            },
        },
        OVERLOADED_CHUNK,
    ]


def test_stream_error_before_the_message_started_bills_nothing():
    events = _events(_translate([OVERLOADED]))
    assert events[0]["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert events[1:] == [OVERLOADED_CHUNK]


def test_stream_cut_before_message_stop():
    before_delta = ANTHROPIC_SSE.split(b"event: message_delta")[0]
    assert _events(_translate([before_delta])) == EXPECTED[:6]  # no stop reason, no usage: the relay estimates
    before_stop = ANTHROPIC_SSE.split(b"event: message_stop")[0]
    assert _events(_translate([before_stop])) == EXPECTED  # the provider said how it ended


class _FakeUpstream:
    def __init__(self, pieces):
        self.status = 200
        self.released = False
        self.content = self
        self.pieces = pieces

    async def iter_any(self):
        for p in self.pieces:
            await asyncio.sleep(0)
            yield p

    def release(self):
        self.released = True


@pytest.mark.parametrize("client_wants_usage", [True, False])
async def test_translated_stream_through_the_relay_bills_provider_usage(client_wants_usage):
    fake = _FakeUpstream([ANTHROPIC_SSE[i : i + 5] for i in range(0, len(ANTHROPIC_SSE), 5)])
    done = []
    relay = StreamRelay(
        TranslatedStream(fake, StreamTranslator()), client_wants_usage, 9999, lambda u, s: done.append((u, s))
    )
    pump = asyncio.create_task(relay.pump())
    sent = b"".join([piece async for piece in relay.body()])
    await pump
    ((usage, outcome),) = done
    assert (usage.input_tokens, usage.output_tokens, usage.source, outcome) == (
        472,
        89,
        ledger_pb2.USAGE_SOURCE_PROVIDER,
        events_pb2.USAGE_OUTCOME_OK,
    )
    assert (b'"usage"' in sent) == client_wants_usage and sent.endswith(b"data: [DONE]\n\n")
    assert fake.released


# -- errors -----------------------------------------------------------------------------


def _anthropic_error(etype, message):
    return json.dumps({"type": "error", "error": {"type": etype, "message": message}}).encode()


@pytest.mark.parametrize(
    "status, etype, headers, expected",
    [
        (429, "rate_limit_error", {"Retry-After": "7"}, (429, "rate_limit_error", "upstream_rate_limited", "7")),
        (400, "invalid_request_error", {}, (400, "invalid_request_error", "upstream_rejected", None)),
        (413, "request_too_large", {}, (413, "invalid_request_error", "upstream_rejected", None)),
        (401, "authentication_error", {}, (502, "server_error", "upstream_auth_failed", None)),
        (403, "permission_error", {}, (502, "server_error", "upstream_auth_failed", None)),
        (404, "not_found_error", {}, (502, "server_error", "upstream_not_found", None)),
        (500, "api_error", {}, (502, "server_error", "upstream_error", None)),
        (529, "overloaded_error", {}, (503, "server_error", "upstream_overloaded", "1")),
        (503, "api_error", {"Retry-After": "3"}, (503, "server_error", "upstream_overloaded", "3")),
    ],
)
def test_provider_error_mapping(status, etype, headers, expected):
    err = provider_error(
        status, _anthropic_error(etype, "provider says: invalid x-api-key sk-ant-api03-SECRET"), headers
    )
    assert (err.status, err.type, err.code, err.headers.get("Retry-After")) == expected
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}
    if status in (401, 403, 404):
        assert "SECRET" not in err.message and "provider says" not in err.message
    elif status == 400:
        assert err.message.startswith("provider says")


def test_provider_error_without_a_json_body():
    err = provider_error(502, b"<html>Bad gateway</html>", {})
    assert (err.status, err.code) == (502, "upstream_error") and "502" in err.message
    err = provider_error(
        400,
        json.dumps({"error": {"message": "bad", "type": "invalid_request_error", "param": "messages"}}).encode(),
        {},
    )
    assert (err.status, err.param, err.message) == (400, "messages", "bad")  # OpenAI-shaped upstream errors too


@pytest.mark.parametrize(
    "headers, seconds",
    [
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_parsing(headers, seconds):
    assert upstream.retry_after_s(headers) == seconds


def test_backoff_grows_is_jittered_and_honours_retry_after_up_to_the_cap():
    for attempt in range(8):
        ceiling = min(upstream.BACKOFF_MAX_S, upstream.BACKOFF_BASE_S * 2**attempt)
        assert ceiling / 2 <= upstream.backoff_s(attempt, None) <= ceiling
    assert 3.0 <= upstream.backoff_s(0, 3.0) <= 3.0 + upstream.BACKOFF_BASE_S
    assert upstream.backoff_s(0, upstream.RETRY_AFTER_CAP_S + 1) is None


# -- retries against a local server -------------------------------------------------------


class Provider:
    """A scripted provider: each attempt takes the next answer (the last one repeats)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.attempts = 0
        self.bodies = []
        self.headers = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        self.bodies.append(await request.json())
        self.headers.append(dict(request.headers))
        answer = self.answers[min(self.attempts, len(self.answers)) - 1]
        return await answer(request)


def status(code, etype="api_error", headers=None):
    async def answer(request):
        return web.json_response(
            {"type": "error", "error": {"type": etype, "message": f"{etype} here"}}, status=code, headers=headers
        )

    return answer


def message(text="Hello"):
    async def answer(request):
        return web.json_response(
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-haiku-4-5",
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 7, "output_tokens": 1},
            }
        )

    return answer


def sse_then_drop():
    async def answer(request):
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(ANTHROPIC_SSE[:300])
        request.transport.close()  # the connection breaks mid-stream
        return resp

    return answer


def slow(seconds):
    async def answer(request):
        await asyncio.sleep(seconds)
        return await message()(request)

    return answer


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(upstream, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(upstream, "BACKOFF_MAX_S", 0.02)


async def _open(provider, body=None, **upstream_fields):
    app = web.Application()
    app.router.add_post("/v1/messages", provider.handle)
    server = TestServer(app)
    await server.start_server()
    fields = {"api": "anthropic", "api_key": "sk-ant-test", **upstream_fields}
    ups = upstream.Upstreams(
        Settings(upstreams={"anthropic": Upstream(base_url=str(server.make_url("/v1")), **fields)})
    )
    await ups.start()
    try:
        body = body or _req()
        resp = await ups.open("/chat/completions", ROUTE, body, stream=body.get("stream") is True)
        data = await resp.read()
        resp.release()
        return resp, data
    finally:
        await ups.close()
        await server.close()


async def test_json_reply_is_translated_and_sent_with_anthropic_headers():
    provider = Provider(message("Bonjour"))
    resp, data = await _open(provider)
    reply = json.loads(data)
    assert reply["choices"][0]["message"]["content"] == "Bonjour" and reply["usage"]["total_tokens"] == 8
    assert (
        provider.headers[0]["x-api-key"] == "sk-ant-test" and provider.headers[0]["anthropic-version"] == "2023-06-01"
    )
    assert provider.bodies[0]["max_tokens"] == 64000


@pytest.mark.parametrize(
    "first",
    [status(429, "rate_limit_error", {"Retry-After": "0"}), status(500), status(529, "overloaded_error"), slow(1.0)],
)
async def test_transient_failure_is_retried_transparently(fast_backoff, first):
    provider = Provider(first, message())
    resp, data = await _open(provider, timeout_s=0.3)
    assert provider.attempts == 2 and json.loads(data)["choices"][0]["message"]["content"] == "Hello"


@pytest.mark.parametrize(
    "answer, expected",
    [
        (status(500), (502, "upstream_error")),
        (status(529, "overloaded_error"), (503, "upstream_overloaded")),
        (status(429, "rate_limit_error"), (429, "upstream_rate_limited")),
        (slow(1.0), (504, "upstream_timeout")),
    ],
)
async def test_persistent_failure_gives_up_after_max_retries(fast_backoff, answer, expected):
    provider = Provider(answer)
    with pytest.raises(errors.APIError) as e:
        await _open(provider, max_retries=3, timeout_s=0.2)
    assert provider.attempts == 4 and (e.value.status, e.value.code) == expected


@pytest.mark.parametrize(
    "answer, expected",
    [
        (status(400, "invalid_request_error"), (400, "upstream_rejected")),
        (status(401, "authentication_error"), (502, "upstream_auth_failed")),
        (status(429, "rate_limit_error", {"Retry-After": "60"}), (429, "upstream_rate_limited")),
    ],
)
async def test_no_retry_for_client_errors_or_a_long_retry_after(fast_backoff, answer, expected):
    provider = Provider(answer, message())
    with pytest.raises(errors.APIError) as e:
        await _open(provider)
    assert provider.attempts == 1 and (e.value.status, e.value.code) == expected
    if e.value.status == 429:
        assert e.value.headers["Retry-After"] == "60"  # passed on to the client


async def test_no_retry_once_the_stream_started(fast_backoff):
    provider = Provider(sse_then_drop(), message())
    with pytest.raises(Disconnected):  # what the relay sees, and bills as upstream_error
        await _open(provider, body=_req(stream=True))
    assert provider.attempts == 1


async def test_unreachable_provider_is_a_502_after_retries(fast_backoff):
    settings = Settings(
        upstreams={"anthropic": Upstream(base_url="http://127.0.0.1:9/v1", api="anthropic", max_retries=1)}
    )
    ups = upstream.Upstreams(settings)
    await ups.start()
    try:
        with pytest.raises(errors.APIError) as e:
            await ups.open("/chat/completions", ROUTE, _req(), stream=False)
    finally:
        await ups.close()
    assert (e.value.status, e.value.code) == (502, "upstream_unreachable")
