"""A partner's AI Gateway keys through the management API (in-process BFF, real keys,
ledger and NATS; SQLite and PostgreSQL): exact money on create (budget + fee), top-up,
regenerate and revoke (the unused budget comes back, the fee does not); the
Idempotency-Key (missing, a retry converging, another request under it); the table's
filters, sort and cursor; and who may do what (another partner's key is a 404, a viewer
or a read-only token writing is a 403)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from bff_tenant import CREDIT, Harness, error, harness

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
    """A growth partner with 10,000 credits; its owner is the principal ``a``'s value."""
    pid = h.new_partner(credits=10_000)
    owner = h.partner_user(f"owner-{pid}", pid)
    h.partner_user(f"viewer-{pid}", pid, role="viewer")
    h.partner_token(f"read-{pid}", pid, "read")
    h.partner_token(f"write-{pid}", pid, "write")
    return owner


def pid_of(h: Harness, who: str) -> str:
    return h.auth.principals[who].partner_id or ""


KEY = {"name": "Support bot", "budget_credits": 1000, "allowed_models": ["gpt-4o-mini"]}


def create(h: Harness, who: str, idem: str | None = None, **fields) -> dict:
    r = h.call(who, "POST", "/partner/keys", {**KEY, **fields}, idem=idem or uuid.uuid4().hex)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_key_costs_its_budget_plus_the_fee_and_a_revoke_refunds_the_unused_budget(h: Harness, a: str):
    account = f"partner:{pid_of(h, a)}"
    quote = h.ok(a, "POST", "/partner/keys/quote", {"budget_credits": 1000})
    assert (quote["budget"]["credits"], quote["fee"]["credits"], quote["total"]["credits"]) == (
        "1000.000000",
        "50.000000",
        "1050.000000",
    )
    assert quote["total"]["usd"] == "10.50000000" and quote["fee_rate"] == "0.05"
    assert h.posted(account) == 10_000 * CREDIT  # the quote moved nothing

    made = create(h, a)
    assert made["secret"].startswith("sk-cg-") and not made["replayed"]
    assert (made["total"]["ucr"], made["fee"]["ucr"]) == (1050 * CREDIT, 50 * CREDIT)
    key = made["key"]
    assert key["prefix"] == made["secret"][: len(key["prefix"])]
    assert (key["budget"]["ucr"], key["spent"]["ucr"], key["remaining"]["ucr"]) == (1000 * CREDIT, 0, 1000 * CREDIT)
    assert (key["reserved"]["ucr"], key["used"]["ucr"], key["refunded"]) == (0, 0, None)
    assert h.posted(account) == 8_950 * CREDIT

    topped = h.ok(a, "POST", f"/partner/keys/{key['id']}/top-up", {"amount_credits": 200}, idem="t1")
    assert (topped["amount"]["ucr"], topped["fee"]["ucr"], topped["total"]["ucr"]) == (
        200 * CREDIT,
        10 * CREDIT,
        210 * CREDIT,
    )
    assert topped["key"]["budget"]["ucr"] == 1200 * CREDIT and not topped["replayed"]
    assert h.posted(account) == 8_740 * CREDIT

    revoked = h.ok(a, "POST", f"/partner/keys/{key['id']}/revoke")
    assert revoked["status"] == "revoked" and revoked["refunded"]["ucr"] == 1200 * CREDIT
    assert h.posted(account) == 9_940 * CREDIT  # 10,000 - the fees (50 + 10): they stay paid
    again = h.ok(a, "POST", f"/partner/keys/{key['id']}/revoke")  # changes nothing
    assert again["status"] == "revoked" and h.posted(account) == 9_940 * CREDIT
    late = h.call(a, "POST", f"/partner/keys/{key['id']}/top-up", {"amount_credits": 5}, idem="t2")
    assert r_code(late) == (409, "conflict") and h.posted(account) == 9_940 * CREDIT


def r_code(r) -> tuple[int, str]:
    return r.status_code, error(r)["code"]


def test_the_idempotency_key_makes_one_key_one_funding_and_refuses_another_request(h: Harness, a: str):
    account = f"partner:{pid_of(h, a)}"
    missing = h.call(a, "POST", "/partner/keys", KEY)
    assert r_code(missing) == (400, "idempotency_key_required")
    assert "Idempotency-Key" in error(missing)["fields"]
    assert h.ok(a, "GET", "/partner/keys")["data"] == [] and h.posted(account) == 10_000 * CREDIT

    first = create(h, a, idem="create-1")
    retry = create(h, a, idem="create-1")
    assert retry["replayed"] and retry["secret"] is None and retry["key"]["id"] == first["key"]["id"]
    assert retry["total"]["ucr"] == 1050 * CREDIT
    assert [k["id"] for k in h.ok(a, "GET", "/partner/keys")["data"]] == [first["key"]["id"]]
    assert h.posted(account) == 8_950 * CREDIT

    for other in ({**KEY, "name": "Another"}, {**KEY, "budget_credits": 1001}):
        r = h.call(a, "POST", "/partner/keys", other, idem="create-1")
        assert r_code(r) == (409, "idempotency_key_reused")
    key_id = first["key"]["id"]
    r = h.call(a, "POST", f"/partner/keys/{key_id}/top-up", {"amount_credits": 10}, idem="create-1")
    assert r_code(r) == (409, "idempotency_key_reused")  # another action under the same key
    assert len(h.ok(a, "GET", "/partner/keys")["data"]) == 1 and h.posted(account) == 8_950 * CREDIT

    # top-up: the header is required, a retry tops up once, another amount is refused
    assert r_code(h.call(a, "POST", f"/partner/keys/{key_id}/top-up", {"amount_credits": 10})) == (
        400,
        "idempotency_key_required",
    )
    one = h.ok(a, "POST", f"/partner/keys/{key_id}/top-up", {"amount_credits": 10}, idem="up-1")
    two = h.ok(a, "POST", f"/partner/keys/{key_id}/top-up", {"amount_credits": 10}, idem="up-1")
    assert (one["replayed"], two["replayed"]) == (False, True)
    assert two["key"]["budget"]["ucr"] == 1010 * CREDIT and h.posted(account) == 8_950 * CREDIT - 10_500_000
    r = h.call(a, "POST", f"/partner/keys/{key_id}/top-up", {"amount_credits": 11}, idem="up-1")
    assert r_code(r) == (409, "idempotency_key_reused")

    # regenerate: a retry rotates nothing and shows no secret; the first new secret stands
    assert r_code(h.call(a, "POST", f"/partner/keys/{key_id}/regenerate")) == (400, "idempotency_key_required")
    new = h.ok(a, "POST", f"/partner/keys/{key_id}/regenerate", idem="rot-1")
    same = h.ok(a, "POST", f"/partner/keys/{key_id}/regenerate", idem="rot-1")
    assert new["secret"].startswith("sk-cg-") and new["secret"] != first["secret"] and not new["replayed"]
    assert same["replayed"] and same["secret"] is None and same["key"]["prefix"] == new["key"]["prefix"]
    assert h.posted(account) == 8_950 * CREDIT - 10_500_000


def test_every_create_modal_field_reads_back_and_changes(h: Harness, a: str):
    pid = pid_of(h, a)
    customer = h.ok(a, "POST", "/partner/customers", {"name": "Acme", "ai_credits_enabled": True})
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    made = create(
        h,
        a,
        description="for the help desk",
        allowed_models=["gpt-4o-mini", "claude-haiku-4-5"],
        billing={
            "customer_id": customer["id"],
            "profit_multiplier": "1.5",
            "price_per_ai_credit_cents": "2",
            "floor_usd_per_mtok": "0.5",
        },
        auto_topup={"threshold_usd": "5", "amount_usd": "20"},
        allowed_domains=["app.example.com", "*.example.org"],
        rpm_limit=60,
        tpm_limit=100_000,
        expires_at=expires.isoformat(),
    )["key"]
    got = h.ok(a, "GET", f"/partner/keys/{made['id']}")
    assert got == made
    assert got["description"] == "for the help desk" and got["allowed_models"] == ["gpt-4o-mini", "claude-haiku-4-5"]
    assert got["billing"] == {
        "customer_id": customer["id"],
        "profit_multiplier": "1.5",
        "price_per_ai_credit_cents": "2",
        "floor_usd_per_mtok": "0.5",
    }
    assert got["auto_topup"]["enabled"] and (got["auto_topup"]["threshold_usd"], got["auto_topup"]["amount_usd"]) == (
        "5",
        "20",
    )
    assert got["allowed_domains"] == ["app.example.com", "*.example.org"]
    assert got["rate_limits"] == {"rpm": 60, "tpm": 100_000}
    assert datetime.fromisoformat(got["expires_at"]) == expires and got["kind"] == "partner"
    assert got["min_request"]["ucr"] == 75  # 1 token in and 1 out of gpt-4o-mini: (0.15 + 0.60) x 100

    patched = h.ok(
        a,
        "PATCH",
        f"/partner/keys/{made['id']}",
        {"name": "Renamed", "billing": None, "auto_topup": None, "expires_at": None, "rpm_limit": 0},
    )
    assert (patched["name"], patched["billing"], patched["expires_at"]) == ("Renamed", None, None)
    assert not patched["auto_topup"]["enabled"] and patched["rate_limits"] == {"rpm": 0, "tpm": 100_000}
    assert patched["description"] == "for the help desk"  # not sent: unchanged

    def refused(body: dict, field: str) -> None:
        r = h.call(a, "PATCH", f"/partner/keys/{made['id']}", body)
        assert r.status_code == 400 and field in error(r)["fields"], (body, r.text)

    refused({}, "request")
    refused({"name": None}, "name")
    refused({"allowed_models": ["gpt-4o"]}, "allowed_models[0]")  # a premium model: not in growth
    refused({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at")
    other = h.new_partner()
    other_customer = h.ok(h.partner_user(f"o-{other}", other), "POST", "/partner/customers", {"name": "Theirs"})
    refused(
        {"billing": {"customer_id": other_customer["id"], "profit_multiplier": "1", "price_per_ai_credit_cents": "1"}},
        "billing.customer_id",
    )
    h.ok(a, "POST", f"/partner/keys/{made['id']}/revoke")
    assert r_code(h.call(a, "PATCH", f"/partner/keys/{made['id']}", {"name": "x"})) == (409, "conflict")
    assert h.posted(f"partner:{pid}") == (10_000 - 50) * CREDIT


def test_suspend_and_resume(h: Harness, a: str):
    key = create(h, a)["key"]
    held = h.ok(a, "POST", f"/partner/keys/{key['id']}/suspend", {"note": "paused by finance"})
    assert (held["status"], held["suspension"], held["status_reason"]) == (
        "suspended",
        "by_partner",
        "paused by finance",
    )
    assert h.ok(a, "POST", f"/partner/keys/{key['id']}/suspend")["status"] == "suspended"  # no body: fine
    back = h.ok(a, "POST", f"/partner/keys/{key['id']}/resume")
    assert (back["status"], back["suspension"], back["status_reason"]) == ("active", None, None)
    h.ok(a, "POST", f"/partner/keys/{key['id']}/revoke")
    assert r_code(h.call(a, "POST", f"/partner/keys/{key['id']}/resume")) == (409, "conflict")


def test_the_table_filters_sorts_and_pages_without_repeating(h: Harness, a: str):
    keys = [create(h, a, name=name, budget_credits=budget)["key"] for name, budget in
            (("delta", 10), ("alpha", 40), ("Charlie", 30), ("bravo", 20), ("echo", 50))]  # fmt: skip
    by_id = {k["name"]: k["id"] for k in keys}
    h.ok(a, "POST", f"/partner/keys/{by_id['echo']}/revoke")
    h.ok(a, "POST", f"/partner/keys/{by_id['delta']}/suspend")

    def walk(query: str, limit: int = 2) -> list[str]:
        names, cursor = [], None
        while True:
            page = h.ok(a, "GET", f"/partner/keys?{query}&limit={limit}" + (f"&cursor={cursor}" if cursor else ""))
            assert len(page["data"]) <= limit
            names += [k["name"] for k in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return names

    assert walk("sort=name") == ["alpha", "bravo", "Charlie", "delta"]
    assert walk("sort=-name&include_revoked=true") == ["echo", "delta", "Charlie", "bravo", "alpha"]
    assert walk("sort=created&include_revoked=true", limit=1) == ["delta", "alpha", "Charlie", "bravo", "echo"] or set(
        walk("sort=created&include_revoked=true", limit=1)
    ) == set(by_id)  # created to the second: ties go by id
    assert walk("status=suspended") == ["delta"]
    assert walk("status=revoked") == ["echo"]
    assert walk("q=ALPH") == ["alpha"]
    prefix = h.ok(a, "GET", f"/partner/keys/{by_id['bravo']}")["prefix"]
    assert walk(f"q={prefix}") == ["bravo"]
    assert walk("sort=-spend") and walk("sort=last_used")
    r = h.call(a, "GET", "/partner/keys?sort=name&cursor=bm90LWpzb24")
    assert r.status_code == 400 and "cursor" in error(r)["fields"]
    page = h.ok(a, "GET", "/partner/keys?sort=name&limit=1")
    r = h.call(a, "GET", f"/partner/keys?sort=-name&cursor={page['next_cursor']}")
    assert r.status_code == 400 and "cursor" in error(r)["fields"]
    assert r_code(h.call(a, "GET", "/partner/keys?status=lost")) == (400, "invalid_request")


def test_customer_filter(h: Harness, a: str):
    customer = h.ok(a, "POST", "/partner/customers", {"name": "Billed"})
    billing = {"customer_id": customer["id"], "profit_multiplier": "2", "price_per_ai_credit_cents": "1"}
    billed = create(h, a, name="billed", billing=billing)["key"]
    create(h, a, name="plain")
    listed = h.ok(a, "GET", f"/partner/keys?customer_id={customer['id']}")["data"]
    assert [k["id"] for k in listed] == [billed["id"]]


def test_another_partners_key_is_not_found_and_readers_cannot_write(h: Harness, a: str):
    pid = pid_of(h, a)
    key = create(h, a)["key"]
    b = h.partner_user(f"b-of-{pid}", h.new_partner())
    for method, path, body, idem in (
        ("GET", f"/partner/keys/{key['id']}", None, None),
        ("PATCH", f"/partner/keys/{key['id']}", {"name": "mine now"}, None),
        ("POST", f"/partner/keys/{key['id']}/top-up", {"amount_credits": 1}, "x1"),
        ("POST", f"/partner/keys/{key['id']}/regenerate", None, "x2"),
        ("POST", f"/partner/keys/{key['id']}/revoke", None, None),
        ("POST", f"/partner/keys/{key['id']}/suspend", None, None),
        ("POST", f"/partner/keys/{key['id']}/resume", None, None),
    ):
        theirs, nobodys = h.call(b, method, path, body, idem), h.call(b, method, "/partner/keys/key_nope" + path[len(f"/partner/keys/{key['id']}"):], body, idem)  # fmt: skip
        assert r_code(theirs) == r_code(nobodys) == (404, "not_found"), (method, path)
        assert error(theirs)["message"] == error(nobodys)["message"]  # does not reveal that it exists
    assert h.ok(b, "GET", "/partner/keys")["data"] == []
    assert h.ok(a, "GET", f"/partner/keys/{key['id']}")["name"] == KEY["name"]  # untouched

    writes = (
        ("POST", "/partner/keys", KEY, "w1"),
        ("PATCH", f"/partner/keys/{key['id']}", {"name": "x"}, None),
        ("POST", f"/partner/keys/{key['id']}/top-up", {"amount_credits": 1}, "w2"),
        ("POST", f"/partner/keys/{key['id']}/regenerate", None, "w3"),
        ("POST", f"/partner/keys/{key['id']}/suspend", None, None),
        ("POST", f"/partner/keys/{key['id']}/revoke", None, None),
    )
    for reader in (f"viewer-{pid}", f"read-{pid}"):
        for method, path, body, idem in writes:
            assert r_code(h.call(reader, method, path, body, idem)) == (403, "forbidden"), (reader, method, path)
        assert h.ok(reader, "GET", f"/partner/keys/{key['id']}")["status"] == "active"
        assert h.ok(reader, "POST", "/partner/keys/quote", {"budget_credits": 10})["total"]["credits"] == "10.500000"
    assert h.posted(f"partner:{pid}") == (10_000 - 1050) * CREDIT  # nothing moved
    assert create(h, f"write-{pid}")["key"]["status"] == "active"  # a read-write token may

    customer = h.ok(a, "POST", "/partner/customers", {"name": "C"})
    c = h.customer_user(f"cust-{pid}", pid, customer["id"])
    for method, path, body, idem in (("GET", "/partner/keys", None, None), *writes):
        assert r_code(h.call(c, method, path, body, idem)) == (403, "forbidden"), (method, path)
    for method, path, body, idem in (("GET", "/partner/keys", None, None), *writes):
        assert r_code(h.call(None, method, path, body, idem)) == (401, "unauthenticated"), (method, path)


def test_a_refused_request_does_not_use_its_idempotency_key_up(h: Harness, a: str):
    account = f"partner:{pid_of(h, a)}"
    r = h.call(a, "POST", "/partner/keys", {**KEY, "allowed_models": ["gpt-4o"]}, idem="fix-me")  # not in growth
    assert r.status_code == 400 and "allowed_models[0]" in error(r)["fields"]
    fixed = create(h, a, idem="fix-me")  # the same key, the request fixed
    assert not fixed["replayed"] and fixed["secret"] and h.posted(account) == 8_950 * CREDIT
    broke = h.call(a, "POST", "/partner/keys", {**KEY, "budget_credits": 9_000}, idem="too-much")
    assert r_code(broke) == (409, "conflict")  # the balance cannot pay: refused, and it stays refused
    again = h.call(a, "POST", "/partner/keys", {**KEY, "budget_credits": 9_000}, idem="too-much")
    assert r_code(again) == (409, "conflict") and h.posted(account) == 8_950 * CREDIT
