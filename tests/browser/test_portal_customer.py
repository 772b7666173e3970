"""The customer's white-label portal in a real browser, against the whole stack (SQLite),
with only the BFF's public API behind the page: the partner brands it (name, logo, colour)
and the customer's page shows that branding; the AI Gateway menu item appears only once all
three switches are on (the partner's self-service, the customer's AI Credits, its menu
toggle), and until then the page names each missing one; the customer creates a
pay-as-you-go key (no budget field), its secret from the one-time banner works through the
proxy with the ``openai`` SDK, the usage shown rises, and after a confirmed revoke the
secret is refused. At phone width nothing overflows with long names. Every state is a
screenshot."""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from cg_devstack import Stack
from cg_devstack.bff import BffClient
from e2e.helpers import client, eventually
from support import bff
from support.stacks import shared_stack

SERVICES = ("nats", "keys", "ledger", "mock", "proxy", "bff")
PORTAL = Path(__file__).resolve().parents[2] / "services" / "bff" / "portal" / "dist" / "index.html"
WAIT_MS = 10_000
PRIMARY = "#0b7a3e"
LOGO = (
    "data:image/png;base64,"
    + base64.b64encode(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082"
        )
    ).decode()
)
MISSING = ["self_service_disabled", "ai_credits_disabled", "ai_gateway_menu_disabled"]
SELF_SERVICE = {
    "enabled": True,
    "apply_to_new_customers": False,
    "default_profit_multiplier": "1.5",
    "ai_credit_price_cents": "1",
}


@pytest.fixture(scope="module", params=["sqlite"])
def stack(request) -> Stack:
    if not PORTAL.is_file():
        pytest.fail(f"{PORTAL} is missing: build the portal first (`make portal`; make test does it)")
    return shared_stack(request, services=SERVICES)


class Tenant:
    """A partner (its owner signed in through the API) with one customer and its user."""

    def __init__(self, stack: Stack, admin: BffClient, customer_name: str) -> None:
        made = admin.ok("POST", "/admin/partners", json={"name": f"Globex {uuid.uuid4().hex[:6]}", "tier": "growth"})
        self.id = str(made["id"])
        admin.ok(
            "POST",
            f"/admin/partners/{self.id}/deposits",
            json={"amount_credits": "5000"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        self.owner = bff.partner_user(stack, self.id, "owner", via=admin)
        self.customer = self.owner.ok(
            "POST",
            "/partner/customers",
            json={"name": customer_name, "ai_credits_enabled": False, "ai_gateway_menu_enabled": False},
        )
        self.email = bff.unique_email("cust")
        bff.customer_user(stack, self.owner, self.customer["id"], email=self.email).close()


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Iterator[Tenant]:
    with bff.admin(stack) as admin:
        t = Tenant(stack, admin, "Acme Robotics")
    yield t
    t.owner.close()


@pytest.fixture
def context(browser: Browser, stack: Stack) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.bff_url)
    ctx.set_default_timeout(WAIT_MS)
    yield ctx
    ctx.close()


def sign_in(page: Page, stack: Stack, email: str) -> None:
    page.goto(stack.bff_url + "/")
    expect(page).to_have_url(stack.bff_url + "/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(bff.PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def menu_item(page: Page):
    return page.get_by_role("navigation", name="Main").get_by_role("link", name="AI Gateway")


def missing_shown(page: Page) -> list[str]:
    items = page.locator("[data-gateway-hidden] [data-missing]")
    return [items.nth(i).get_attribute("data-missing") or "" for i in range(items.count())]


def no_horizontal_overflow(page: Page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"


def refused(secret: str, stack: Stack) -> bool:
    try:
        client(stack, secret).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=5
        )
    except (openai.AuthenticationError, openai.PermissionDeniedError):
        return True
    return False


def test_customer_white_label_portal(stack: Stack, tenant: Tenant, context: BrowserContext, shot):
    started = time.monotonic()
    owner, cid = tenant.owner, tenant.customer["id"]
    owner.ok(
        "PUT",
        "/partner/branding",
        json={"display_name": "Globex Cloud AI", "logo_url": LOGO, "primary_color": PRIMARY, "accent_color": "#f2b705"},
    )
    page = context.new_page()
    sign_in(page, stack, tenant.email)
    expect(page).to_have_url(stack.bff_url + "/customer")
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()

    # the partner's branding: its name and logo in place of the product's, its colour as the brand's
    expect(page.locator("[data-brand-name]")).to_contain_text("Globex Cloud AI")
    expect(page.locator("[data-brand-logo]")).to_have_attribute("src", LOGO)
    assert "Creditgate" not in page.locator(".topbar").inner_text()
    fill = page.evaluate("getComputedStyle(document.querySelector('[data-branded]')).getPropertyValue('--brand-fill')")
    assert fill.strip() == PRIMARY
    assert page.evaluate("getComputedStyle(document.querySelector('.topbar')).borderTopColor") == "rgb(11, 122, 62)"

    # all three switches off: no menu item, and the page names each missing condition
    expect(page.locator("[data-gateway-hidden]")).to_be_visible()
    assert missing_shown(page) == MISSING
    expect(menu_item(page)).to_have_count(0)
    expect(page.locator("[data-gateway-hidden]")).to_contain_text("not turned on customer self-service")
    shot(page, "customer-hidden-all-three")

    # the partner turns them on one by one: the menu item appears only after the third
    owner.ok("PUT", "/partner/self-service", json=SELF_SERVICE)
    page.reload()
    expect(page.locator("[data-gateway-hidden] [data-missing]")).to_have_count(2)
    assert missing_shown(page) == MISSING[1:]
    expect(menu_item(page)).to_have_count(0)

    owner.ok("PATCH", f"/partner/customers/{cid}", json={"ai_credits_enabled": True})
    owner.ok(
        "POST",
        f"/partner/customers/{cid}/ai-credits",
        json={"amount": "500"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    page.goto(stack.bff_url + "/customer/gateway")  # typed in: still hidden, and says why
    expect(page.locator("[data-gateway-hidden] [data-missing]")).to_have_count(1)
    assert missing_shown(page) == MISSING[2:]
    expect(page.locator("[data-gateway-hidden]")).to_contain_text("Features & Add-ons")
    expect(menu_item(page)).to_have_count(0)
    expect(page.locator("[data-open-create]")).to_have_count(0)
    shot(page, "customer-hidden-menu-toggle")

    owner.ok("PATCH", f"/partner/customers/{cid}", json={"ai_gateway_menu_enabled": True})
    page.goto(stack.bff_url + "/customer")
    expect(menu_item(page)).to_be_visible()
    expect(page.locator("[data-gateway-hidden]")).to_have_count(0)
    expect(page.locator('[data-stat="ai-balance"] .money')).to_have_attribute("data-uai", str(500 * 1_000_000))
    expect(page.locator('[data-stat="ai-balance"]')).to_contain_text("500 AI credits")
    shot(page, "customer-overview")

    # AI Gateway: the quick start uses the gateway's URL; Create Key asks no budget
    menu_item(page).click()
    expect(page).to_have_url(stack.bff_url + "/customer/gateway")
    expect(page.get_by_role("heading", name="AI Gateway", level=1)).to_be_visible()
    expect(page.locator('[data-snippet="python"]')).to_contain_text(f'base_url="{stack.proxy_url}/v1"')
    expect(page.locator("[data-usage-totals]")).to_have_attribute("data-requests", "0")
    shot(page, "customer-gateway-empty")
    opener = page.locator("[data-open-create]")
    opener.click()
    dialog = page.locator('dialog[data-dialog="create-own-key"]')
    expect(dialog).to_be_visible()
    assert page.evaluate("document.activeElement.closest('dialog') !== null")
    page.keyboard.press("Escape")  # keyboard: Esc closes, focus returns to the opener
    expect(dialog).to_be_hidden()
    assert page.evaluate("document.activeElement.hasAttribute('data-open-create')")
    opener.click()
    expect(dialog.locator("label", has_text=re.compile("budget", re.I))).to_have_count(0)  # no budget field
    expect(dialog).to_contain_text("there is no budget to set")
    expect(dialog.locator("input[inputmode=decimal], input[type=number]")).to_have_count(0)
    balance = owner.ok("GET", "/partner")["balance"]["ucr"]
    dialog.locator("[data-create-submit]").click()  # no name: said next to the field, nothing made
    expect(dialog.locator('[data-field-error="own-key-name"]')).to_be_visible()
    dialog.get_by_label("Key name").fill("   ")  # blank is no name either
    dialog.locator("[data-create-submit]").click()
    expect(dialog.locator('[data-field-error="own-key-name"]')).to_be_visible()
    assert owner.ok("GET", "/partner/keys")["data"] == []
    assert owner.ok("GET", "/partner")["balance"]["ucr"] == balance  # no deposit held
    dialog.get_by_label("Key name").fill("Acme support bot")
    dialog.get_by_label("gpt-4o-mini").check()
    shot(page, "customer-create-key")
    dialog.locator("[data-create-submit]").dblclick()  # one Idempotency-Key per opening: one key

    banner = page.locator("[data-secret-banner]")
    expect(banner).to_contain_text("it will not be shown again")
    secret = banner.locator("[data-secret]").inner_text().strip()
    assert secret.startswith("sk-cg-")
    mine = [k for k in owner.ok("GET", "/partner/keys")["data"] if k["kind"] == "customer"]
    assert [(k["name"], k["allowed_models"]) for k in mine] == [("Acme support bot", ["gpt-4o-mini"])]
    key_id = mine[0]["id"]
    expect(page.locator('[data-snippet="python"]')).to_contain_text(secret)
    shot(page, "customer-key-created")

    # the secret works through the proxy; the usage shown rises without a reload
    answer = client(stack, secret).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
    )
    assert answer.choices[0].message.content
    expect(page.locator("[data-usage-totals]")).to_have_attribute("data-requests", "1", timeout=20_000)
    expect(page.locator(f'[data-key-row="{key_id}"] [data-last-used]')).to_contain_text("Just now", timeout=15_000)
    shot(page, "customer-after-a-request")

    # revoke, confirmed: says it cannot be undone; then the secret is refused
    page.locator(f'[data-key-row="{key_id}"]').get_by_role("button", name="Revoke Acme support bot").click()
    revoke = page.locator('dialog[data-dialog="revoke-own-key"]')
    expect(revoke).to_contain_text("cannot be undone")
    shot(page, "customer-revoke-confirm")
    revoke.locator("[data-confirm]").click()
    expect(revoke).to_be_hidden()
    expect(page.locator(f'[data-key-row="{key_id}"]')).to_have_count(0)
    assert owner.ok("GET", f"/partner/keys/{key_id}")["status"] == "revoked"
    eventually(lambda: refused(secret, stack), what="the revoked secret refused")
    shot(page, "customer-revoked")

    # the secret lived in memory only
    page.reload()
    expect(page.get_by_role("heading", name="Your AI Gateway keys")).to_be_visible()
    assert secret not in page.content()
    print(f"\ncustomer flow: {time.monotonic() - started:.1f}s")


def test_customer_portal_at_phone_width_with_long_names(stack: Stack, browser: Browser, shot):
    long_customer = "Acme Robotics International Holdings, Research and Development Division"
    with bff.admin(stack) as admin:
        t = Tenant(stack, admin, long_customer)
    try:
        t.owner.ok("PUT", "/partner/branding", json={"display_name": "W" * 80, "primary_color": "#fde047"})
        for width, height in ((390, 844), (1280, 900)):
            ctx = browser.new_context(viewport={"width": width, "height": height})
            ctx.set_default_timeout(WAIT_MS)
            try:
                page = ctx.new_page()
                sign_in(page, stack, t.email)
                expect(page.locator("[data-gateway-hidden]")).to_be_visible()
                expect(page.locator("[data-brand-name]")).to_contain_text("WWWW")
                no_horizontal_overflow(page)
                shot(page, f"customer-{width}px")
            finally:
                ctx.close()
    finally:
        t.owner.close()
