"""The thin path, end to end, with the official openai SDK: key -> keys (gRPC) ->
ledger reserve (gRPC) -> mock upstream -> settle -> usage event on JetStream ->
worker. Runs once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from cglib.money import UCR_PER_CREDIT as CREDIT
from helpers import client, eventually, expected_cost_ucr

MODELS = ["gpt-4o-mini", "claude-haiku-4-5"]


@pytest.fixture(scope="module")
def key(seeder, request):
    partner = seeder.partner(f"e2e-{request.node.name}", credits=1_000)
    return seeder.funded_key(partner, 100, MODELS)


def _settled(seeder, account, before):
    b = seeder.ledger.GetBalance(
        __import__("creditgate.ledger.v1.ledger_pb2", fromlist=["x"]).GetBalanceRequest(account=account), timeout=5
    )
    return b if b.pending_ucr == 0 and b.posted_ucr != before else None


def test_sdk_completion_is_billed_exactly_and_reaches_the_worker(stack, seeder, key):
    before = seeder.balance_ucr(key.account)
    raw = client(stack, key.secret).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello in five words"}]
    )
    completion = raw.parse()
    request_id = raw.headers["x-request-id"]
    assert completion.choices[0].message.content.startswith("Hello from the Creditgate mock upstream")
    usage = completion.usage
    cost = expected_cost_ucr("gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens)
    assert cost > 0
    after = eventually(lambda: _settled(seeder, key.account, before), what="settlement")
    assert before - after.posted_ucr == cost

    def event_line():
        for line in stack.procs["worker"].log_text().splitlines():
            if request_id in line and "usage event" in line:
                return json.loads(line)
        return None

    event = eventually(event_line, what="usage event in the worker log")
    assert event["charged_ucr"] == cost and event["key_id"] == key.key_id and event["partner_id"] == key.partner_id
    assert (event["input_tokens"], event["output_tokens"]) == (usage.prompt_tokens, usage.completion_tokens)
    assert event["usage_source"] == "provider" and event["model"] == "gpt-4o-mini"
    assert event["outcome"] == "ok" and event["customer_id"] == ""  # a partner key bills no customer


@pytest.mark.parametrize("include_usage", [True, False])
def test_sdk_stream_is_billed_with_the_provider_usage(stack, seeder, key, include_usage):
    before = seeder.balance_ucr(key.account)
    kwargs = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client(stack, key.secret).chat.completions.create(
            model="claude-haiku-4-5", messages=[{"role": "user", "content": "Hi"}], stream=True, **kwargs
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Hello from the Creditgate mock upstream")
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == (1 if include_usage else 0)
    # the mock's usage for this prompt: 3 + (3 + 1 word) prompt tokens, 16 reply tokens
    cost = expected_cost_ucr("claude-haiku-4-5", 7, 16)
    if include_usage:
        assert (usage_chunks[0].usage.prompt_tokens, usage_chunks[0].usage.completion_tokens) == (7, 16)
    after = eventually(lambda: _settled(seeder, key.account, before), what="settlement")
    assert before - after.posted_ucr == cost


def test_models_are_the_keys_models(stack, key):
    c = client(stack, key.secret)
    assert [m.id for m in c.models.list()] == MODELS
    assert c.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("gpt-4o")


def _error(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_wrong_or_missing_key_is_401(stack):
    with pytest.raises(openai.AuthenticationError) as e:
        client(stack, "sk-cg-" + "x" * 40).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    err = _error(e.value)
    assert err["code"] == "invalid_api_key" and "x" * 20 not in err["message"]
    r = httpx.post(f"{stack.proxy_url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_model_not_allowed_for_the_key_is_404(stack, key):
    with pytest.raises(openai.NotFoundError) as e:
        client(stack, key.secret).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    err = _error(e.value)
    assert (err["code"], err["param"]) == ("model_not_found", "model")


@pytest.mark.parametrize(
    "body, param",
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "gpt-4o-mini"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [], "stream": "yes"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}', "max_tokens"),
    ],
)
def test_malformed_body_is_400(stack, key, body, param):
    r = httpx.post(
        f"{stack.proxy_url}/v1/chat/completions",
        content=body,
        headers={"Authorization": f"Bearer {key.secret}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param


def test_not_enough_credits_is_429_and_charges_nothing(stack, seeder):
    partner = seeder.partner("e2e-poor", credits=10)
    poor = seeder.funded_key(partner, 1, ["claude-haiku-4-5"], name="one credit")
    c = client(stack, poor.secret)
    # without max_tokens the hold is the model's 64,000-token output cap: 32 credits > 1
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}])
    err = _error(e.value)
    assert (err["type"], err["code"]) == ("insufficient_quota", "insufficient_quota")
    assert seeder.balance_ucr(poor.account) == 1 * CREDIT
    # a bounded request fits in the same budget
    ok = c.chat.completions.create(
        model="claude-haiku-4-5", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
    )
    assert ok.usage.completion_tokens == 16


def test_portal_and_metrics_answer(stack):
    assert "Creditgate portal" in httpx.get(stack.bff_url + "/").text
    metrics = httpx.get(stack.proxy_url + "/metrics").text
    assert "cg_proxy_requests_total" in metrics


def test_a_domain_restricted_key_works_only_from_its_domains(stack, seeder):
    partner = seeder.partner("e2e-domains", credits=100)
    key = seeder.funded_key(
        partner, 10, ["gpt-4o-mini"], name="web", allowed_domains=["app.example.com", "*.example.org"]
    )
    c = client(stack, key.secret)
    for origin in ("https://app.example.com", "https://shop.example.org"):
        ok = c.with_options(default_headers={"Origin": origin}).chat.completions.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        assert ok.choices
    for headers in ({"Origin": "https://evil.example.com"}, {}):
        with pytest.raises(openai.PermissionDeniedError) as e:
            c.with_options(default_headers=headers).chat.completions.create(
                model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
        assert _error(e.value)["code"] == "domain_not_allowed"
    # the policy holds on every route, not just chat
    with pytest.raises(openai.PermissionDeniedError):
        c.models.list()
