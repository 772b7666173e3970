"""The partner's AI Gateway page in a real browser, against the whole stack (SQLite) with
only the BFF's public API behind the page: the owner signs in, creates a key billed to a
customer (the billing preview and the total with the fee are shown before creation and
match the API's), copies the secret from the one-time banner, calls the proxy with it
through the ``openai`` SDK and sees spend and last used change without a reload; then
tops up, regenerates (the old secret is refused) and revokes (the balance shown rises by
the refund); a reload shows no secret. At phone width nothing overflows the page, with a
60-character key name and a 12-digit balance. Every state is a screenshot."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from cg_devstack import Stack
from cg_devstack.bff import BffClient
from e2e.helpers import client, eventually, expected_cost_ucr
from support import bff
from support.stacks import shared_stack

SERVICES = ("nats", "keys", "ledger", "mock", "proxy", "bff")
CREDIT = 1_000_000
DEPOSIT = 5000
PORTAL = Path(__file__).resolve().parents[2] / "services" / "bff" / "portal" / "dist" / "index.html"
WAIT_MS = 10_000


@pytest.fixture(scope="module", params=["sqlite"])
def stack(request) -> Stack:
    if not PORTAL.is_file():
        pytest.fail(f"{PORTAL} is missing: build the portal first (`make portal`; make test does it)")
    return shared_stack(request, services=SERVICES)


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[BffClient]:
    with bff.admin(stack) as c:
        yield c


class Partner:
    def __init__(self, stack: Stack, admin: BffClient) -> None:
        made = admin.ok("POST", "/admin/partners", json={"name": f"Browser {uuid.uuid4().hex[:6]}", "tier": "growth"})
        self.id = str(made["id"])
        admin.ok(
            "POST",
            f"/admin/partners/{self.id}/deposits",
            json={"amount_credits": str(DEPOSIT), "payment_reference": "inv-browser"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        self.email = bff.unique_email("owner")
        self.owner = bff.partner_user(stack, self.id, "owner", via=admin, email=self.email)


@pytest.fixture(scope="module")
def partner(stack: Stack, admin: BffClient) -> Iterator[Partner]:
    p = Partner(stack, admin)
    yield p
    p.owner.close()


@pytest.fixture
def context(browser: Browser, stack: Stack) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.bff_url)
    ctx.set_default_timeout(WAIT_MS)
    yield ctx
    ctx.close()


def sign_in(page: Page, stack: Stack, email: str, password: str = bff.PASSWORD) -> None:
    page.goto(stack.bff_url + "/")
    expect(page).to_have_url(stack.bff_url + "/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def money_ucr(page: Page, selector: str) -> int:
    return int(page.locator(selector).first.get_attribute("data-ucr") or "-1")


def balance_ucr(page: Page) -> int:
    return money_ucr(page, '[data-stat="balance"] .stat-value .money')


def no_horizontal_overflow(page: Page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"


def test_partner_key_lifecycle_in_the_browser(stack: Stack, partner: Partner, context: BrowserContext, shot):
    started = time.monotonic()
    owner = partner.owner
    customer = owner.ok("POST", "/partner/customers", json={"name": "Acme Robotics", "ai_credits_enabled": True})
    owner.ok(
        "POST",
        f"/partner/customers/{customer['id']}/ai-credits",
        json={"amount": "500"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    page = context.new_page()

    # sign-in: a wrong password is said so, then the owner lands on AI Gateway
    sign_in(page, stack, partner.email, "not the password at all")
    expect(page.locator("[data-signin-error]")).to_contain_text("Wrong email or password")
    shot(page, "sign-in-error")
    page.get_by_label("Password").fill(bff.PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(stack.bff_url + "/partner/gateway")
    expect(page.get_by_role("heading", name="AI Gateway", level=1)).to_be_visible()
    expect(page.locator('[data-stat="balance"]')).to_contain_text("5,000 credits")
    expect(page.locator('[data-stat="balance"]')).to_contain_text("$50.00")
    expect(page.locator('[data-snippet="python"]')).to_contain_text(f'base_url="{stack.proxy_url}/v1"')
    shot(page, "gateway-empty")

    # the modal is keyboard-usable: focus moves in, Esc closes it, focus returns to the opener
    opener = page.locator("[data-open-create]")
    opener.click()
    dialog = page.locator('dialog[data-dialog="create-key"]')
    expect(dialog).to_be_visible()
    assert page.evaluate("document.activeElement.closest('dialog') !== null")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert page.evaluate("document.activeElement.hasAttribute('data-open-create')")

    # Create Key with customer billing: the preview and the total come from the API before creation
    opener.click()
    dialog.get_by_label("Key name").fill("Acme support bot")
    dialog.get_by_label("Budget (credits)").fill("1000")
    dialog.get_by_label("gpt-4o-mini").check()
    dialog.get_by_label("Bill usage to a customer").check()
    dialog.get_by_label("Assign to customer").select_option(customer["id"])
    dialog.get_by_label("Profit multiplier").fill("2000000")  # above the API's bound: its field error
    dialog.get_by_label("Price per AI credit (cents)").fill("1")
    quote = owner.ok("POST", "/partner/keys/quote", json={"budget_credits": 1000})
    assert quote["total"]["ucr"] == 1050 * CREDIT  # growth tier: 5% fee
    total = dialog.locator("[data-create-total]")
    expect(total).to_contain_text("Total required: 1,050 credits ($10.50)")
    expect(total).to_contain_text("1,000 budget + 50 fee (5%)")
    dialog.locator("[data-create-submit]").click()
    expect(dialog.locator('[data-field-error="bill-multiplier"]')).to_be_visible()
    assert owner.ok("GET", "/partner/keys")["data"] == []  # refused: nothing made
    shot(page, "create-key-field-error")

    dialog.get_by_label("Profit multiplier").fill("2")
    preview = owner.ok(
        "POST",
        "/partner/billing-preview",
        json={"models": ["gpt-4o-mini"], "profit_multiplier": "2", "price_per_ai_credit_cents": "1"},
    )["rows"][0]
    row = dialog.locator('[data-preview-row="gpt-4o-mini"]')
    expect(row.locator("[data-preview-ai-credits]")).to_have_attribute(
        "data-preview-ai-credits", preview["customer_price_ai_credits"]["ai_credits"]
    )
    expect(row.locator("[data-preview-margin]")).to_have_attribute(
        "data-preview-margin", preview["partner_margin"]["usd"]
    )
    shot(page, "create-key-filled")
    dialog.locator("[data-create-submit]").dblclick()  # one Idempotency-Key per opening: one key

    banner = page.locator("[data-secret-banner]")
    expect(banner).to_contain_text("it will not be shown again")
    secret = banner.locator("[data-secret]").inner_text().strip()
    assert secret.startswith("sk-cg-")
    keys = owner.ok("GET", "/partner/keys")["data"]
    assert [k["name"] for k in keys] == ["Acme support bot"]
    key_id = keys[0]["id"]
    banner.get_by_role("button", name="Copy secret to clipboard").click()
    expect(banner.locator("[data-copy]")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    expect(page.locator('[data-snippet="python"]')).to_contain_text(secret)
    expect(page.locator('[data-stat="balance"]')).to_contain_text("3,950 credits")
    shot(page, "key-created")

    # a request through the proxy: spend and last used change in the table, no reload
    key_row = page.locator(f'[data-key-row="{key_id}"]')
    expect(key_row.locator("[data-last-used]")).to_contain_text("Never")
    answer = client(stack, secret).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
    )
    cost = expected_cost_ucr("gpt-4o-mini", answer.usage.prompt_tokens, answer.usage.completion_tokens)
    expect(key_row.locator("[data-spent-ucr]")).to_have_attribute("data-spent-ucr", str(cost))
    expect(key_row.locator("[data-last-used]")).to_contain_text("Just now", timeout=15_000)
    key_row.get_by_role("button", name="Acme support bot").click()  # expand
    details = page.locator(f'[data-details="{key_id}"]')
    expect(details).to_contain_text("Acme Robotics")
    expect(details).to_contain_text("× 2")
    shot(page, "after-a-request")

    # Top Up, confirmed, with the fee shown
    before = balance_ucr(page)
    key_row.get_by_role("button", name="Top Up").click()
    topup = page.locator('dialog[data-dialog="top-up"]')
    budget_before = owner.ok("GET", f"/partner/keys/{key_id}")["budget"]["ucr"]
    balance_before = owner.ok("GET", "/partner")["balance"]["ucr"]
    for bad in ("12.5", "0"):  # bad amounts: said next to the field, nothing moves
        topup.get_by_label("Credits to add").fill(bad)
        topup.locator("[data-confirm]").click()
        expect(topup.locator('[data-field-error="topup-amount"]')).to_be_visible()
        expect(topup).to_be_visible()
    assert owner.ok("GET", f"/partner/keys/{key_id}")["budget"]["ucr"] == budget_before
    assert owner.ok("GET", "/partner")["balance"]["ucr"] == balance_before
    topup.get_by_label("Credits to add").fill("100")
    expect(topup.locator('[data-field-error="topup-amount"]')).to_have_count(0)
    expect(topup.locator("[data-topup-total]")).to_contain_text("105 credits")
    shot(page, "top-up-confirm")
    topup.locator("[data-confirm]").click()
    expect(topup).to_be_hidden()
    expect(key_row.locator("[data-budget] .budget-text .money").last).to_have_attribute("data-ucr", str(1100 * CREDIT))
    expect(page.locator('[data-stat="balance"] .stat-value .money')).to_have_attribute(
        "data-ucr", str(before - 105 * CREDIT)
    )

    # Regenerate: a new secret in the banner, the old one is refused
    key_row.get_by_role("button", name="Regenerate").click()
    regen = page.locator('dialog[data-dialog="regenerate"]')
    expect(regen).to_contain_text("stops working immediately")
    for _ in range(5):  # Tab cycles inside the dialog, never to the page behind it
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.closest('dialog[data-dialog=regenerate]') !== null")
    regen.locator("[data-confirm]").click()
    expect(banner).to_contain_text("Key regenerated")
    new_secret = banner.locator("[data-secret]").inner_text().strip()
    assert new_secret.startswith("sk-cg-") and new_secret != secret
    shot(page, "regenerated")
    with pytest.raises(openai.AuthenticationError):
        client(stack, secret).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
        )
    again = client(stack, new_secret).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
    )
    used = cost + expected_cost_ucr("gpt-4o-mini", again.usage.prompt_tokens, again.usage.completion_tokens)
    expect(key_row.locator("[data-spent-ucr]")).to_have_attribute("data-spent-ucr", str(used))

    # Revoke: says it cannot be undone and what comes back; the balance shown rises by the refund
    eventually(lambda: owner.ok("GET", f"/partner/keys/{key_id}")["reserved"]["ucr"] == 0, what="settled")
    before = balance_ucr(page)
    key_row.get_by_role("button", name="Revoke").click()
    revoke = page.locator('dialog[data-dialog="revoke"]')
    expect(revoke).to_contain_text("cannot be undone")
    expect(revoke.locator("[data-refund] .money")).to_have_attribute("data-ucr", str(1100 * CREDIT - used))
    shot(page, "revoke-confirm")
    revoke.locator("[data-confirm]").click()
    expect(revoke).to_be_hidden()
    refunded = owner.ok("GET", f"/partner/keys/{key_id}")["refunded"]["ucr"]
    assert refunded == 1100 * CREDIT - used
    expect(page.locator('[data-stat="balance"] .stat-value .money')).to_have_attribute(
        "data-ucr", str(before + refunded)
    )
    expect(key_row).to_have_count(0)  # revoked keys are hidden until asked for
    page.get_by_label("Show revoked").check()
    expect(key_row).to_have_attribute("data-status", "revoked")
    shot(page, "revoked")

    # the secret lived in memory only: a reload does not show it again
    page.reload()
    expect(page.get_by_role("heading", name="AI Gateway keys")).to_be_visible()
    expect(page.locator("[data-secret-banner]")).to_have_count(0)
    assert secret not in page.content() and new_secret not in page.content()
    shot(page, "reloaded")

    # signing out ends the session: the API refuses the cookie afterwards
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(stack.bff_url + "/sign-in")
    assert page.evaluate("fetch('/api/v1/partner').then(r => r.status)") == 401
    print(f"\nbrowser flow: {time.monotonic() - started:.1f}s")


def test_phone_width_with_a_long_name_and_a_12_digit_balance(stack: Stack, partner: Partner, browser: Browser, shot):
    name = "A very long key name for the phone layout check, sixty chars"
    assert len(name) == 60
    partner.owner.ok(
        "POST",
        "/partner/keys",
        json={"name": name, "budget_credits": 10, "allowed_models": ["gpt-4o-mini"]},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )

    def huge_balance(route: Route) -> None:
        answer = route.fetch()
        body = answer.json()
        body["balance"] = {"ucr": 123456789012345678, "credits": "123456789012.345678", "usd": "1234567890.12345678"}
        route.fulfill(response=answer, body=json.dumps(body))

    for width, height in ((390, 844), (1280, 900)):
        ctx = browser.new_context(viewport={"width": width, "height": height})
        ctx.set_default_timeout(WAIT_MS)
        try:
            page = ctx.new_page()
            page.route("**/api/v1/partner", huge_balance)
            sign_in(page, stack, partner.email)
            expect(page.get_by_role("heading", name="AI Gateway", level=1)).to_be_visible()
            expect(page.locator('[data-stat="balance"]')).to_contain_text("123,456,789,012.35 credits")
            expect(page.get_by_role("button", name=name)).to_be_visible()
            no_horizontal_overflow(page)
            shot(page, f"gateway-{width}px")
            page.locator("[data-open-create]").click()
            page.locator('dialog[data-dialog="create-key"]').get_by_label("Bill usage to a customer").check()
            no_horizontal_overflow(page)
            shot(page, f"create-key-{width}px")
        finally:
            ctx.close()
