"""Upstream fallback: which upstreams a route tries and in what order (fallback chains,
checked at start-up), and ``Upstreams.open`` falling back between two local HTTP servers
when one's retries end in a transient failure — and only then."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from cg_proxy import errors, upstream
from cg_proxy.settings import Settings, Upstream
from creditgate.keys.v1 import keys_pb2

ROUTE = keys_pb2.ModelRoute(id="gpt-4o-mini", provider="openai", upstream_model="gpt-4o-mini", max_output_tokens=1000)


def _up(*fallbacks: str, **fields) -> Upstream:
    return Upstream(base_url="http://127.0.0.1:9/v1", fallbacks=list(fallbacks), **fields)


# -- chain selection ---------------------------------------------------------------------


def test_chains_follow_each_fallbacks_own_fallbacks_in_order_each_upstream_once():
    settings = Settings(
        upstreams={
            "openai": _up("azure", "groq"),
            "azure": _up("together", "groq"),
            "groq": _up(),
            "together": _up(),
        }
    )
    chains = upstream.fallback_chains(settings)
    assert chains["openai"] == ("azure", "together", "groq")  # depth first; groq once
    assert chains["azure"] == ("together", "groq")
    assert chains["groq"] == () and chains[upstream.DEFAULT_UPSTREAM] == ()


def test_a_route_tries_its_providers_upstream_then_the_chain():
    settings = Settings(upstreams={"openai": _up("azure"), "azure": _up(), "anthropic": _up()})
    ups = upstream.Upstreams(settings)
    assert [(n, u) for n, u in ups.chain(ROUTE)] == [
        ("openai", settings.upstreams["openai"]),
        ("azure", settings.upstreams["azure"]),
    ]
    anthropic = keys_pb2.ModelRoute(id="claude-haiku-4-5", provider="anthropic")
    assert [n for n, _ in ups.chain(anthropic)] == ["anthropic"]  # no fallbacks: as before


def test_the_default_upstream_has_a_chain_too_and_keeps_the_routes_provider_name():
    settings = Settings(upstreams={"backup": _up()}, default_upstream=_up("backup"))
    chain = upstream.Upstreams(settings).chain(ROUTE)
    assert [(n, u) for n, u in chain] == [
        ("openai", settings.default_upstream),
        ("backup", settings.upstreams["backup"]),
    ]


@pytest.mark.parametrize(
    "upstreams, message",
    [
        (
            {"openai": _up("azure")},
            "upstream 'openai' lists an unknown fallback 'azure' (configured upstreams: openai)",
        ),
        (
            {"openai": _up("azure"), "azure": _up("gorq"), "groq": _up()},
            "upstream 'azure' lists an unknown fallback 'gorq' (configured upstreams: azure, groq, openai)",
        ),
        ({"openai": _up("openai")}, "upstream fallbacks form a cycle: openai -> openai"),
        (
            {"openai": _up("azure"), "azure": _up("openai")},
            "upstream fallbacks form a cycle: openai -> azure -> openai",
        ),
        ({"a": _up("b"), "b": _up("c"), "c": _up("b")}, "upstream fallbacks form a cycle: a -> b -> c -> b"),
    ],
)
def test_unknown_names_and_cycles_are_refused_at_start_up(upstreams, message):
    settings = Settings(upstreams=upstreams)
    with pytest.raises(ValueError) as e:
        upstream.fallback_chains(settings)
    assert str(e.value) == message
    with pytest.raises(ValueError):
        upstream.Upstreams(settings)


def test_the_default_upstreams_unknown_fallback_is_refused():
    with pytest.raises(ValueError, match="upstream 'default_upstream' lists an unknown fallback 'nope'"):
        upstream.fallback_chains(Settings(default_upstream=_up("nope")))


def test_fallbacks_and_model_names_from_env(monkeypatch):
    monkeypatch.setenv("CG_PROXY_UPSTREAMS__OPENAI__BASE_URL", "https://api.openai.com/v1")
    monkeypatch.setenv("CG_PROXY_UPSTREAMS__OPENAI__FALLBACKS", '["azure"]')
    monkeypatch.setenv("CG_PROXY_UPSTREAMS__AZURE__BASE_URL", "https://r.openai.azure.com/openai/v1")
    monkeypatch.setenv("CG_PROXY_UPSTREAMS__AZURE__MODELS", '{"gpt-4o-mini": "my-gpt-4o-mini"}')
    settings = Settings()
    assert settings.upstreams["openai"].fallbacks == ["azure"] and settings.upstreams["azure"].fallbacks == []
    assert settings.upstreams["azure"].models == {"gpt-4o-mini": "my-gpt-4o-mini"}
    assert upstream.fallback_chains(settings)["openai"] == ("azure",)


def test_an_upstreams_model_names():
    azure = _up(models={"gpt-4o-mini": "my-gpt-4o-mini"})
    body = {"model": "gpt-4o-mini", "messages": []}
    assert upstream.asked_body(azure, body) == {"model": "my-gpt-4o-mini", "messages": []}
    assert body["model"] == "gpt-4o-mini"  # the caller's body is left alone
    assert upstream.asked_body(azure, {"model": "gpt-4o"}) == {"model": "gpt-4o"}


# -- open(): fallback between two local servers -----------------------------------------


class Provider:
    """A scripted OpenAI-compatible provider: each attempt takes the next answer (the last repeats)."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.bodies: list[dict] = []

    @property
    def attempts(self) -> int:
        return len(self.bodies)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        return await self.answers[min(self.attempts, len(self.answers)) - 1](request)


def status(code, headers=None):
    async def answer(request):
        return web.json_response(
            {"error": {"message": f"failed with {code}", "type": "server_error", "param": None, "code": None}},
            status=code,
            headers=headers,
        )

    return answer


def completion(text="Hello"):
    async def answer(request):
        body = await request.json()
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": body["model"],
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())
            return resp
        return web.json_response(
            {
                "id": "c1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
            }
        )

    return answer


def hang():
    async def answer(request):
        await asyncio.sleep(5)
        return await completion()(request)

    return answer


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(upstream, "BACKOFF_BASE_S", 0.01)
    monkeypatch.setattr(upstream, "BACKOFF_MAX_S", 0.02)


@contextlib.asynccontextmanager
async def _served(*providers: Provider):
    servers = []
    try:
        for provider in providers:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", provider.handle)
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            servers.append(server)
        yield [str(s.make_url("/v1")) for s in servers]
    finally:
        for server in servers:
            await server.close()


def _fallbacks_counted(from_provider: str, to_provider: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "cg_proxy_upstream_fallbacks_total", {"from_provider": from_provider, "to_provider": to_provider}
        )
        or 0.0
    )


async def _open(primary: Provider, backup: Provider, body=None, primary_fields=None, backup_fields=None):
    """Opens a gpt-4o-mini request on ``openai`` (``primary``) falling back to ``backup``."""
    async with _served(primary, backup) as (primary_url, backup_url):
        settings = Settings(
            upstreams={
                "openai": Upstream(base_url=primary_url, fallbacks=["backup"], max_retries=1, **(primary_fields or {})),
                "backup": Upstream(base_url=backup_url, max_retries=1, **(backup_fields or {})),
            }
        )
        ups = upstream.Upstreams(settings)
        await ups.start()
        try:
            body = body or {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
            resp = await ups.open("/chat/completions", ROUTE, body, stream=body.get("stream") is True)
            data = await resp.read()
            resp.release()
            return data
        finally:
            await ups.close()


@pytest.mark.parametrize(
    "failure, primary_attempts",
    [
        (status(503), 2),
        (status(500), 2),
        (status(429, {"Retry-After": "0"}), 2),
        (hang(), 2),  # max_retries = 1
        (status(429, {"Retry-After": "60"}), 1),  # too long to wait out: no retry, but a fallback
    ],
    ids=["503", "500", "429", "timeout", "429-long-retry-after"],
)
async def test_a_transient_failure_after_the_retries_falls_back(fast_backoff, failure, primary_attempts):
    primary, backup = Provider(failure), Provider(completion("from the backup"))
    counted = _fallbacks_counted("openai", "backup")
    data = await _open(primary, backup, primary_fields={"timeout_s": 0.2})
    assert json.loads(data)["choices"][0]["message"]["content"] == "from the backup"
    assert primary.attempts == primary_attempts
    assert backup.attempts == 1 and backup.bodies[0]["model"] == "gpt-4o-mini"  # the same model is asked
    assert _fallbacks_counted("openai", "backup") == counted + 1


async def test_an_unreachable_primary_falls_back(fast_backoff):
    backup = Provider(completion("from the backup"))
    async with _served(backup) as (backup_url,):
        ups = upstream.Upstreams(
            Settings(
                upstreams={
                    "openai": Upstream(base_url="http://127.0.0.1:9/v1", fallbacks=["backup"], max_retries=0),
                    "backup": Upstream(base_url=backup_url),
                }
            )
        )
        await ups.start()
        try:
            resp = await ups.open("/chat/completions", ROUTE, {"model": "gpt-4o-mini", "messages": []}, stream=False)
            assert json.loads(await resp.read())["choices"][0]["message"]["content"] == "from the backup"
        finally:
            await ups.close()


async def test_a_stream_falls_back_before_anything_was_sent(fast_backoff):
    primary, backup = Provider(status(503)), Provider(completion("streamed"))
    data = await _open(primary, backup, body={"model": "gpt-4o-mini", "stream": True, "messages": []})
    assert b'"content": "streamed"' in data and data.endswith(b"data: [DONE]\n\n")
    assert (primary.attempts, backup.attempts) == (2, 1)


async def test_the_fallback_is_asked_its_own_name_for_the_model(fast_backoff):
    primary, backup = Provider(status(503)), Provider(completion())
    await _open(primary, backup, backup_fields={"models": {"gpt-4o-mini": "my-gpt-4o-mini"}})
    assert primary.bodies[0]["model"] == "gpt-4o-mini" and backup.bodies[0]["model"] == "my-gpt-4o-mini"


@pytest.mark.parametrize(
    "code, expected",
    [
        (400, (400, "upstream_rejected")),
        (401, (502, "upstream_auth_failed")),
        (404, (502, "upstream_not_found")),
        (422, (422, "upstream_rejected")),
    ],
)
async def test_a_non_transient_error_is_the_answer_at_once_without_fallback(fast_backoff, code, expected):
    primary, backup = Provider(status(code)), Provider(completion())
    counted = _fallbacks_counted("openai", "backup")
    with pytest.raises(errors.APIError) as e:
        await _open(primary, backup)
    assert (e.value.status, e.value.code) == expected
    assert (primary.attempts, backup.attempts) == (1, 0)
    assert _fallbacks_counted("openai", "backup") == counted


async def test_a_fallbacks_non_transient_error_is_the_answer(fast_backoff):
    primary, backup = Provider(status(503)), Provider(status(400), completion())
    with pytest.raises(errors.APIError) as e:
        await _open(primary, backup)
    assert (e.value.status, e.value.code) == (400, "upstream_rejected")
    assert (primary.attempts, backup.attempts) == (2, 1)


async def test_when_every_upstream_fails_the_client_gets_the_last_ones_error(fast_backoff):
    primary, backup = Provider(status(503)), Provider(status(429, {"Retry-After": "60"}))
    with pytest.raises(errors.APIError) as e:
        await _open(primary, backup)
    # the backup's 429 (its Retry-After too long to wait out), not the primary's 503
    assert (e.value.status, e.value.code, e.value.headers) == (429, "upstream_rate_limited", {"Retry-After": "60"})
    assert (primary.attempts, backup.attempts) == (2, 1)


async def test_a_fallback_that_cannot_express_the_request_is_skipped(fast_backoff):
    primary, backup = Provider(status(503)), Provider(completion())
    with pytest.raises(errors.APIError) as e:  # n: 2 is not something Anthropic's API can do
        await _open(
            primary,
            backup,
            backup_fields={"api": "anthropic"},
            body={"model": "gpt-4o-mini", "n": 2, "messages": [{"role": "user", "content": "Hi"}]},
        )
    assert (e.value.status, e.value.code) == (503, "upstream_overloaded")  # the primary's error
    assert (primary.attempts, backup.attempts) == (2, 0)


async def test_a_providers_cookies_are_never_sent_back():
    """One session serves every tenant: a cookie a provider sets on one request must not be
    sent with the next (someone else's)."""
    seen: list[str | None] = []

    async def answer(request):
        seen.append(request.headers.get("Cookie"))
        resp = await completion()(request)
        resp.set_cookie("session", "tenant-a-secret")
        return resp

    provider = Provider(answer)
    async with _served(provider) as (url,):
        url = url.replace("127.0.0.1", "localhost")  # a name (a cookie jar refuses IP addresses)
        ups = upstream.Upstreams(Settings(upstreams={"openai": Upstream(base_url=url)}))
        await ups.start()
        try:
            for _ in range(2):
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
                resp = await ups.open("/chat/completions", ROUTE, body, stream=False)
                await resp.read()
                resp.release()
        finally:
            await ups.close()
    assert seen == [None, None]
