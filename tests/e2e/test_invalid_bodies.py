"""Bad input never reaches the inside: a table of invalid bodies across the three metered
endpoints, each a 400 ``invalid_request_error`` naming the field, ``openai.BadRequestError``
from the official SDK, the same behind an OpenAI-compatible and an Anthropic upstream, and
nothing held or charged (balances and the ledger's Reserve count unchanged). Also: a body
that never arrives is a 408 within the body-read timeout, a body nested 100,000 levels
deep a 400, and the mock upstream refuses an invalid body itself, like OpenAI.

Runs on SQLite only: a refused body never reaches a database (that is what it checks),
so the database kind changes nothing here, and the suite's time goes where it does."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from cg_devstack import Stack
from creditgate.ledger.v1 import ledger_pb2
from helpers import client
from support.stacks import stack_on

MODELS = ["gpt-4o-mini", "claude-haiku-4-5"]
USER = [{"role": "user", "content": "hi"}]
BODY_TIMEOUT_S = 1.0
PROVIDER_KEY = "sk-ant-mock-e2e-invalid-bodies"


@pytest.fixture(scope="module", params=["sqlite"])
def stack(request) -> Iterator[Stack]:
    with stack_on(request) as s:
        yield s


@pytest.fixture(scope="module")
def key(seeder):
    return seeder.funded_key(seeder.partner("invalid-bodies", credits=1000), 100, MODELS)


@pytest.fixture(scope="module")
def anthropic_proxy(stack: Stack) -> str:
    """A second proxy of the stack: claude-haiku-4-5 through the mock's Anthropic Messages
    API (the first sends every model to its OpenAI side), and a 1 s body-read timeout."""
    proc, url = stack.start_replica(
        "proxy",
        "proxy-strict",
        {
            "CG_PROXY_UPSTREAMS__ANTHROPIC__BASE_URL": f"http://127.0.0.1:{stack.ports['mock']}/anthropic/v1",
            "CG_PROXY_UPSTREAMS__ANTHROPIC__API": "anthropic",
            "CG_PROXY_UPSTREAMS__ANTHROPIC__API_KEY": PROVIDER_KEY,
            "CG_PROXY_BODY_READ_TIMEOUT_S": str(BODY_TIMEOUT_S),
        },
    )
    yield url
    proc.stop()


def _reserve_calls(stack: Stack) -> float:
    """Reserve calls the ledger has answered so far (any outcome), from its metrics."""
    text = httpx.get(f"http://127.0.0.1:{stack.ports['ledger_metrics']}/metrics", timeout=5).text
    return sum(
        float(v) for v in re.findall(r'^cg_grpc_server_handled_total\{[^}]*method="Reserve"[^}]*\} (\S+)$', text, re.M)
    )


def _books(seeder, key) -> tuple[Any, ...]:
    def balance(account: str) -> tuple[int, int]:
        b = seeder.ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=account), timeout=5)
        return b.posted_ucr, b.pending_ucr

    return balance(key.account), balance(f"partner:{key.partner_id}")


@pytest.fixture
def untouched(stack, seeder, key):
    """Asserts, after the test, that nothing was reserved and no balance moved."""
    before = (_books(seeder, key), _reserve_calls(stack))
    yield
    assert (_books(seeder, key), _reserve_calls(stack)) == before, "a refused request held or moved money"


# endpoint, fields besides `model`, the `param` OpenAI's API would name
INVALID: list[tuple[str, dict[str, Any], str | None]] = [
    # chat: messages
    ("chat/completions", {"messages": [1, 2]}, "messages[0]"),
    ("chat/completions", {"messages": []}, "messages"),
    ("chat/completions", {"messages": "hi"}, "messages"),
    ("chat/completions", {}, "messages"),
    ("chat/completions", {"messages": [{"content": "hi"}]}, "messages[0].role"),
    ("chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ("chat/completions", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("chat/completions", {"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    ("chat/completions", {"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
    (
        "chat/completions",
        {"messages": [*USER, {"role": "user", "content": [{"type": "text"}]}]},
        "messages[1].content[0].text",
    ),
    (
        "chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content[0].image_url.url",
    ),
    ("chat/completions", {"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id"),
    (
        "chat/completions",
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c1", "type": "function"}]}]},
        "messages[0].tool_calls[0].function",
    ),
    # chat: sampling and counts
    ("chat/completions", {"messages": USER, "temperature": 2.5}, "temperature"),
    ("chat/completions", {"messages": USER, "temperature": -1}, "temperature"),
    ("chat/completions", {"messages": USER, "temperature": "warm"}, "temperature"),
    ("chat/completions", {"messages": USER, "top_p": 1.5}, "top_p"),
    ("chat/completions", {"messages": USER, "n": 0}, "n"),
    ("chat/completions", {"messages": USER, "n": 129}, "n"),
    ("chat/completions", {"messages": USER, "frequency_penalty": 2.1}, "frequency_penalty"),
    ("chat/completions", {"messages": USER, "presence_penalty": -3}, "presence_penalty"),
    ("chat/completions", {"messages": USER, "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ("chat/completions", {"messages": USER, "max_tokens": 0}, "max_tokens"),
    ("chat/completions", {"messages": USER, "max_tokens": 10**30}, "max_tokens"),
    ("chat/completions", {"messages": USER, "max_completion_tokens": "lots"}, "max_completion_tokens"),
    ("chat/completions", {"messages": USER, "stream": "yes"}, "stream"),
    ("chat/completions", {"messages": USER, "stop": ["1", "2", "3", "4", "5"]}, "stop"),
    ("chat/completions", {"messages": USER, "logit_bias": {"50256": 500}}, "logit_bias.50256"),
    ("chat/completions", {"messages": USER, "seed": 2**64}, "seed"),
    # chat: tools and formats
    ("chat/completions", {"messages": USER, "tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    (
        "chat/completions",
        {"messages": USER, "tools": [{"type": "function", "function": {"name": "get weather"}}]},
        "tools[0].function.name",
    ),
    ("chat/completions", {"messages": USER, "tools": [{"type": "function"}]}, "tools[0].function"),
    ("chat/completions", {"messages": USER, "tool_choice": "sometimes"}, "tool_choice"),
    ("chat/completions", {"messages": USER, "response_format": {"type": "yaml"}}, "response_format.type"),
    ("chat/completions", {"messages": USER, "metadata": {"note": "x" * 513}}, "metadata.note"),
    # legacy completions
    ("completions", {}, "prompt"),
    ("completions", {"prompt": {"text": "hi"}}, "prompt"),
    ("completions", {"prompt": ["hi", 3]}, "prompt[1]"),
    ("completions", {"prompt": []}, "prompt"),
    ("completions", {"prompt": "hi", "max_tokens": -5}, "max_tokens"),
    ("completions", {"prompt": "hi", "best_of": 21}, "best_of"),
    ("completions", {"prompt": "hi", "logprobs": 6}, "logprobs"),
    ("completions", {"prompt": "hi", "n": "two"}, "n"),
    ("completions", {"prompt": "hi", "echo": "please"}, "echo"),
    # embeddings
    ("embeddings", {}, "input"),
    ("embeddings", {"input": ""}, "input"),
    ("embeddings", {"input": ["ok", ""]}, "input[1]"),
    ("embeddings", {"input": 42}, "input"),
    ("embeddings", {"input": ["x"] * 2049}, "input"),
    ("embeddings", {"input": "hi", "encoding_format": "int8"}, "encoding_format"),
    ("embeddings", {"input": "hi", "dimensions": 0}, "dimensions"),
    ("embeddings", {"input": "hi", "model": ""}, "model"),
]


@pytest.mark.parametrize("upstream", ["openai", "anthropic"])
@pytest.mark.parametrize("endpoint, fields, param", INVALID)
def test_an_invalid_body_is_400_with_its_param_and_charges_nothing(
    stack, key, anthropic_proxy, untouched, upstream, endpoint, fields, param
):
    url, model = (stack.proxy_url, "gpt-4o-mini") if upstream == "openai" else (anthropic_proxy, "claude-haiku-4-5")
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key=key.secret, max_retries=0, timeout=10)
    with pytest.raises(openai.BadRequestError) as e:
        sdk.post(f"/{endpoint}", body={"model": model, **fields}, cast_to=object)
    assert e.value.status_code == 400 and e.value.response.headers.get("x-request-id")
    error = e.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error["message"]


def test_max_tokens_above_the_model_cap_is_400_like_openai(stack, key, untouched):
    c = client(stack, key.secret)
    for fields in ({"max_tokens": 16_385}, {"max_completion_tokens": 1_000_000}):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model="gpt-4o-mini", messages=USER, **fields)
        error = e.value.response.json()["error"]
        (field,) = fields
        assert error["param"] == field
        assert error["message"].startswith(
            f"{field} is too large: {fields[field]}. This model supports at most 16384 completion tokens"
        )
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="gpt-4o-mini", prompt="hi", max_tokens=16_385)


def test_unknown_fields_pass_through(stack, seeder):
    """Providers add their own fields: the gateway forwards what it does not know."""
    own = seeder.funded_key(seeder.partner("invalid-bodies-valid", credits=100), 10, ["gpt-4o-mini"])
    reply = client(stack, own.secret).chat.completions.create(
        model="gpt-4o-mini", messages=USER, max_tokens=3, extra_body={"top_k": 5, "vendor": {"x": [1, None]}}
    )
    assert reply.choices[0].message.content == "Hello from the"


def _raw_post(url: str, secret: str, raw: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return httpx.post(
        f"{url}{path}",
        content=raw,
        timeout=30,
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )


def test_a_body_nested_100000_levels_deep_is_400_not_500(stack, key, untouched):
    raw = b'{"model": "gpt-4o-mini", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = _raw_post(stack.proxy_url, key.secret, raw)
    assert r.status_code == 400 and r.headers["x-request-id"], r.text
    assert "nested too deeply" in r.json()["error"]["message"]
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "top_p": -Infinity}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 1e400}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]',
        b'[{"model": "gpt-4o-mini"}]',
        b"\xff\xfe",
    ],
)
def test_what_is_not_json_is_400_without_param(stack, key, untouched, raw):
    """NaN and Infinity (the SDK refuses to send them; Python's json module accepts them)."""
    r = _raw_post(stack.proxy_url, key.secret, raw)
    assert r.status_code == 400 and r.headers["x-request-id"], r.text
    error = r.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", None)


def test_a_body_that_never_arrives_is_408_within_the_timeout(stack, key, anthropic_proxy, untouched):
    port = int(anthropic_proxy.rsplit(":", 1)[1])
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key.secret}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT_S + 10) as sock:
        sock.sendall(head + b'{"model": "gpt-4o-mini"')  # a little of the body, then nothing
        started = time.monotonic()
        received = b""
        while True:  # until the proxy closes the connection (or the socket timeout fails the test)
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        elapsed = time.monotonic() - started
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 408"), received[:200]
    assert BODY_TIMEOUT_S - 0.2 <= elapsed <= BODY_TIMEOUT_S + 5
    headers, _, payload = rest.partition(b"\r\n\r\n")
    assert b"x-request-id:" in headers.lower() and b"connection: close" in headers.lower()
    error = json.loads(payload)["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "request_timeout")


def test_the_mock_upstream_refuses_an_invalid_body_itself(stack):
    """What the proxy forwards is checked again by the provider: the mock, like OpenAI."""
    mock = f"http://127.0.0.1:{stack.ports['mock']}/v1"
    for path, body, param in (
        ("/chat/completions", {"model": "gpt-4o-mini", "messages": [1, 2]}, "messages[0]"),
        ("/chat/completions", {"model": "gpt-4o-mini", "messages": USER, "max_tokens": 16_385}, "max_tokens"),
        ("/completions", {"model": "gpt-4o-mini", "prompt": "hi", "temperature": 3}, "temperature"),
        ("/embeddings", {"model": "text-embedding-3-small", "input": ["ok", ""]}, "input[1]"),
    ):
        r = httpx.post(mock + path, json=body, timeout=10)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["param"]) == ("invalid_request_error", param)
    r = httpx.post(
        mock + "/chat/completions", content=b'{"model": "gpt-4o-mini", "messages": [], "top_p": NaN}', timeout=10
    )
    assert r.status_code == 400 and r.json()["error"]["param"] is None
