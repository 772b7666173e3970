"""The AI Gateway keys table for a partner with 500 keys, in a real browser against the stack
(SQLite; shared with test_portal_admin.py): the keys are made straight through keys' gRPC API
(``CreateKey``, as the BFF's ``POST /partner/keys`` makes them, several at a time; that route
itself is tested in tests/e2e/test_bff_partner_keys.py), then a fresh page load is timed from
navigation to the table's first page of rows. The figure is printed (``keys table: 500 keys
rendered in X ms``), not asserted: on a shared machine a timing is a measurement, not a pass/fail. What is asserted is that the
rows are all there (Load more to the 500th) and that search finds one key by name."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from cg_devstack import Stack
from cg_devstack.seed import Seeder
from creditgate.keys.v1 import keys_pb2
from support import bff
from support.stacks import shared_stack

SERVICES = ("nats", "keys", "ledger", "bff")
KEYS = 500
FIRST_PAGE = 200  # the page's PAGE in src/pages/Gateway.tsx
THREADS = 6
PORTAL = Path(__file__).resolve().parents[2] / "services" / "bff" / "portal" / "dist" / "index.html"
WAIT_MS = 20_000


@pytest.fixture(scope="module", params=["sqlite"])
def stack(request) -> Stack:
    if not PORTAL.is_file():
        pytest.fail(f"{PORTAL} is missing: build the portal first (`make portal`; make test does it)")
    return shared_stack(request, services=SERVICES)


def name_of(i: int) -> str:
    return f"scale key {i:04d}"


def make_keys(stack: Stack, partner_id: str) -> None:
    """KEYS keys of one credit each, funded from the partner's balance, THREADS calls at a time."""
    seeder = Seeder(stack.keys_addr, stack.ledger_addr)

    def make(i: int) -> None:
        seeder.keys.CreateKey(
            keys_pb2.CreateKeyRequest(
                actor=keys_pb2.Actor(partner_id=partner_id),
                idempotency_key=uuid.uuid4().hex,
                fields=keys_pb2.KeyFields(name=name_of(i), allowed_models=["gpt-4o-mini"]),
                budget_credits=1,
            ),
            timeout=30,
        )

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(make, range(KEYS)))
    finally:
        seeder.close()


def test_the_keys_table_with_500_keys(stack: Stack, browser: Browser):
    with bff.admin(stack) as admin:
        made = admin.ok("POST", "/admin/partners", json={"name": f"Scale {uuid.uuid4().hex[:6]}", "tier": "growth"})
        partner_id = str(made["id"])
        admin.ok(
            "POST",
            f"/admin/partners/{partner_id}/deposits",
            json={"amount_credits": "5000", "payment_reference": "inv-scale"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        email = bff.unique_email("owner")
        owner = bff.partner_user(stack, partner_id, "owner", via=admin, email=email)
    try:
        started = time.monotonic()
        make_keys(stack, partner_id)
        made_in = time.monotonic() - started
        assert owner.ok("GET", "/partner/keys", params={"limit": 1})["data"], "no key made"

        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        ctx.set_default_timeout(WAIT_MS)
        try:
            page = ctx.new_page()
            page.goto(stack.bff_url + "/")
            page.get_by_label("Email").fill(email)
            page.get_by_label("Password").fill(bff.PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(stack.bff_url + "/partner/gateway")
            rows = page.locator("[data-key-row]")
            expect(rows).to_have_count(FIRST_PAGE)

            # a fresh load of the page, signed in: navigation start to the first page of rows
            outside = time.perf_counter()
            page.goto(stack.bff_url + "/partner/gateway")
            inside = page.wait_for_function(
                f"document.querySelectorAll('[data-key-row]').length >= {FIRST_PAGE} && performance.now()",
                polling="raf",
            ).json_value()
            outside_ms = (time.perf_counter() - outside) * 1000
            print(
                f"\nkeys table: {KEYS} keys rendered in {inside:.0f} ms"
                f" (first page of {FIRST_PAGE} rows, from navigation start; {outside_ms:.0f} ms around goto;"
                f" {KEYS} keys made over gRPC in {made_in:.1f} s)"
            )
            expect(rows).to_have_count(FIRST_PAGE)
            expect(page.locator(".table-foot")).to_contain_text(f"{FIRST_PAGE} keys shown")

            # all of them are there: Load more up to the 500th
            while rows.count() < KEYS:
                shown = rows.count()
                page.get_by_role("button", name="Load more").click()
                expect(rows).not_to_have_count(shown)
            expect(rows).to_have_count(KEYS)
            expect(page.get_by_role("button", name="Load more")).to_have_count(0)
            names = set(page.locator("[data-key-row] .key-name").all_inner_texts())
            assert names == {name_of(i) for i in range(KEYS)}

            # search finds one by name
            page.get_by_label("Search keys by name or prefix").fill(name_of(321))
            expect(rows).to_have_count(1)
            expect(rows.first.locator(".key-name")).to_have_text(name_of(321))
        finally:
            ctx.close()
    finally:
        owner.close()
