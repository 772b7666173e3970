"""The platform admin's pages in a real browser, against the stack (SQLite), with only the
BFF's public API behind them: the admin signs in, creates a partner (a 60-character
name), deposits credits (a form, then a confirmation; a bad amount is said next to the
field and moves nothing; the balance shown rises by the deposit), changes the tier,
suspends and resumes the partner (each confirmed, checked through the API), and reads the
catalog. At phone width nothing overflows. Every state is a screenshot."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from cg_devstack import Stack
from support import bff
from support.stacks import shared_stack

SERVICES = ("nats", "keys", "ledger", "bff")
PORTAL = Path(__file__).resolve().parents[2] / "services" / "bff" / "portal" / "dist" / "index.html"
WAIT_MS = 10_000
CREDIT = 1_000_000


@pytest.fixture(scope="module", params=["sqlite"])
def stack(request) -> Stack:
    if not PORTAL.is_file():
        pytest.fail(f"{PORTAL} is missing: build the portal first (`make portal`; make test does it)")
    return shared_stack(request, services=SERVICES)


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(WAIT_MS)
    yield ctx
    ctx.close()


def sign_in_admin(page: Page, stack: Stack) -> None:
    page.goto(stack.bff_url + "/")
    expect(page).to_have_url(stack.bff_url + "/sign-in")
    page.get_by_label("Email").fill(stack.bff_admin["email"])
    page.get_by_label("Password").fill(stack.bff_admin["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(stack.bff_url + "/admin")


def no_horizontal_overflow(page: Page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"


def test_admin_manages_partners(stack: Stack, context: BrowserContext, shot):
    started = time.monotonic()
    api = bff.admin(stack)
    name = f"Initech {uuid.uuid4().hex[:6]} a partner with a long name for the table."
    name = name + "x" * (60 - len(name))
    assert len(name) == 60
    page = context.new_page()
    sign_in_admin(page, stack)
    expect(page.get_by_role("heading", name="Partners", level=1)).to_be_visible()
    shot(page, "admin-partners")

    # create a partner
    page.locator("[data-open-create-partner]").click()
    dialog = page.locator('dialog[data-dialog="create-partner"]')
    dialog.get_by_label("Partner name").fill(name)
    dialog.get_by_label("Tier").select_option("growth")
    shot(page, "admin-create-partner")
    dialog.locator("[data-submit]").click()
    expect(dialog).to_be_hidden()
    found = api.ok("GET", "/admin/partners", params={"q": name})["data"]
    assert [(p["name"], p["tier"], p["status"]) for p in found] == [(name, "growth", "active")]
    pid = found[0]["id"]
    row = page.locator(f'[data-partner-row="{pid}"]')
    expect(row).to_contain_text("growth")
    expect(row.locator("[data-balance] .money").first).to_have_attribute("data-ucr", "0")

    # deposit: a bad amount is said next to the field and moves nothing
    row.get_by_role("button", name=f"Deposit credits into {name}").click()
    deposit = page.locator('dialog[data-dialog="deposit"]')
    deposit.get_by_label("Credits to deposit").fill("ten")
    deposit.locator("[data-review]").click()
    expect(deposit.locator('[data-field-error="deposit-amount"]')).to_be_visible()
    expect(deposit.locator("[data-deposit-confirm]")).to_have_count(0)
    assert api.ok("GET", f"/admin/partners/{pid}")["balance"]["ucr"] == 0
    shot(page, "admin-deposit-field-error")

    # then the confirmation names the partner and the amount; the balance shown rises
    deposit.get_by_label("Credits to deposit").fill("2500")
    deposit.get_by_label("Payment reference (optional)").fill("inv-2024-001")
    expect(deposit).to_contain_text("$25.00")
    deposit.locator("[data-review]").click()
    expect(deposit.locator("[data-deposit-confirm]")).to_contain_text("2,500 credits")
    expect(deposit.locator("[data-deposit-confirm]")).to_contain_text(name)
    shot(page, "admin-deposit-confirm")
    deposit.locator("[data-confirm]").dblclick()  # one Idempotency-Key per opening: one deposit
    expect(deposit).to_be_hidden()
    expect(row.locator("[data-balance] .money").first).to_have_attribute("data-ucr", str(2500 * CREDIT))
    expect(row.locator("[data-balance]")).to_contain_text("2,500 credits")
    assert api.ok("GET", f"/admin/partners/{pid}")["balance"]["ucr"] == 2500 * CREDIT
    shot(page, "admin-deposited")

    # the tier
    row.get_by_role("button", name=f"Change the tier of {name}").click()
    tier = page.locator('dialog[data-dialog="tier"]')
    tier.get_by_label("Tier").select_option("enterprise")
    tier.locator("[data-confirm]").click()
    expect(tier).to_be_hidden()
    expect(row.locator("[data-tier]")).to_contain_text("enterprise")
    assert api.ok("GET", f"/admin/partners/{pid}")["tier"] == "enterprise"

    # suspend (confirmed, keyboard: Esc cancels first), then resume
    row.get_by_role("button", name=f"Suspend {name}").click()
    suspend = page.locator('dialog[data-dialog="suspend"]')
    expect(suspend).to_contain_text("refused at the gateway")
    page.keyboard.press("Escape")
    expect(suspend).to_be_hidden()
    assert api.ok("GET", f"/admin/partners/{pid}")["status"] == "active"
    row.get_by_role("button", name=f"Suspend {name}").click()
    shot(page, "admin-suspend-confirm")
    suspend.locator("[data-confirm]").click()
    expect(row).to_have_attribute("data-status", "suspended")
    assert api.ok("GET", f"/admin/partners/{pid}")["status"] == "suspended"
    shot(page, "admin-suspended")
    row.get_by_role("button", name=f"Resume {name}").click()
    page.locator('dialog[data-dialog="resume"]').locator("[data-confirm]").click()
    expect(row).to_have_attribute("data-status", "active")
    assert api.ok("GET", f"/admin/partners/{pid}")["status"] == "active"

    # the catalog, read-only
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Catalog").click()
    expect(page.get_by_role("heading", name="Model catalog", level=1)).to_be_visible()
    expect(page.locator('[data-model="gpt-4o-mini"]')).to_be_visible()
    shot(page, "admin-catalog")
    api.close()
    print(f"\nadmin flow: {time.monotonic() - started:.1f}s")


def test_admin_pages_at_phone_width(stack: Stack, browser: Browser, shot):
    with bff.admin(stack) as api:
        api.ok("POST", "/admin/partners", json={"name": "P" * 60, "tier": "starter"})
    for width, height in ((390, 844), (1280, 900)):
        ctx = browser.new_context(viewport={"width": width, "height": height})
        ctx.set_default_timeout(WAIT_MS)
        try:
            page = ctx.new_page()
            sign_in_admin(page, stack)
            expect(page.locator("[data-partner-row]").first).to_be_visible()
            no_horizontal_overflow(page)
            shot(page, f"admin-partners-{width}px")
            page.get_by_role("navigation", name="Main").get_by_role("link", name="Catalog").click()
            expect(page.locator('[data-model="gpt-4o-mini"]')).to_be_visible()
            no_horizontal_overflow(page)
            shot(page, f"admin-catalog-{width}px")
        finally:
            ctx.close()
