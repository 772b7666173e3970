"""A partner the platform admin suspends has every key refused by the proxy (403
``partner_suspended``: its own keys and its customers' keys), at once — the proxies'
key cache is set to a minute here, so only the keys service's events can make it that
fast — and its keys work again when it is resumed. (In-process BFF; keys, ledger, NATS,
the mock provider and the proxy as processes; SQLite and PostgreSQL.)"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from bff_tenant import Harness, harness

from helpers import eventually
from support.stacks import stack_on

SERVICES = ("nats", "keys", "ledger", "mock", "proxy")
BODY = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request):
    with stack_on(request, SERVICES, env={"proxy": {"CG_PROXY_KEY_CACHE_TTL_S": "60"}}) as s:
        yield s


@pytest.fixture(scope="module")
def h(stack, tmp_path_factory):
    with harness(stack, tmp_path_factory.mktemp("bff")) as h:
        yield h


def call(h: Harness, secret: str) -> httpx.Response:
    return httpx.post(
        f"{h.stack.proxy_url}/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {secret}"}, timeout=10
    )


def test_a_suspended_partners_keys_are_refused_until_it_is_resumed(h: Harness):
    pid = h.new_partner(credits=5_000)
    owner = h.partner_user(f"owner-{pid}", pid)
    h.ok(owner, "PUT", "/partner/self-service", {"enabled": True, "apply_to_new_customers": True,
         "default_profit_multiplier": "1.5", "ai_credit_price_cents": "1"})  # fmt: skip
    customer = h.ok(owner, "POST", "/partner/customers", {"name": "C", "ai_credits_enabled": True})
    h.ok(owner, "POST", f"/partner/customers/{customer['id']}/ai-credits", {"amount": "100"}, idem="g")
    c = h.customer_user(f"c-{pid}", pid, customer["id"])
    body = {"name": "k", "budget_credits": 100, "allowed_models": ["gpt-4o-mini"]}
    partner_secret = h.ok(owner, "POST", "/partner/keys", body, idem=uuid.uuid4().hex)["secret"]
    customer_secret = h.ok(c, "POST", "/customer/keys", {"name": "mine"}, idem=uuid.uuid4().hex)["secret"]
    bystander = h.partner_user("bystander", h.new_partner(credits=1_000))
    other_secret = h.ok(bystander, "POST", "/partner/keys", body, idem=uuid.uuid4().hex)["secret"]
    for secret in (partner_secret, customer_secret, other_secret):
        assert call(h, secret).status_code == 200  # and now cached by the proxy, for a minute

    start = time.monotonic()
    h.ok("admin", "PATCH", f"/admin/partners/{pid}", {"status": "suspended"})
    for secret in (partner_secret, customer_secret):
        refused = eventually(lambda s=secret: (r := call(h, s)).status_code == 403 and r, timeout_s=2, what="refusal")
        error = refused.json()["error"]
        assert (error["code"], error["type"]) == ("partner_suspended", "permission_error")
    assert time.monotonic() - start < 5  # well inside the cache's minute: the events did it
    assert call(h, other_secret).status_code == 200  # another partner is untouched
    assert h.ok(owner, "GET", "/partner")["status"] == "suspended"

    h.ok("admin", "PATCH", f"/admin/partners/{pid}", {"status": "active"})
    for secret in (partner_secret, customer_secret):
        eventually(lambda s=secret: call(h, s).status_code == 200, timeout_s=2, what="the key working again")
