"""cg_proxy.tokens: the prompt-token upper bound reserved before forwarding.

The ground truth for OpenAI models is the OpenAI cookbook "How to count tokens with
tiktoken", whose examples were checked there against the API's reported prompt tokens.
"""

from __future__ import annotations

import json
import random
import socket

import pytest
import tiktoken
import tiktoken.load
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cg_proxy import tokenizers, tokens
from creditgate.keys.v1 import keys_pb2


def route(model: str, provider: str = "openai") -> keys_pb2.ModelRoute:
    return keys_pb2.ModelRoute(id=model, provider=provider, upstream_model=model)


def bound(body: dict, model: str = "gpt-4o", provider: str = "openai", endpoint: str = "chat") -> int:
    return tokens.prompt_tokens_bound(endpoint, body, json.dumps(body).encode(), route(model, provider))


O200K = tokenizers.encoding("o200k_base")
CL100K = tokenizers.encoding("cl100k_base")


def cookbook_chat_count(enc: tiktoken.Encoding, messages: list[dict]) -> int:
    """The cookbook's num_tokens_from_messages for gpt-3.5-turbo-0125, gpt-4, gpt-4o."""
    n = 3
    for message in messages:
        n += 3
        for key, value in message.items():
            n += len(enc.encode_ordinary(value))
            if key == "name":
                n += 1
    return n


JARGON = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


# -- the shipped encodings --------------------------------------------------------------------


def test_known_token_ids():
    assert O200K.encode_ordinary("hello world") == [24912, 2375]
    assert CL100K.encode_ordinary("hello world") == [15339, 1917]
    assert CL100K.encode_ordinary("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert (O200K.n_vocab, CL100K.n_vocab) == (200019, 100277)


def test_specs_match_the_installed_tiktoken(monkeypatch):
    """Our pat_str, special tokens and sha256 are tiktoken's own (its constructors are
    run with a loader that records what they ask for instead of downloading)."""
    from tiktoken_ext import openai_public

    asked = {}

    def fake_load(url, expected_hash=None):
        asked["url"], asked["hash"] = url, expected_hash
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", fake_load)
    for name, constructor in (("cl100k_base", openai_public.cl100k_base), ("o200k_base", openai_public.o200k_base)):
        spec, theirs = tokenizers._SPECS[name], constructor()
        assert (spec.pat_str, spec.special_tokens) == (theirs["pat_str"], theirs["special_tokens"])
        assert asked["hash"] == spec.sha256
        assert asked["url"].rsplit("/", 1)[1] + ".xz" == spec.file


def test_encodings_load_without_network(monkeypatch, tmp_path):
    """Loading touches neither the network nor tiktoken's download cache."""

    def no_network(*args, **kwargs):
        raise AssertionError("network access while loading an encoding")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(tokenizers, "_loaded", {})
    tokenizers.warm()
    for name in ("cl100k_base", "o200k_base"):
        enc = tokenizers._loaded[name]
        assert enc is not None and enc.name == name
        assert enc.decode(enc.encode_ordinary("offline ✓")) == "offline ✓"
    assert not (tmp_path / "empty-cache").exists()


def test_a_corrupt_file_is_refused_and_the_bound_falls_back(monkeypatch, caplog):
    spec = tokenizers._SPECS["o200k_base"]
    monkeypatch.setitem(
        tokenizers._SPECS, "o200k_base", tokenizers._Spec(spec.file, "0" * 64, spec.pat_str, spec.special_tokens)
    )
    monkeypatch.setattr(tokenizers, "_loaded", {})
    assert tokenizers.encoding("o200k_base") is None
    assert "could not be loaded" in caplog.text
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert bound(body) == len(json.dumps(body).encode())


# -- which models -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider, model, expected",
    [
        ("openai", "gpt-4o", "o200k_base"),
        ("openai", "gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai", "gpt-4.1-nano", "o200k_base"),
        ("openai", "gpt-5-mini", "o200k_base"),
        ("openai", "o1", "o200k_base"),
        ("openai", "o4-mini", "o200k_base"),
        ("openai", "ft:gpt-4o-mini-2024-07-18:org::abc", "o200k_base"),
        ("azure", "gpt-4o", "o200k_base"),
        ("openai", "gpt-4", "cl100k_base"),
        ("openai", "gpt-4-turbo", "cl100k_base"),
        ("openai", "gpt-3.5-turbo", "cl100k_base"),
        ("openai", "text-embedding-3-small", "cl100k_base"),
        ("groq", "gpt-oss-120b", "o200k_base"),
        ("openai", "gpt-image-1", None),
        ("openai", "omni-moderation-latest", None),
        ("anthropic", "claude-sonnet-4-5", None),
        ("groq", "llama-3.3-70b-versatile", None),
        ("mistral", "mistral-small-latest", None),
        ("groq", "openai/gpt-oss-120b", None),
        ("acme", "o1x", None),
    ],
)
def test_encoding_name_for(provider, model, expected):
    assert tokenizers.encoding_name_for(provider, model) == expected


# -- the OpenAI chat rule ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, enc, api_count", [("gpt-4", CL100K, 129), ("gpt-4o", O200K, 124), ("gpt-4o-mini", O200K, 124)]
)
def test_chat_bound_covers_the_api_count(model, enc, api_count):
    assert cookbook_chat_count(enc, JARGON) == api_count  # the rule and the files agree with the API
    b = bound({"model": model, "messages": JARGON, "temperature": 0, "max_tokens": 1}, model)
    assert api_count <= b <= api_count * 1.1 + 24
    assert b < len(json.dumps({"model": model, "messages": JARGON}).encode()) / 3  # the byte rule was ~4x


@pytest.mark.parametrize("model, api_count", [("gpt-4", 105), ("gpt-4o", 101), ("gpt-4o-mini", 101)])
def test_tools_bound_covers_the_api_count(model, api_count):
    b = bound({"model": model, "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS, "temperature": 0}, model)
    assert api_count <= b <= api_count * 2


def test_tool_calls_and_tool_results_count():
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_current_weather", "arguments": json.dumps({"location": "x" * 4000})},
    }
    messages = WEATHER_MESSAGES + [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny " * 500},
    ]
    b = bound({"model": "gpt-4o", "messages": messages, "tools": WEATHER_TOOLS})
    assert b >= len(O200K.encode_ordinary(json.dumps(call))) + len(O200K.encode_ordinary("sunny " * 500))


def test_multimodal_text_parts_count_and_images_get_the_documented_bound():
    text = "Describe this picture in great detail. " * 20
    data_url = "data:image/png;base64," + "A" * 400_000
    body = {
        "model": "gpt-4o",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text},
                    {"type": "image_url", "image_url": {"url": data_url, "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ],
    }
    b = bound(body)
    assert b >= len(O200K.encode_ordinary(text)) + 2 * (85 + 170 * 8)
    assert b < 20_000 < len(json.dumps(body))  # the base64 bytes are not counted as text
    assert bound({**body, "model": "gpt-4o-mini"}, "gpt-4o-mini") >= 2 * (2833 + 5667 * 8)
    unknown_detail = {
        "model": "gpt-5",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "original"}}
                ],
            }
        ],
    }
    assert bound(unknown_detail, "gpt-5") >= tokens._IMAGE_TOKENS_UNKNOWN_DETAIL


def test_audio_and_file_parts_count_their_bytes():
    part = {"type": "input_audio", "input_audio": {"data": "UklGR" * 1000, "format": "wav"}}
    body = {"model": "gpt-4o-audio-preview", "messages": [{"role": "user", "content": [part]}]}
    assert bound(body, "gpt-4o-audio-preview") >= len(json.dumps(part))


def test_text_only_bound_never_exceeds_the_body_size():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert 1 + 3 + 3 <= bound(body) <= len(json.dumps(body).encode())


def test_gpt_oss_gets_the_harmony_preamble():
    body = {"model": "gpt-oss-120b", "messages": [{"role": "user", "content": "hi"}]}
    assert bound(body, "gpt-oss-120b", "groq") > tokens._HARMONY_TOKENS


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "developer", "tool"]), "content": _TEXT},
    optional={"name": st.from_regex(r"[a-z_]{1,12}", fullmatch=True)},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(_MESSAGE, min_size=1, max_size=6), model=st.sampled_from(["gpt-4", "gpt-4o", "gpt-5", "o3"]))
def test_bound_is_at_least_the_cookbook_count(messages, model):
    enc = CL100K if model == "gpt-4" else O200K
    assert bound({"model": model, "messages": messages}, model) >= cookbook_chat_count(enc, messages)


# -- long texts ------------------------------------------------------------------------------------


def test_long_texts_count_exactly_when_they_have_spaces():
    rng = random.Random(7)
    words = ["ledger", "credit,", "réservation", "日本語の", "text", "\n\n", "  ", "🙂", "x=1;", "   indent", "end."]
    text = " ".join(rng.choice(words) for _ in range(60_000))
    for enc in (O200K, CL100K):
        assert tokens.count_text(enc, text) == len(enc.encode_ordinary(text))


@pytest.mark.parametrize("text", ["a" * 300_000, "漢" * 100_000, "!?" * 100_000, " \t" * 100_000])
def test_long_texts_without_spaces_are_bounded(text):
    for enc in (O200K, CL100K):
        assert tokens.count_text(enc, text) >= len(enc.encode_ordinary(text))


def test_a_million_spaces_does_not_panic():
    # tiktoken itself raises pyo3's PanicException (a BaseException) on this in one call
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": " " * 1_000_000}]}
    assert 0 < bound(body) <= len(json.dumps(body))


def test_twenty_thousand_token_prompt():
    rng = random.Random(1)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "ledgers",
        "reserve",
        "credits",
    ]
    text = " ".join(rng.choice(words) for _ in range(20_000))
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": text}]}
    exact = len(O200K.encode_ordinary(text))
    assert exact + 7 <= bound(body, "gpt-4.1") <= exact * 1.05 + 32


# -- completions and embeddings ------------------------------------------------------------------


def test_completions_prompts():
    prompts = ["Say this is a test", "Once upon a time " * 50]
    body = {"model": "gpt-3.5-turbo-instruct", "prompt": prompts, "suffix": "The end."}
    exact = sum(len(CL100K.encode_ordinary(p)) for p in prompts) + len(CL100K.encode_ordinary("The end."))
    assert exact <= bound(body, "gpt-3.5-turbo-instruct", endpoint="completions") <= exact * 1.1 + 16
    ids = {"model": "gpt-3.5-turbo-instruct", "prompt": [[1, 2, 3], [4, 5]]}
    assert 5 <= bound(ids, "gpt-3.5-turbo-instruct", endpoint="completions") <= 5 + 16


def test_embeddings_inputs():
    inputs = ["The food was delicious and the waiter...", "Ünïcödé ✓ 日本"] * 100
    body = {"model": "text-embedding-3-small", "input": inputs, "encoding_format": "float"}
    exact = sum(len(CL100K.encode_ordinary(t)) for t in inputs)
    assert exact <= bound(body, "text-embedding-3-small", endpoint="embeddings") <= exact * 1.05 + 16
    assert (
        bound(
            {"model": "text-embedding-3-small", "input": list(range(300))},
            "text-embedding-3-small",
            endpoint="embeddings",
        )
        >= 300
    )


# -- other providers ---------------------------------------------------------------------------------


def test_other_providers_keep_the_byte_rule():
    body = {"model": "claude-sonnet-4-5", "messages": JARGON}
    raw = json.dumps(body).encode()
    assert tokens.prompt_tokens_bound("chat", body, raw, route("claude-sonnet-4-5", "anthropic")) == len(raw)
    for endpoint, body in (
        ("completions", {"model": "m", "prompt": "hi"}),
        ("embeddings", {"model": "m", "input": ["a"]}),
    ):
        raw = json.dumps(body).encode()
        assert tokens.prompt_tokens_bound(endpoint, body, raw, route("mistral-embed", "mistral")) == len(raw)
    unknown_openai = {"model": "gpt-image-1", "messages": [{"role": "user", "content": "hi"}]}
    assert bound(unknown_openai, "gpt-image-1") == len(json.dumps(unknown_openai).encode())


def test_other_providers_add_images_by_url_and_tool_prompts():
    body = {
        "model": "claude-sonnet-4-5",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            }
        ],
        "tools": WEATHER_TOOLS,
    }
    raw = len(json.dumps(body).encode())
    assert (
        bound(body, "claude-sonnet-4-5", "anthropic") == raw + tokens._OTHER_IMAGE_TOKENS + tokens._OTHER_TOOLS_TOKENS
    )


# -- odd input -----------------------------------------------------------------------------------------

_NESTED: list = []
_cur = _NESTED
for _ in range(5000):
    _cur.append([])
    _cur = _cur[0]

ODD_BODIES = [
    {},
    {"messages": None},
    {"messages": "hello"},
    {"messages": {"role": "user"}},
    {"messages": [1, None, "x", [], {}]},
    {"messages": [{"role": 5, "content": 12.5, "name": None}]},
    {
        "messages": [
            {
                "role": "user",
                "content": [
                    None,
                    1,
                    "s",
                    [],
                    {},
                    {"type": 3},
                    {"type": "text", "text": 7},
                    {"type": "image_url", "image_url": 9},
                    {"type": "image_url"},
                ],
            }
        ]
    },
    {"messages": [{"role": "user", "content": {"text": "a dict"}}]},
    {"messages": [{"role": "user", "content": "x"}], "tools": "not a list", "functions": {"a": 1}},
    {"messages": [{"role": "user", "content": "x"}], "tools": [None, 1, {"type": "function"}]},
    {"messages": [{"role": "user", "content": "x"}] * 100_000},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "y"}] * 100_000}]},
    {"messages": [{"role": "user", "content": "x"}], "response_format": _NESTED},
    {"prompt": None, "input": None},
    {"prompt": [[1, "a"], [None], {}], "input": [[[1]], 3.5, True]},
    {"prompt": list(range(200_000)), "input": ["a"] * 100_000},
]


@pytest.mark.parametrize("body", ODD_BODIES, ids=range(len(ODD_BODIES)))
@pytest.mark.parametrize("endpoint", ["chat", "completions", "embeddings"])
def test_odd_input_never_raises(body, endpoint):
    try:
        raw = json.dumps(body).encode()
    except RecursionError:
        raw = b"{}" * 10_000
    for model, provider in (("gpt-4o", "openai"), ("gpt-4", "openai"), ("claude-haiku-4-5", "anthropic")):
        b = tokens.prompt_tokens_bound(endpoint, body, raw, route(model, provider))
        assert isinstance(b, int) and b >= 0


@pytest.mark.parametrize(
    "body, raw, r",
    [
        ("not a dict", b"xyz", route("gpt-4o")),
        ({"messages": []}, b"abcd", None),
        ({"messages": []}, b"abcd", object()),
    ],
)
def test_odd_arguments_fall_back_to_the_body_size(body, raw, r):
    assert tokens.prompt_tokens_bound("chat", body, raw, r) == len(raw)
    assert tokens.prompt_tokens_bound("images", {"prompt": "x"}, raw, route("gpt-4o")) == len(raw)


def test_a_tiktoken_panic_falls_back_but_interrupts_propagate(monkeypatch):
    PanicException = type("PanicException", (BaseException,), {})  # noqa: N806 (the name pyo3 gives it)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}

    def panics(enc, text):
        raise PanicException("called `Result::unwrap()` on an `Err` value")

    monkeypatch.setattr(tokens, "count_text", panics)
    assert bound(body) == len(json.dumps(body).encode())

    def interrupted(enc, text):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokens, "count_text", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bound(body)
