"""The tenant API over HTTP only, through the stack's own BFF process with real users
(sessions with CSRF, management API tokens), the proxy and the ``openai`` SDK (SQLite
and PostgreSQL): the platform admin makes a partner and deposits its credits; the
partner's owner quotes and creates a key billed to a customer, the key works, then is
topped up, regenerated (the old secret is refused) and revoked (the unused budget is
back, the fee is not); a viewer and a read-only token may read, not write; a customer
sees what hides AI Gateway, then makes a key that works; a suspended partner's keys
are refused until it is resumed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import ROUND_CEILING, Decimal

import openai
import pytest

from cg_devstack import Stack
from cg_devstack.bff import BffClient, BffError
from helpers import client, eventually, expected_cost_ucr
from support import bff
from support.stacks import stack_on

SERVICES = ("nats", "keys", "ledger", "mock", "proxy", "bff")
CREDIT = 1_000_000


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request) -> Iterator[Stack]:
    with stack_on(request, services=SERVICES) as s:
        yield s


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[BffClient]:
    with bff.admin(stack) as c:
        yield c


def status_of(fn) -> tuple[int, str]:
    with pytest.raises(BffError) as e:
        fn()
    body = e.value.response.json()
    return e.value.response.status_code, body["error"]["code"]


def chat(stack: Stack, secret: str) -> openai.types.chat.ChatCompletion:
    return client(stack, secret).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
    )


def new_partner(admin: BffClient, credits: str = "2000") -> str:
    made = admin.ok("POST", "/admin/partners", json={"name": f"HTTP {uuid.uuid4().hex[:6]}", "tier": "growth"})
    admin.ok(
        "POST",
        f"/admin/partners/{made['id']}/deposits",
        json={"amount_credits": credits, "payment_reference": "inv-1"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    return str(made["id"])


def test_a_partner_key_from_quote_to_revoke(stack: Stack, admin: BffClient):
    pid = new_partner(admin)
    with bff.partner_user(stack, pid, "owner", via=admin) as owner:
        me = owner.ok("GET", "/partner")
        assert (me["balance"]["credits"], me["tier"], me["fee_percent"]) == ("2000.000000", "growth", "5")
        quote = owner.ok("POST", "/partner/keys/quote", json={"budget_credits": 1000})
        assert quote["total"]["credits"] == "1050.000000"
        customer = owner.ok("POST", "/partner/customers", json={"name": "Acme", "ai_credits_enabled": True})
        owner.ok(
            "POST",
            f"/partner/customers/{customer['id']}/ai-credits",
            json={"amount": "500"},
            headers={"Idempotency-Key": "grant-1"},
        )
        body = {
            "name": "Acme bot",
            "budget_credits": 1000,
            "allowed_models": ["gpt-4o-mini"],
            "billing": {"customer_id": customer["id"], "profit_multiplier": "2", "price_per_ai_credit_cents": "1"},
        }
        made = owner.ok("POST", "/partner/keys", json=body, headers={"Idempotency-Key": "key-1"})
        key_id, secret = made["key"]["id"], made["secret"]
        assert made["total"]["ucr"] == 1050 * CREDIT
        assert owner.ok("GET", "/partner")["balance"]["ucr"] == 950 * CREDIT

        answer = chat(stack, secret)
        cost = expected_cost_ucr("gpt-4o-mini", answer.usage.prompt_tokens, answer.usage.completion_tokens)
        # settled, and the proxy's budget lease released (it is idle: half a second in tests)
        spent = eventually(
            lambda: (
                (k := owner.ok("GET", f"/partner/keys/{key_id}"))["used"]["ucr"] == cost
                and k["reserved"]["ucr"] == 0
                and k
            ),
            what="settlement",
        )
        assert spent["remaining"]["ucr"] == 1000 * CREDIT - cost

        # the call is in the request log and in the key's hourly series within 2 s, to the µcr
        def logged() -> list[dict]:
            return owner.ok("GET", "/partner/usage/requests", params={"key_id": key_id})["data"]

        [row] = eventually(logged, timeout_s=2, what="the request log")
        assert (row["cost_ucr"], row["model"], row["customer_id"]) == (cost, "gpt-4o-mini", customer["id"])
        assert (row["input_tokens"], row["output_tokens"]) == (
            answer.usage.prompt_tokens,
            answer.usage.completion_tokens,
        )
        charged = 500 * CREDIT - owner.ok("GET", f"/partner/customers/{customer['id']}")["ai_credit_balance"]["uai"]
        assert row["outcome"] == "ok" and row["ai_credits_uai"] == charged > 0
        series = owner.ok("GET", "/partner/usage/series", params={"by": "key", "id": key_id})["points"]
        assert sum(p["cost_ucr"] for p in series) == cost and sum(p["requests"] for p in series) == 1

        topped = owner.ok(
            "POST", f"/partner/keys/{key_id}/top-up", json={"amount_credits": 100}, headers={"Idempotency-Key": "t-1"}
        )
        assert topped["total"]["ucr"] == 105 * CREDIT and topped["key"]["budget"]["ucr"] == 1100 * CREDIT
        rotated = owner.ok("POST", f"/partner/keys/{key_id}/regenerate", headers={"Idempotency-Key": "r-1"})
        with pytest.raises(openai.AuthenticationError):
            chat(stack, secret)
        again = chat(stack, rotated["secret"])
        used = cost + expected_cost_ucr("gpt-4o-mini", again.usage.prompt_tokens, again.usage.completion_tokens)
        eventually(
            lambda: (
                (k := owner.ok("GET", f"/partner/keys/{key_id}"))["used"]["ucr"] == used and k["reserved"]["ucr"] == 0
            ),
            what="settled, and the key's lease released",
        )
        revoked = owner.ok("POST", f"/partner/keys/{key_id}/revoke")
        assert (revoked["used"]["ucr"], revoked["refunded"]["ucr"]) == (used, 1100 * CREDIT - used)
        # deposited 2,000; fees 50 + 5 stay paid; what the requests used is gone; the rest is back
        assert owner.ok("GET", "/partner")["balance"]["ucr"] == 2000 * CREDIT - 55 * CREDIT - used

        # a cookie-authenticated change without the CSRF token is refused
        csrf = owner.request("POST", "/partner/keys", json=body, headers={"Idempotency-Key": "key-2"}, csrf=False)
        assert csrf.status_code == 403 and csrf.json()["error"]["code"] == "csrf_failed"


def test_viewers_and_read_only_tokens_read_but_do_not_write(stack: Stack, admin: BffClient):
    pid = new_partner(admin)
    with bff.partner_user(stack, pid, "owner", via=admin) as owner:
        body = {"name": "k", "budget_credits": 10, "allowed_models": ["gpt-4o-mini"]}
        key = owner.ok("POST", "/partner/keys", json=body, headers={"Idempotency-Key": "k"})["key"]
        with (
            bff.partner_user(stack, pid, "viewer", via=owner) as viewer,
            bff.token_client(stack, owner, "read") as reader,
            bff.token_client(stack, owner, "write") as writer,
        ):
            for who in (viewer, reader):
                assert who.ok("GET", f"/partner/keys/{key['id']}")["id"] == key["id"]
                assert who.ok("GET", "/partner")["balance"]["ucr"] == 2000 * CREDIT - 10_500_000
                create = lambda w=who: w.ok("POST", "/partner/keys", json=body, headers={"Idempotency-Key": "v"})  # noqa: E731
                assert status_of(create) == (403, "forbidden")
                assert status_of(lambda w=who: w.ok("POST", f"/partner/keys/{key['id']}/revoke")) == (403, "forbidden")
            made = writer.ok("POST", "/partner/keys", json=body, headers={"Idempotency-Key": "w"})  # no CSRF: a token
            assert made["secret"].startswith("sk-cg-")
            assert owner.ok("GET", "/partner")["balance"]["ucr"] == (2000 - 21) * CREDIT


def test_a_customer_makes_its_own_key_once_ai_gateway_is_shown(stack: Stack, admin: BffClient):
    pid = new_partner(admin)
    with bff.partner_user(stack, pid, "owner", via=admin) as owner:
        customer = owner.ok("POST", "/partner/customers", json={"name": "Self-serve"})
        with bff.customer_user(stack, owner, customer["id"]) as cust:
            seen = cust.ok("GET", "/customer")["ai_gateway"]
            assert seen["missing"] == ["self_service_disabled", "ai_credits_disabled", "ai_gateway_menu_disabled"]
            owner.ok("PUT", "/partner/self-service", json={"enabled": True, "apply_to_new_customers": False,
                     "default_profit_multiplier": "1.5", "ai_credit_price_cents": "1"})  # fmt: skip
            owner.ok("PATCH", f"/partner/customers/{customer['id']}", json={"ai_credits_enabled": True})
            assert cust.ok("GET", "/customer")["ai_gateway"]["missing"] == ["ai_gateway_menu_disabled"]
            refused = lambda: cust.ok("POST", "/customer/keys", json={"name": "app"}, headers={"Idempotency-Key": "c"})  # noqa: E731
            assert status_of(refused) == (403, "ai_gateway_menu_disabled")
            owner.ok("PATCH", f"/partner/customers/{customer['id']}", json={"ai_gateway_menu_enabled": True})
            owner.ok("POST", f"/partner/customers/{customer['id']}/ai-credits", json={"amount": "50"},
                     headers={"Idempotency-Key": "g"})  # fmt: skip
            made = cust.ok("POST", "/customer/keys", json={"name": "app"}, headers={"Idempotency-Key": "c"})
            usage = chat(stack, made["secret"]).usage
            assert status_of(lambda: cust.ok("GET", "/partner/keys")) == (403, "forbidden")
            # worked out apart from the ledger: the provider's USD x 1.5, in AI credits at 1 cent, rounded up
            usd = (usage.prompt_tokens * Decimal("0.15") + usage.completion_tokens * Decimal("0.60")) / 10**6
            charge_uai = int((usd * Decimal("1.5") / Decimal("0.01") * 10**6).to_integral_value(ROUND_CEILING))
            balance = eventually(
                lambda: (
                    (b := cust.ok("GET", "/customer/balance"))["reserved"]["uai"] == 0
                    and b["balance"]["uai"] < 50 * CREDIT
                    and b
                )  # fmt: skip
            )
            assert balance["balance"]["uai"] == 50 * CREDIT - charge_uai


def test_a_suspended_partner_is_refused_at_the_gateway_until_resumed(stack: Stack, admin: BffClient):
    pid = new_partner(admin)
    with bff.partner_user(stack, pid, "owner", via=admin) as owner:
        body = {"name": "k", "budget_credits": 10, "allowed_models": ["gpt-4o-mini"]}
        secret = owner.ok("POST", "/partner/keys", json=body, headers={"Idempotency-Key": "s"})["secret"]
        assert chat(stack, secret).choices
        admin.ok("PATCH", f"/admin/partners/{pid}", json={"status": "suspended"})

        def refused() -> bool:
            try:
                chat(stack, secret)
            except openai.PermissionDeniedError as e:
                return e.code == "partner_suspended"
            return False

        eventually(refused, timeout_s=2, what="403 partner_suspended")
        assert status_of(lambda: owner.ok("PATCH", f"/admin/partners/{pid}", json={"status": "active"})) == (
            403,
            "forbidden",
        )
        admin.ok("PATCH", f"/admin/partners/{pid}", json={"status": "active"})

        def works() -> bool:
            try:
                return bool(chat(stack, secret).choices)
            except openai.PermissionDeniedError:
                return False

        eventually(works, timeout_s=2, what="the key working again")
