"""RPM and TPM hold across proxy replicas, with OpenAI's headers and 429s."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import openai
import pytest

from cg_devstack import Stack
from cg_devstack.seed import Seeder
from cg_ledger.ratelimits import SLOT_TTL_MS, WINDOW_MS
from helpers import eventually

BODY = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def replica(stack: Stack):
    proc, url = stack.start_replica("proxy", "proxy-rl")
    yield url
    proc.stop()


def post(url: str, secret: str, body: dict = BODY) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30
    )


def test_a_60_rpm_key_gets_60_successes_in_total_from_two_replicas(stack, seeder: Seeder, replica):
    key = seeder.funded_key(seeder.partner("rpm-two-replicas", credits=1_000), 100, ["gpt-4o-mini"], rpm_limit=60)
    urls = [stack.proxy_url, replica] * 45  # 90 requests, half on each replica, all at once
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda url: post(url, key.secret), urls))
    ok = [r for r in replies if r.status_code == 200]
    limited = [r for r in replies if r.status_code == 429]
    assert len(ok) == 60 and len(limited) == 30, [r.status_code for r in replies]
    # x-ratelimit-remaining-requests never promises more than is left: at most 60 - v
    # successes say v or more (so the least says 0). A value may repeat: the key's
    # requests are taken from slots leased to each replica, and a slot given back unused
    # (a lease released) is a request the window has again (docs/leases.md).
    remaining = sorted((int(r.headers["x-ratelimit-remaining-requests"]) for r in ok), reverse=True)
    assert all(v <= 60 - rank for rank, v in enumerate(remaining, 1)), remaining
    assert {r.headers["x-ratelimit-limit-requests"] for r in ok} == {"60"}
    for r in limited:
        error = r.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
        assert "60" in error["message"]
        # when the ledger admits a request again: a leased slot counts until its deadline
        # (SLOT_TTL_MS after the grant), so a full window can take up to 63 s to reopen
        assert 1 <= int(r.headers["Retry-After"]) <= (WINDOW_MS + SLOT_TTL_MS) // 1000
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
        assert "x-request-id" in r.headers


def test_a_refused_request_is_not_charged_and_the_sdk_raises_rate_limit_error(stack, seeder: Seeder, replica):
    key = seeder.funded_key(seeder.partner("rpm-sdk", credits=1_000), 100, ["gpt-4o-mini"], rpm_limit=2)
    client = openai.OpenAI(base_url=f"{replica}/v1", api_key=key.secret, max_retries=0)
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(**BODY)
        assert raw.headers["x-ratelimit-limit-requests"] == "2"
        assert raw.parse().usage.total_tokens > 0
    eventually(lambda: seeder.balance_ucr(key.account) < 100 * 10**6, what="the two settled")
    time.sleep(0.5)
    spent = seeder.balance_ucr(key.account)
    with pytest.raises(openai.RateLimitError) as refused:
        openai.OpenAI(base_url=f"{stack.proxy_url}/v1", api_key=key.secret, max_retries=0).chat.completions.create(
            **BODY
        )
    assert refused.value.code == "rate_limit_exceeded"
    time.sleep(0.5)
    assert seeder.balance_ucr(key.account) == spent  # nothing held, nothing charged


def test_tpm_counts_the_tokens_used_in_the_last_minute(stack, seeder: Seeder, replica):
    key = seeder.funded_key(seeder.partner("tpm", credits=1_000), 100, ["gpt-4o-mini"], tpm_limit=20)
    first = post(stack.proxy_url, key.secret)
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    assert 0 < used < 20 <= 2 * used, used  # two requests reach the limit, one does not
    assert first.headers["x-ratelimit-limit-tokens"] == "20"
    assert first.headers["x-ratelimit-remaining-tokens"] == "20"  # nothing settled before it

    def remaining_tokens_seen_by_replica() -> int:
        # a request's tokens count once it is settled (off the request path)
        r = post(replica, key.secret)
        assert r.status_code == 200, r.text
        return int(r.headers["x-ratelimit-remaining-tokens"])

    assert remaining_tokens_seen_by_replica() in (20, 20 - used)
    eventually(lambda: post(stack.proxy_url, key.secret).status_code == 429, timeout_s=10, what="TPM reached")
    refused = post(replica, key.secret)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "tokens"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_keys_without_limits_get_no_rate_limit_headers(stack, seeder: Seeder):
    key = seeder.funded_key(seeder.partner("no-limits", credits=1_000), 100, ["gpt-4o-mini"])
    r = post(stack.proxy_url, key.secret)
    assert r.status_code == 200
    assert not [h for h in r.headers if h.startswith("x-ratelimit-")]
