"""Fallback between upstreams end to end: the proxy routes provider ``openai`` to one mock
upstream and falls back to a second (``azure``, which knows gpt-4o-mini by another name)
when the first fails with a 503, a 429 or a timeout. The official openai SDK sees a normal
completion, billed once at gpt-4o-mini's price. When both fail the client gets the last
one's error and pays nothing; a client error is not passed on to the fallback.

The two mock upstreams run in this process (uvicorn in a thread each, on free loopback
ports), so a test can switch each one's failure mode and count what it was sent."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn

from cg_devstack import Stack, StackConfig
from cg_mock_upstream.app import create_app
from cg_mock_upstream.replies import REPLY
from creditgate.ledger.v1 import ledger_pb2
from helpers import client, eventually, expected_cost_ucr

MODEL = "gpt-4o-mini"
AZURE_MODEL = "azure-gpt-4o-mini"  # what the fallback upstream calls it
MESSAGES = [{"role": "user", "content": "Hi"}]  # 3 + (3 + 1 word) = 7 prompt tokens; the reply is 16
TIMEOUT_S = 1  # each upstream's timeout; each has max_retries = 1


class MockUpstream:
    """The mock upstream's app on a free loopback port, served from a thread."""

    def __init__(self) -> None:
        self.app = create_app()
        self.posts = 0
        self.models: list[str] = []
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._counting,
            interface="asgi3",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.sock = sock

    @property
    def fail(self) -> str:
        return self.app.state.fail

    @fail.setter
    def fail(self, value: str) -> None:
        self.app.state.fail = value

    async def _counting(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            self.posts += 1
        await self.app(scope, receive, send)

    def __enter__(self) -> MockUpstream:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the mock upstream did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="module")
def upstreams():
    with MockUpstream() as primary, MockUpstream() as azure:
        yield primary, azure


@pytest.fixture(autouse=True)
def working_upstreams(upstreams):
    for mock in upstreams:
        mock.fail, mock.posts = "", 0
    yield
    for mock in upstreams:
        mock.fail = ""


@pytest.fixture(scope="module")
def stack(upstreams):
    primary, azure = upstreams
    env = {
        "CG_PROXY_UPSTREAMS__OPENAI__BASE_URL": f"http://127.0.0.1:{primary.port}/v1",
        "CG_PROXY_UPSTREAMS__OPENAI__FALLBACKS": '["azure"]',
        "CG_PROXY_UPSTREAMS__OPENAI__MAX_RETRIES": "1",
        "CG_PROXY_UPSTREAMS__OPENAI__TIMEOUT_S": str(TIMEOUT_S),
        "CG_PROXY_UPSTREAMS__AZURE__BASE_URL": f"http://127.0.0.1:{azure.port}/v1",
        "CG_PROXY_UPSTREAMS__AZURE__API_KEY_HEADER": "api-key",
        "CG_PROXY_UPSTREAMS__AZURE__API_KEY": "azure-mock-key",
        "CG_PROXY_UPSTREAMS__AZURE__MODELS": f'{{"{MODEL}": "{AZURE_MODEL}"}}',
        "CG_PROXY_UPSTREAMS__AZURE__MAX_RETRIES": "1",
        "CG_PROXY_UPSTREAMS__AZURE__TIMEOUT_S": str(TIMEOUT_S),
    }
    with tempfile.TemporaryDirectory(prefix="cg-fallback-") as var:
        config = StackConfig(var_dir=Path(var), services=("nats", "keys", "ledger", "proxy"), env={"proxy": env})
        with Stack(config) as stack:
            yield stack


@pytest.fixture
def key(seeder, request):
    partner = seeder.partner(f"fallback-{request.node.name}", credits=1000)
    return seeder.funded_key(partner, 100, [MODEL])


def _balance(seeder, key) -> ledger_pb2.GetBalanceResponse:
    return seeder.ledger.GetBalance(ledger_pb2.GetBalanceRequest(account=key.account), timeout=5)


def _settled(seeder, key) -> ledger_pb2.GetBalanceResponse:
    def quiet():
        b = _balance(seeder, key)
        return b if b.pending_ucr == 0 else None

    return eventually(quiet, what="nothing pending")


def _fallbacks(stack) -> float:
    text = httpx.get(stack.proxy_url + "/metrics").text
    pattern = r'^cg_proxy_upstream_fallbacks_total{from_provider="openai",to_provider="azure"} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def _fallback_warnings(stack) -> int:
    return sum(
        '"msg": "upstream failed, falling back"' in line and '"level": "warning"' in line
        for line in stack.procs["proxy"].log_text().splitlines()
    )


@pytest.mark.parametrize(
    "failure, stream",
    [("503", False), ("503", True), ("429", False), ("hang", False)],
    ids=["503", "503-stream", "429", "timeout"],
)
def test_the_fallback_answers_when_the_primary_fails_and_the_request_is_billed_once(
    stack, seeder, key, upstreams, failure, stream
):
    primary, azure = upstreams
    primary.fail = failure
    before = _settled(seeder, key).posted_ucr
    fallbacks_before, warnings_before = _fallbacks(stack), _fallback_warnings(stack)
    sdk = client(stack, key.secret)
    if stream:
        chunks = list(
            sdk.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
        assert chunks[-1].model == AZURE_MODEL
        usage = chunks[-1].usage
    else:
        completion = sdk.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert completion.object == "chat.completion" and completion.choices[0].finish_reason == "stop"
        assert completion.choices[0].message.content == REPLY
        assert completion.model == AZURE_MODEL  # the fallback answered, asked by its own name
        usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 16)
    assert (primary.posts, azure.posts) == (2, 1)  # the primary's retry, then one fallback
    assert _fallbacks(stack) == fallbacks_before + 1
    eventually(lambda: _fallback_warnings(stack) == warnings_before + 1, timeout_s=5, what="one warning logged")

    # billed once, at the price of the model asked for (whichever upstream answered)
    cost = expected_cost_ucr(MODEL, 7, 16)
    eventually(lambda: before - _settled(seeder, key).posted_ucr == cost, what="the request billed")
    time.sleep(0.5)
    assert before - _settled(seeder, key).posted_ucr == cost


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_when_every_upstream_fails_the_client_gets_the_last_error_and_pays_nothing(
    stack, seeder, key, upstreams, stream
):
    primary, azure = upstreams
    primary.fail, azure.fail = "503", "429"
    before = _settled(seeder, key).posted_ucr
    with pytest.raises(openai.RateLimitError) as e:  # azure's 429, not the primary's 503
        client(stack, key.secret).chat.completions.create(model=MODEL, messages=MESSAGES, stream=stream)
    assert e.value.status_code == 429 and e.value.response.headers["retry-after"] == "1"
    body = e.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert (body["error"]["type"], body["error"]["code"]) == ("rate_limit_error", "upstream_rate_limited")
    assert (primary.posts, azure.posts) == (2, 2)
    after = _settled(seeder, key)  # the hold voided
    assert after.posted_ucr == before and after.pending_ucr == 0


def test_a_client_error_is_answered_at_once_without_fallback(stack, seeder, key, upstreams):
    primary, azure = upstreams
    primary.fail = "400"
    before = _settled(seeder, key).posted_ucr
    fallbacks_before = _fallbacks(stack)
    with pytest.raises(openai.BadRequestError) as e:
        client(stack, key.secret).chat.completions.create(model=MODEL, messages=MESSAGES)
    assert e.value.response.json()["error"]["code"] == "upstream_rejected"
    assert (primary.posts, azure.posts) == (1, 0)
    assert _fallbacks(stack) == fallbacks_before
    assert _settled(seeder, key).posted_ucr == before


@pytest.mark.parametrize(
    "fallbacks, message",
    [
        ('["azure"]', "upstream 'openai' lists an unknown fallback 'azure' (configured upstreams: openai)"),
        ('["openai"]', "upstream fallbacks form a cycle: openai -> openai"),
    ],
)
def test_the_proxy_refuses_to_start_with_a_bad_fallback_chain(fallbacks, message):
    env = {
        **os.environ,
        "CG_PROXY_PORT": "1",
        "CG_PROXY_UPSTREAMS__OPENAI__BASE_URL": "http://127.0.0.1:9/v1",
        "CG_PROXY_UPSTREAMS__OPENAI__FALLBACKS": fallbacks,
    }
    done = subprocess.run(
        [sys.executable, "-m", "cg_proxy"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"cg_proxy: invalid upstream settings: {message}"
