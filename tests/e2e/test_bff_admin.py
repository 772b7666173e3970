"""The platform admin's API (in-process BFF, real keys, ledger and NATS; SQLite and
PostgreSQL): partners (list, create with a tier, change the tier, suspend and resume),
deposits (exact, once per Idempotency-Key, never two partners' keys mixed), the
read-only catalog, the ledger's audit; and nobody else may."""

from __future__ import annotations

import pytest
from bff_tenant import Harness, error, harness

from support.stacks import KEYS_AND_LEDGER, shared_stack


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request):
    return shared_stack(request, KEYS_AND_LEDGER)


@pytest.fixture(scope="module")
def h(stack, tmp_path_factory):
    with harness(stack, tmp_path_factory.mktemp("bff")) as h:
        yield h


def code(r) -> tuple[int, str]:
    return r.status_code, error(r)["code"]


def test_partners_are_created_listed_and_changed(h: Harness):
    made = h.ok(
        "admin", "POST", "/admin/partners", {"name": "Zeta Reseller", "tier": "enterprise", "external_ref": "crm-1"}
    )
    assert (made["name"], made["tier"], made["status"], made["fee_rate"]) == (
        "Zeta Reseller",
        "enterprise",
        "active",
        "0.02",
    )
    assert made["balance"]["ucr"] == 0 and made["external_ref"] == "crm-1"
    again = h.ok(
        "admin", "POST", "/admin/partners", {"name": "Zeta Reseller", "tier": "enterprise", "external_ref": "crm-1"}
    )
    assert again["id"] == made["id"]  # the external reference makes a retry safe
    assert code(h.call("admin", "POST", "/admin/partners", {"name": "Bad", "tier": "gold"})) == (400, "invalid_request")

    changed = h.ok("admin", "PATCH", f"/admin/partners/{made['id']}", {"tier": "starter", "name": "Zeta"})
    assert (changed["tier"], changed["fee_rate"], changed["name"]) == ("starter", "0.10", "Zeta")
    owner = h.partner_user(f"owner-{made['id']}", made["id"])
    assert [g["category"] for g in h.ok(owner, "GET", "/partner/models")["categories"]] == ["budget"]
    assert h.ok(owner, "GET", "/partner")["fee_percent"] == "10"
    bad_tier = h.call("admin", "PATCH", f"/admin/partners/{made['id']}", {"tier": "gold"})
    assert bad_tier.status_code == 400 and "tier" in error(bad_tier)["fields"]
    assert code(h.call("admin", "PATCH", f"/admin/partners/{made['id']}", {})) == (400, "invalid_request")
    assert code(h.call("admin", "PATCH", f"/admin/partners/{made['id']}", {"status": "gone"})) == (
        400,
        "invalid_request",
    )
    assert code(h.call("admin", "PATCH", "/admin/partners/ptn_nope", {"tier": "growth"})) == (404, "not_found")
    assert code(h.call("admin", "GET", "/admin/partners/ptn_nope")) == (404, "not_found")

    suspended = h.ok("admin", "PATCH", f"/admin/partners/{made['id']}", {"status": "suspended"})
    assert suspended["status"] == "suspended" and h.ok(owner, "GET", "/partner")["status"] == "suspended"
    only = h.ok("admin", "GET", "/admin/partners?status=suspended&q=zeta")["data"]
    assert [p["id"] for p in only] == [made["id"]]
    assert h.ok("admin", "PATCH", f"/admin/partners/{made['id']}", {"status": "active"})["status"] == "active"
    assert h.ok("admin", "GET", f"/admin/partners/{made['id']}")["status"] == "active"

    ids = [h.new_partner(credits=0, name=f"Pager {i}") for i in range(3)]
    seen, cursor = [], None
    while True:
        page = h.ok("admin", "GET", "/admin/partners?q=pager&limit=2" + (f"&cursor={cursor}" if cursor else ""))
        seen += [p["id"] for p in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 3


def test_a_deposit_is_exact_once_and_needs_its_idempotency_key(h: Harness):
    pid = h.new_partner(credits=0)
    path = f"/admin/partners/{pid}/deposits"
    assert code(h.call("admin", "POST", path, {"amount_credits": "100"})) == (400, "idempotency_key_required")
    first = h.ok("admin", "POST", path, {"amount_credits": "1234.567891", "payment_reference": "inv_1"}, idem="pay-1")
    assert first["amount"] == {"ucr": 1_234_567_891, "credits": "1234.567891", "usd": "12.34567891"}
    assert (first["replayed"], first["provider"]) == (False, "manual")
    retry = h.ok("admin", "POST", path, {"amount_credits": "1234.567891", "payment_reference": "inv_1"}, idem="pay-1")
    assert retry["replayed"] and retry["balance"]["ucr"] == 1_234_567_891
    assert code(h.call("admin", "POST", path, {"amount_credits": "1"}, idem="pay-1")) == (409, "idempotency_key_reused")
    other = h.new_partner(credits=0)  # the same key for another partner: another request
    r = h.call("admin", "POST", f"/admin/partners/{other}/deposits", {"amount_credits": "1234.567891",
               "payment_reference": "inv_1"}, idem="pay-1")  # fmt: skip
    assert code(r) == (409, "idempotency_key_reused")
    assert h.posted(f"partner:{pid}") == 1_234_567_891 and h.posted(f"partner:{other}") == 0
    # two partners' own keys never meet in the ledger: the same key grants each its own
    a = h.partner_user(f"a-{pid}", pid)
    b = h.partner_user(f"b-{other}", other)
    ca = h.ok(a, "POST", "/partner/customers", {"name": "A's"})
    cb = h.ok(b, "POST", "/partner/customers", {"name": "B's"})
    h.ok(a, "POST", f"/partner/customers/{ca['id']}/ai-credits", {"amount": "1"}, idem="same")
    h.ok(b, "POST", f"/partner/customers/{cb['id']}/ai-credits", {"amount": "2"}, idem="same")
    assert (h.posted(f"customer:{ca['id']}"), h.posted(f"customer:{cb['id']}")) == (1_000_000, 2_000_000)

    assert code(h.call("admin", "POST", "/admin/partners/ptn_nope/deposits", {"amount_credits": "1"}, idem="p")) == (
        404,
        "not_found",
    )
    for bad in ("0", "-5", "0.0000001", "1000000001", "NaN"):
        r = h.call("admin", "POST", path, {"amount_credits": bad}, idem=f"bad-{bad}")
        assert r.status_code == 400 and "amount_credits" in error(r)["fields"], bad
    assert h.posted(f"partner:{pid}") == 1_234_567_891
    assert h.ok("admin", "GET", f"/admin/partners/{pid}")["balance"]["credits"] == "1234.567891"


def test_the_catalog_and_the_audit(h: Harness):
    catalog = h.ok("admin", "GET", "/admin/catalog")
    assert catalog["tier"] is None and [g["category"] for g in catalog["categories"]] == ["budget", "mid", "premium"]
    assert "gpt-4o" in {m["id"] for g in catalog["categories"] for m in g["models"]}
    audit = h.ok("admin", "GET", "/admin/audit")
    assert audit["ok"] and audit["discrepancies"] == [] and audit["accounts"] > 0
    assert {u["unit"] for u in audit["units"]} >= {"credits"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/partners"),
        ("POST", "/admin/partners"),
        ("GET", "/admin/partners/{}"),
        ("PATCH", "/admin/partners/{}"),
        ("POST", "/admin/partners/{}/deposits"),
        ("GET", "/admin/catalog"),
        ("GET", "/admin/audit"),
    ],
)
def test_only_a_platform_admin_may(h: Harness, method: str, path: str):
    pid = h.new_partner(credits=0)
    owner = h.partner_user(f"o-{pid}", pid)
    token = h.partner_token(f"t-{pid}", pid, "write")
    customer = h.ok(owner, "POST", "/partner/customers", {"name": "C"})
    c = h.customer_user(f"c-{pid}", pid, customer["id"])
    body = {"name": "x", "tier": "growth", "amount_credits": "5", "status": "suspended"}
    for who in (owner, token, c):
        assert code(h.call(who, method, path.format(pid), body, idem="k")) == (403, "forbidden"), who
    assert code(h.call(None, method, path.format(pid), body, idem="k")) == (401, "unauthenticated")
    assert h.posted(f"partner:{pid}") == 0 and h.ok("admin", "GET", f"/admin/partners/{pid}")["status"] == "active"
