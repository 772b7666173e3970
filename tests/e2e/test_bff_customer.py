"""Customers through the management API (in-process BFF, real keys, ledger and NATS;
SQLite and PostgreSQL): the partner's side (list, create, read, change, grant AI
credits, exact and once) and the customer's own (who am I, which condition hides AI
Gateway until all three hold, its pay-as-you-go keys, its AI-credit balance), with
another tenant's ids answered 404 and each side kept off the other's routes."""

from __future__ import annotations

import uuid

import pytest
from bff_tenant import CREDIT, Harness, error, harness

from support.stacks import KEYS_AND_LEDGER, shared_stack

UAI = 1_000_000  # millionths of an AI credit


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request):
    return shared_stack(request, KEYS_AND_LEDGER)


@pytest.fixture(scope="module")
def h(stack, tmp_path_factory):
    with harness(stack, tmp_path_factory.mktemp("bff")) as h:
        yield h


@pytest.fixture
def a(h: Harness) -> str:
    pid = h.new_partner(credits=5_000)
    h.partner_user(f"viewer-{pid}", pid, role="viewer")
    h.partner_token(f"read-{pid}", pid, "read")
    return h.partner_user(f"owner-{pid}", pid)


def pid_of(h: Harness, who: str) -> str:
    return h.auth.principals[who].partner_id or ""


def code(r) -> tuple[int, str]:
    return r.status_code, error(r)["code"]


def test_the_partner_manages_its_customers(h: Harness, a: str):
    made = h.ok(a, "POST", "/partner/customers", {"name": "Acme", "api_access_enabled": True})
    assert (made["name"], made["ai_credits_enabled"], made["api_access_enabled"]) == ("Acme", False, True)
    assert made["ai_credit_balance"] == {"uai": 0, "ai_credits": "0.000000"}
    assert made["ai_gateway"]["missing"] == [
        "self_service_disabled",
        "ai_credits_disabled",
        "ai_gateway_menu_disabled",
    ]
    changed = h.ok(
        a, "PATCH", f"/partner/customers/{made['id']}", {"ai_credits_enabled": True, "ai_gateway_menu_enabled": True}
    )
    assert changed["ai_gateway"]["missing"] == ["self_service_disabled"] and changed["api_access_enabled"]
    assert h.ok(a, "GET", f"/partner/customers/{made['id']}") == changed
    assert code(h.call(a, "PATCH", f"/partner/customers/{made['id']}", {})) == (400, "invalid_request")
    assert code(h.call(a, "PATCH", f"/partner/customers/{made['id']}", {"name": None})) == (400, "invalid_request")

    names = [f"Cust {i}" for i in range(4)]
    for n in names:
        h.ok(a, "POST", "/partner/customers", {"name": n})
    seen, cursor = [], None
    while True:
        page = h.ok(a, "GET", "/partner/customers?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        seen += [c["name"] for c in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["Acme", *names]
    assert [c["name"] for c in h.ok(a, "GET", "/partner/customers?q=cust 2")["data"]] == ["Cust 2"]

    # a retried create with the same Idempotency-Key answers the first customer
    one = h.ok(a, "POST", "/partner/customers", {"name": "Once"}, idem="cust-1")
    two = h.ok(a, "POST", "/partner/customers", {"name": "Once"}, idem="cust-1")
    assert one["id"] == two["id"]
    assert code(h.call(a, "POST", "/partner/customers", {"name": "Other"}, idem="cust-1")) == (
        409,
        "idempotency_key_reused",
    )


def test_granting_ai_credits_is_exact_and_happens_once(h: Harness, a: str):
    pid = pid_of(h, a)
    customer = h.ok(a, "POST", "/partner/customers", {"name": "Granted", "ai_credits_enabled": True})
    path = f"/partner/customers/{customer['id']}/ai-credits"
    assert code(h.call(a, "POST", path, {"amount": "12.5"})) == (400, "idempotency_key_required")
    first = h.ok(a, "POST", path, {"amount": "12.5", "memo": "invoice 7"}, idem="g-1")
    assert first["granted"] == {"uai": 12_500_000, "ai_credits": "12.500000"} and not first["replayed"]
    retry = h.ok(a, "POST", path, {"amount": "12.5", "memo": "invoice 7"}, idem="g-1")
    assert retry["replayed"] and retry["balance"]["uai"] == 12_500_000 and retry["transfer_id"] == first["transfer_id"]
    assert code(h.call(a, "POST", path, {"amount": "13"}, idem="g-1")) == (409, "idempotency_key_reused")
    more = h.ok(a, "POST", path, {"amount": "0.000001"}, idem="g-2")
    assert more["balance"] == {"uai": 12_500_001, "ai_credits": "12.500001"}
    assert h.posted(f"customer:{customer['id']}") == 12_500_001
    assert h.posted(f"partner:{pid}") == 5_000 * CREDIT  # AI credits come from outside
    r = h.call(a, "POST", path, {"amount": "0.0000001"}, idem="g-3")  # finer than a millionth
    assert r.status_code == 400 and "amount" in error(r)["fields"]
    for bad in ("0", "-1", "abc", "1000000001"):
        assert h.call(a, "POST", path, {"amount": bad}, idem=f"bad-{bad}").status_code == 400
    assert h.ok(a, "GET", f"/partner/customers/{customer['id']}")["ai_credit_balance"]["ai_credits"] == "12.500001"


def test_another_partners_customer_is_not_found_and_readers_cannot_write(h: Harness, a: str):
    pid = pid_of(h, a)
    mine = h.ok(a, "POST", "/partner/customers", {"name": "Mine"})
    b = h.partner_user(f"b-{pid}", h.new_partner())
    for method, path, body, idem in (
        ("GET", "/partner/customers/{}", None, None),
        ("PATCH", "/partner/customers/{}", {"name": "taken"}, None),
        ("POST", "/partner/customers/{}/ai-credits", {"amount": "1"}, "steal"),
    ):
        theirs = h.call(b, method, path.format(mine["id"]), body, idem)
        nobodys = h.call(b, method, path.format("cus_doesnotexist"), body, idem)
        assert code(theirs) == code(nobodys) == (404, "not_found"), (method, path)
        assert error(theirs)["message"] == error(nobodys)["message"]
    assert (
        h.posted(f"customer:{mine['id']}") == 0 and h.ok(a, "GET", f"/partner/customers/{mine['id']}")["name"] == "Mine"
    )
    assert h.ok(b, "GET", "/partner/customers")["data"] == []
    for reader in (f"viewer-{pid}", f"read-{pid}"):
        assert code(h.call(reader, "POST", "/partner/customers", {"name": "x"})) == (403, "forbidden")
        assert code(h.call(reader, "PATCH", f"/partner/customers/{mine['id']}", {"name": "x"})) == (403, "forbidden")
        grant = h.call(reader, "POST", f"/partner/customers/{mine['id']}/ai-credits", {"amount": "1"}, idem="r")
        assert code(grant) == (403, "forbidden")
        assert h.ok(reader, "GET", f"/partner/customers/{mine['id']}")["id"] == mine["id"]
    assert h.posted(f"customer:{mine['id']}") == 0


def test_the_customer_sees_what_hides_ai_gateway_then_makes_a_key_that_bills_it(h: Harness, a: str):
    pid = pid_of(h, a)
    customer = h.ok(a, "POST", "/partner/customers", {"name": "Self"})
    c = h.customer_user(f"self-{pid}", pid, customer["id"])
    me = h.ok(c, "GET", "/customer")
    assert (me["id"], me["partner_id"], me["name"]) == (customer["id"], pid, "Self")
    assert me["ai_gateway"] == {
        "visible": False,
        "missing": ["self_service_disabled", "ai_credits_disabled", "ai_gateway_menu_disabled"],
    }
    body = {"name": "my app"}
    steps = (
        (
            "PUT",
            "/partner/self-service",
            {
                "enabled": True,
                "apply_to_new_customers": False,
                "default_profit_multiplier": "2",
                "ai_credit_price_cents": "1",
            },
        ),  # fmt: skip
        ("PATCH", f"/partner/customers/{customer['id']}", {"ai_credits_enabled": True}),
        ("PATCH", f"/partner/customers/{customer['id']}", {"ai_gateway_menu_enabled": True}),
    )
    missing = ["self_service_disabled", "ai_credits_disabled", "ai_gateway_menu_disabled"]
    for step, (method, path, change) in enumerate(steps):
        refused = h.call(c, "POST", "/customer/keys", body, idem="mine-1")
        assert code(refused) == (403, missing[step]), refused.text
        assert h.ok(c, "GET", "/customer")["ai_gateway"]["missing"] == missing[step:]
        h.ok(a, method, path, change)
    assert h.ok(c, "GET", "/customer")["ai_gateway"] == {"visible": True, "missing": []}
    assert h.posted(f"partner:{pid}") == 5_000 * CREDIT  # no deposit held for a refused key

    made = h.call(c, "POST", "/customer/keys", body, idem="mine-1")  # the same key: the refusals did not use it up
    assert made.status_code == 201, made.text
    key = made.json()
    assert key["secret"].startswith("sk-cg-") and key["total"]["ucr"] == 1_000 * CREDIT  # the deposit
    assert key["key"]["kind"] == "customer" and key["key"]["budget"] is None
    assert key["key"]["owner_customer_id"] == customer["id"]
    assert key["key"]["billing"]["profit_multiplier"] == "2"  # the partner's self-service terms
    assert "gpt-4o-mini" in key["key"]["allowed_models"] and "gpt-4o" not in key["key"]["allowed_models"]
    assert h.posted(f"partner:{pid}") == 4_000 * CREDIT
    replay = h.ok(c, "POST", "/customer/keys", body, idem="mine-1")
    assert replay["replayed"] and replay["secret"] is None and h.posted(f"partner:{pid}") == 4_000 * CREDIT
    assert code(h.call(c, "POST", "/customer/keys", {"name": "other"}, idem="mine-1")) == (
        409,
        "idempotency_key_reused",
    )
    assert code(h.call(c, "POST", "/customer/keys", body)) == (400, "idempotency_key_required")

    listed = h.ok(c, "GET", "/customer/keys")["data"]
    assert [k["id"] for k in listed] == [key["key"]["id"]]
    assert key["key"]["id"] in {k["id"] for k in h.ok(a, "GET", "/partner/keys")["data"]}

    h.ok(a, "POST", f"/partner/customers/{customer['id']}/ai-credits", {"amount": "3"}, idem="c-g")
    assert h.ok(c, "GET", "/customer/balance") == {
        "customer_id": customer["id"],
        "balance": {"uai": 3 * UAI, "ai_credits": "3.000000"},
        "reserved": {"uai": 0, "ai_credits": "0.000000"},
        "available": {"uai": 3 * UAI, "ai_credits": "3.000000"},
    }

    revoked = h.ok(c, "POST", f"/customer/keys/{key['key']['id']}/revoke")
    assert revoked["status"] == "revoked"
    assert h.posted(f"partner:{pid}") == 5_000 * CREDIT  # the deposit is back
    assert h.ok(c, "GET", "/customer/keys")["data"] == []


def test_a_customer_reaches_only_its_own(h: Harness, a: str):
    pid = pid_of(h, a)
    h.ok(a, "PUT", "/partner/self-service", {"enabled": True, "apply_to_new_customers": True,
                                             "default_profit_multiplier": "1.5", "ai_credit_price_cents": "1"})  # fmt: skip
    one = h.ok(a, "POST", "/partner/customers", {"name": "One", "ai_credits_enabled": True})
    two = h.ok(a, "POST", "/partner/customers", {"name": "Two", "ai_credits_enabled": True})
    c1, c2 = h.customer_user(f"c1-{pid}", pid, one["id"]), h.customer_user(f"c2-{pid}", pid, two["id"])
    k1 = h.ok(c1, "POST", "/customer/keys", {"name": "k1"}, idem=uuid.uuid4().hex)["key"]
    partner_key = h.call(a, "POST", "/partner/keys", {"name": "billed", "budget_credits": 10,
                         "allowed_models": ["gpt-4o-mini"], "billing": {"customer_id": one["id"],
                         "profit_multiplier": "1", "price_per_ai_credit_cents": "1"}}, idem="pk").json()["key"]  # fmt: skip

    assert code(h.call(c2, "POST", f"/customer/keys/{k1['id']}/revoke")) == (404, "not_found")
    assert code(h.call(c2, "POST", "/customer/keys/key_nope/revoke")) == (404, "not_found")
    assert h.ok(c2, "GET", "/customer/keys")["data"] == []
    # a key its partner bills to it: listed for the customer, but the partner's to revoke
    assert {k["id"] for k in h.ok(c1, "GET", "/customer/keys")["data"]} == {k1["id"], partner_key["id"]}
    assert code(h.call(c1, "POST", f"/customer/keys/{partner_key['id']}/revoke")) == (403, "forbidden")

    for method, path in (("GET", "/partner"), ("GET", "/partner/keys"), ("GET", "/partner/customers"),
                         ("POST", f"/partner/customers/{one['id']}/ai-credits"), ("GET", "/admin/partners")):  # fmt: skip
        assert code(h.call(c1, method, path, {"amount": "1"}, idem="x")) == (403, "forbidden"), path
    for method, path in (("GET", "/customer"), ("GET", "/customer/keys"), ("POST", "/customer/keys"),
                         ("POST", f"/customer/keys/{k1['id']}/revoke"), ("GET", "/customer/balance")):  # fmt: skip
        assert code(h.call(a, method, path, {"name": "x"}, idem="y")) == (403, "forbidden"), path
        assert code(h.call("admin", method, path, {"name": "x"}, idem="y")) == (403, "forbidden"), path
        assert code(h.call(None, method, path, {"name": "x"}, idem="y")) == (401, "unauthenticated"), path
    assert h.ok(c1, "GET", "/customer/keys")["data"][0]["status"] == "active"
