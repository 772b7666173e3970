"""The partner's account through the management API (in-process BFF, real keys, ledger
and NATS; SQLite and PostgreSQL): ``GET /partner`` (tier, fee, balance in credits and
USD, reserved, spent this month), the catalog of its tier, the billing preview, customer
self-service settings, and the statement of its balance (paged and CSV, exact amounts)."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid

import pytest
from bff_tenant import CREDIT, Harness, error, harness

from cglib import natsx
from creditgate.events.v1 import events_pb2
from helpers import eventually
from support.stacks import KEYS_AND_LEDGER, shared_stack


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request):
    return shared_stack(request, KEYS_AND_LEDGER)


@pytest.fixture(scope="module")
def h(stack, tmp_path_factory):
    with harness(stack, tmp_path_factory.mktemp("bff")) as h:
        yield h


@pytest.fixture
def a(h: Harness) -> str:
    pid = h.new_partner(credits=10_000)
    h.partner_user(f"viewer-{pid}", pid, role="viewer")
    h.partner_token(f"read-{pid}", pid, "read")
    return h.partner_user(f"owner-{pid}", pid)


def pid_of(h: Harness, who: str) -> str:
    return h.auth.principals[who].partner_id or ""


def make_key(h: Harness, who: str, budget: int = 1000) -> dict:
    body = {"name": "k", "budget_credits": budget, "allowed_models": ["gpt-4o-mini"]}
    r = h.call(who, "POST", "/partner/keys", body, idem=uuid.uuid4().hex)
    assert r.status_code == 201, r.text
    return r.json()["key"]


def test_the_partner_account(h: Harness, a: str):
    me = h.ok(a, "GET", "/partner")
    assert (me["id"], me["tier"], me["status"], me["fee_rate"], me["fee_percent"]) == (
        pid_of(h, a),
        "growth",
        "active",
        "0.05",
        "5",
    )
    assert me["balance"] == {"ucr": 10_000 * CREDIT, "credits": "10000.000000", "usd": "100.00000000"}
    assert me["available"]["ucr"] == 10_000 * CREDIT
    assert me["reserved"]["ucr"] == me["spent_this_month"]["ucr"] == 0
    assert me["month_started_at"].endswith(("T00:00:00Z", "T00:00:00+00:00")) and me["month_started_at"][8:10] == "01"
    assert me["self_service"]["deposit_per_key"]["credits"] == "1000.000000"

    make_key(h, a, budget=1000)
    after = h.ok(a, "GET", "/partner")
    assert after["balance"]["credits"] == "8950.000000" and after["balance"]["usd"] == "89.50000000"
    assert h.ok(f"viewer-{pid_of(h, a)}", "GET", "/partner")["balance"] == after["balance"]


def test_reserved_counts_the_deposits_of_customer_keys(h: Harness, a: str):
    pid = pid_of(h, a)
    h.ok(
        a,
        "PUT",
        "/partner/self-service",
        {
            "enabled": True,
            "apply_to_new_customers": True,
            "default_profit_multiplier": "1.5",
            "ai_credit_price_cents": "1",
        },
    )
    customer = h.ok(a, "POST", "/partner/customers", {"name": "C", "ai_credits_enabled": True})
    c = h.customer_user(f"c-{pid}", pid, customer["id"])
    h.ok(c, "POST", "/customer/keys", {"name": "mine"}, idem="own-1")
    me = h.ok(a, "GET", "/partner")
    assert me["reserved_key_deposits"]["ucr"] == me["reserved"]["ucr"] == 1000 * CREDIT
    assert me["balance"]["ucr"] == 9_000 * CREDIT  # the deposit left the balance, set aside: reserved


def test_spent_this_month_is_what_the_partners_requests_cost(h: Harness, a: str):
    pid = pid_of(h, a)
    key = make_key(h, a)

    async def publish() -> None:
        nc = await natsx.connect(h.stack.nats_url, "test")
        js = nc.jetstream()
        for cost in (1_234_567, 765_433):
            rid = f"req_{uuid.uuid4().hex}"
            event = events_pb2.UsageEvent(
                request_id=rid,
                key_id=key["id"],
                partner_id=pid,
                model="gpt-4o-mini",
                input_tokens=10,
                output_tokens=5,
                charged_ucr=cost,
                time_unix_ms=int(time.time() * 1000),
            )
            await js.publish(
                natsx.usage_subject(pid, key["id"]), event.SerializeToString(), headers={"Nats-Msg-Id": rid}
            )
        await nc.close()

    asyncio.run(publish())

    def recorded() -> dict | None:
        spent = h.ok(a, "GET", "/partner")["spent_this_month"]
        return spent if spent["ucr"] == 2 * CREDIT else None

    spent = eventually(recorded, what="the usage history")
    assert spent == {"ucr": 2 * CREDIT, "credits": "2.000000", "usd": "0.02000000"}


def test_the_catalog_is_the_tiers_grouped(h: Harness, a: str):
    growth = h.ok(a, "GET", "/partner/models")
    assert growth["tier"] == "growth" and [(g["category"], g["label"]) for g in growth["categories"]] == [
        ("budget", "Budget"),
        ("mid", "Mid tier"),
    ]
    mini = next(m for g in growth["categories"] for m in g["models"] if m["id"] == "gpt-4o-mini")
    assert (mini["input_usd_per_mtok"], mini["output_usd_per_mtok"]) == ("0.15", "0.60")
    starter = h.partner_user("starter-owner", h.new_partner(tier="starter", credits=0))
    assert [g["category"] for g in h.ok(starter, "GET", "/partner/models")["categories"]] == ["budget"]


def test_the_billing_preview(h: Harness, a: str):
    body = {"models": ["gpt-4o-mini"], "profit_multiplier": "2", "price_per_ai_credit_cents": "1"}
    row = h.ok(f"viewer-{pid_of(h, a)}", "POST", "/partner/billing-preview", body)["rows"][0]
    # 1M in + 1M out at 0.15 + 0.60 USD/1M = $0.75 = 75 credits; x2 = $1.50 = 150 AI credits at 1 cent
    assert (row["model"], row["provider_cost"]["credits"], row["customer_price"]["credits"]) == (
        "gpt-4o-mini",
        "75.000000",
        "150.000000",
    )
    assert (row["customer_price_ai_credits"]["ai_credits"], row["partner_margin"]["credits"]) == (
        "150.000000",
        "75.000000",
    )
    floor = h.ok(a, "POST", "/partner/billing-preview", {**body, "floor_usd_per_mtok": "1"})["rows"][0]
    assert floor["customer_price"]["credits"] == "200.000000"  # 2M tokens at the $1/1M floor: $2
    every = h.ok(a, "POST", "/partner/billing-preview", {**body, "models": []})["rows"]
    assert {r["model"] for r in every} >= {"gpt-4o-mini", "claude-haiku-4-5"} and "gpt-4o" not in {
        r["model"] for r in every
    }
    r = h.call(a, "POST", "/partner/billing-preview", {**body, "models": ["gpt-4o"]})
    assert r.status_code == 400 and "models[0]" in error(r)["fields"]
    r = h.call(a, "POST", "/partner/billing-preview", {**body, "profit_multiplier": "0"})
    assert r.status_code == 400 and "profit_multiplier" in error(r)["fields"]


def test_self_service_settings(h: Harness, a: str):
    pid = pid_of(h, a)
    before = h.ok(a, "GET", "/partner/self-service")
    assert not before["enabled"] and (before["default_profit_multiplier"], before["ai_credit_price_cents"]) == (
        "1.5",
        "1",
    )
    old = h.ok(a, "POST", "/partner/customers", {"name": "Old", "ai_credits_enabled": True})
    assert old["ai_gateway"] == {"visible": False, "missing": ["self_service_disabled", "ai_gateway_menu_disabled"]}
    settings = {"enabled": True, "apply_to_new_customers": False, "default_profit_multiplier": "2.25"}
    after = h.ok(
        a,
        "PUT",
        "/partner/self-service",
        {**settings, "ai_credit_price_cents": "0.5", "apply_to_existing_customers": True},
    )
    assert (after["enabled"], after["default_profit_multiplier"], after["ai_credit_price_cents"]) == (
        True,
        "2.25",
        "0.5",
    )
    assert h.ok(a, "GET", f"/partner/customers/{old['id']}")["ai_gateway"] == {"visible": True, "missing": []}
    new = h.ok(a, "POST", "/partner/customers", {"name": "New", "ai_credits_enabled": True})
    assert new["ai_gateway"]["missing"] == ["ai_gateway_menu_disabled"]  # apply to new: off
    for who in (f"viewer-{pid}", f"read-{pid}"):
        r = h.call(who, "PUT", "/partner/self-service", {**settings, "ai_credit_price_cents": "1"})
        assert r.status_code == 403 and error(r)["code"] == "forbidden"
    r = h.call(a, "PUT", "/partner/self-service", {**settings, "ai_credit_price_cents": "-1"})
    assert r.status_code == 400 and "ai_credit_price_cents" in error(r)["fields"]


def test_the_statement_pages_and_exports_every_movement_exactly(h: Harness, a: str):
    pid = pid_of(h, a)
    key = make_key(h, a, budget=1000)
    h.ok(a, "POST", f"/partner/keys/{key['id']}/top-up", {"amount_credits": 3}, idem="s-top")
    h.ok(a, "POST", f"/partner/keys/{key['id']}/revoke")

    entries, cursor = [], None
    while True:
        page = h.ok(a, "GET", "/partner/statement?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        assert len(page["data"]) <= 2
        entries += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    moves = [(e["kind"], e["amount"]["credits"], e["effect"]) for e in entries]
    assert moves == [
        ("refund", "1003.000000", "posted"),
        ("fee", "-0.150000", "posted"),
        ("fund", "-3.000000", "posted"),
        ("fee", "-50.000000", "posted"),
        ("fund", "-1000.000000", "posted"),
        ("deposit", "10000.000000", "posted"),
    ]
    assert {e["key_id"] for e in entries if e["kind"] in ("fund", "refund")} == {key["id"]}
    assert sum(e["amount"]["ucr"] for e in entries) == h.posted(f"partner:{pid}") == 10_000 * CREDIT - 50_150_000
    assert [e["id"] for e in entries] == [e["id"] for e in h.ok(a, "GET", "/partner/statement?limit=200")["data"]]

    r = h.call(f"read-{pid}", "GET", "/partner/statement?format=csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["id", "time", "kind", "effect", "amount_credits", "amount_ucr", "counterparty", "key_id",
                       "request_id", "memo"]  # fmt: skip
    assert [(x[2], x[4], int(x[5])) for x in rows[1:]] == [(k, c, e["amount"]["ucr"]) for (k, c, _), e in zip(moves, entries, strict=True)]  # fmt: skip

    newest = entries[0]["at"]
    since = h.ok(a, "GET", "/partner/statement", params={"from": newest})["data"]
    assert [e["kind"] for e in since] == [e["kind"] for e in entries if e["at"] >= newest]
    assert h.ok(a, "GET", "/partner/statement", params={"to": entries[-1]["at"]})["data"] == []
    r = h.call(a, "GET", "/partner/statement?cursor=eyJ0IjoieCJ9")  # {"t":"x"}
    assert r.status_code == 400 and "cursor" in error(r)["fields"]


def test_a_partner_with_no_movement_has_an_empty_statement(h: Harness):
    fresh = h.partner_user("fresh-owner", h.new_partner(credits=0))
    assert h.ok(fresh, "GET", "/partner/statement") == {"data": [], "next_cursor": None}
    r = h.call(fresh, "GET", "/partner/statement?format=csv")
    assert r.status_code == 200 and r.text.splitlines()[0].startswith("id,time,kind")
    assert h.ok(fresh, "GET", "/partner")["balance"]["ucr"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/partner"),
        ("GET", "/partner/models"),
        ("POST", "/partner/billing-preview"),
        ("GET", "/partner/self-service"),
        ("PUT", "/partner/self-service"),
        ("GET", "/partner/statement"),
    ],
)
def test_only_the_partner_may(h: Harness, a: str, method: str, path: str):
    pid = pid_of(h, a)
    customer = h.ok(a, "POST", "/partner/customers", {"name": "C"})
    c = h.customer_user(f"cu-{pid}", pid, customer["id"])
    assert error(h.call(c, method, path, {}))["code"] == "forbidden"
    assert error(h.call("admin", method, path, {}))["code"] == "forbidden"
    anonymous = h.call(None, method, path, {})
    assert anonymous.status_code == 401 and error(anonymous)["code"] == "unauthenticated"
