"""The partner's Usage, Customers and API & Webhooks pages in a real browser, against the
whole stack (SQLite, with the worker for webhooks) and only the BFF's public API behind the
pages: a request made through the proxy with a customer-billed key (the ``openai`` SDK)
appears in the request log and the spend chart without a reload; the profit row for the
customer shows the API's exact figures, and the key's runway is stated; the customer's
switches are flipped and AI credits granted (the balance shown rises); the self-service
settings are saved; a management API token is created (its secret shown once: not after
a reload) and revoked; the customer portal's branding is set (a live preview of the
customer's top bar; a refused logo URL is said next to its field and changes nothing; the
customer then reads the saved branding; a viewer sees it read-only); a webhook endpoint on a loopback receiver (the devstack allows
private targets) gets a test event, shown among its deliveries. Every page is a
screenshot, at 1280 px and at 390 px, where nothing overflows."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from cg_devstack import Stack
from cg_devstack.bff import BffClient
from e2e.helpers import client, eventually, expected_cost_ucr
from support import bff
from support.stacks import stack_on

SERVICES = ("nats", "keys", "ledger", "mock", "proxy", "worker", "bff")
PORTAL = Path(__file__).resolve().parents[2] / "services" / "bff" / "portal" / "dist" / "index.html"
WAIT_MS = 10_000
LONG_NAME = "Acme Robotics International Holdings, a very long customer name"


@pytest.fixture(scope="module", params=["sqlite"])
def stack(request) -> Iterator[Stack]:
    if not PORTAL.is_file():
        pytest.fail(f"{PORTAL} is missing: build the portal first (`make portal`; make test does it)")
    with stack_on(request, services=SERVICES) as s:
        yield s


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    """A webhook endpoint on loopback: records every POST, answers 200."""
    got: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers.get("content-length", 0))))
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/creditgate", got
    server.shutdown()
    server.server_close()


class World:
    """A partner (5,000 credits) with a customer (500 AI credits) and a key billed to it."""

    def __init__(self, stack: Stack, admin: BffClient) -> None:
        made = admin.ok("POST", "/admin/partners", json={"name": f"Pages {uuid.uuid4().hex[:6]}", "tier": "growth"})
        self.partner_id = str(made["id"])
        admin.ok(
            "POST",
            f"/admin/partners/{self.partner_id}/deposits",
            json={"amount_credits": "5000", "payment_reference": "inv-pages"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        self.email = bff.unique_email("owner")
        self.owner = bff.partner_user(stack, self.partner_id, "owner", via=admin, email=self.email)
        self.customer = self.owner.ok(
            "POST", "/partner/customers", json={"name": LONG_NAME, "ai_credits_enabled": True}
        )
        self.owner.ok(
            "POST",
            f"/partner/customers/{self.customer['id']}/ai-credits",
            json={"amount": "500"},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        created = self.owner.ok(
            "POST",
            "/partner/keys",
            json={
                "name": "Support bot",
                "budget_credits": 1000,
                "allowed_models": ["gpt-4o-mini"],
                "billing": {
                    "customer_id": self.customer["id"],
                    "profit_multiplier": "2",
                    "price_per_ai_credit_cents": "1",
                },
            },
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        self.key_id, self.secret = created["key"]["id"], created["secret"]


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    with bff.admin(stack) as admin:
        w = World(stack, admin)
    yield w
    w.owner.close()


@pytest.fixture
def context(browser: Browser, stack: Stack) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(WAIT_MS)
    yield ctx
    ctx.close()


def sign_in(page: Page, stack: Stack, email: str) -> None:
    page.goto(stack.bff_url + "/")
    expect(page).to_have_url(stack.bff_url + "/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(bff.PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(stack.bff_url + "/partner/gateway")


def go(page: Page, stack: Stack, label: str, path: str) -> None:
    """Through the menu: a route change, not a page load."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name=label).click()
    expect(page).to_have_url(stack.bff_url + path)
    expect(page.get_by_role("heading", name=label, level=1)).to_be_visible()


def no_horizontal_overflow(page: Page) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page is {widths[0]} px wide in a {widths[1]} px window"


def test_usage_customers_api_and_webhooks(stack: Stack, world: World, receiver, context: BrowserContext, shot):
    started = time.monotonic()
    owner = world.owner
    page = context.new_page()
    sign_in(page, stack, world.email)
    page.evaluate("window.__samePage = true")  # gone if a menu click reloaded the page

    # Usage: empty, then a request through the proxy shows up live in the log and the chart
    go(page, stack, "Usage", "/partner/usage")
    chart = page.locator("[data-spend-chart]")
    expect(chart).to_have_attribute("data-total-ucr", "0")
    expect(page.locator("[data-live]")).to_have_attribute("data-live", "live")
    expect(page.locator("[data-request-log]")).to_contain_text("No request matches")
    shot(page, "usage-empty")

    answer = client(stack, world.secret).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}], max_tokens=5
    )
    cost = expected_cost_ucr("gpt-4o-mini", answer.usage.prompt_tokens, answer.usage.completion_tokens)
    row = page.locator(f'[data-request-row][data-key-id="{world.key_id}"]')
    expect(row).to_have_count(1)
    expect(row.locator("[data-cost-ucr]")).to_have_attribute("data-cost-ucr", str(cost))
    expect(row).to_contain_text("Support bot")
    expect(chart).to_have_attribute("data-total-ucr", str(cost))
    expect(page.locator(".chart canvas")).to_have_count(1)

    # profit for the customer: the API's exact figures
    profit = eventually(
        lambda: next(
            (
                r
                for r in owner.ok("GET", "/partner/usage/profit", params={"by": "customer"})["rows"]
                if r["id"] == world.customer["id"]
            ),
            None,
        ),
        what="the customer's profit row",
    )
    prow = page.locator(f'[data-profit-row="{world.customer["id"]}"]')
    expect(prow).to_have_attribute("data-revenue-ucr", str(profit["revenue_ucr"]))
    expect(prow).to_have_attribute("data-cost-ucr", str(profit["cost_ucr"]))
    expect(prow).to_have_attribute("data-margin-ucr", str(profit["margin_ucr"]))
    assert profit["cost_ucr"] == cost and profit["revenue_ucr"] > 0
    expect(prow.locator("[data-revenue]")).to_have_attribute(
        "title", f"{profit['revenue_credits']} credits (${profit['revenue_usd']})"
    )
    expect(prow.locator("[data-margin]")).to_have_attribute(
        "title", f"{profit['margin_credits']} credits (${profit['margin_usd']})"
    )
    expect(prow.locator("[data-margin-pct]")).to_contain_text("%")
    expect(prow).to_contain_text(LONG_NAME[:20])

    # runway: the API's figure, said in words
    runway = eventually(
        lambda: (r := owner.ok("GET", f"/partner/keys/{world.key_id}/runway"))["in_days"] and r, what="a runway"
    )
    line = page.locator(f'[data-runway="{world.key_id}"]')
    expect(line).to_have_attribute("data-in-days", runway["in_days"])
    expect(line.locator("[data-runway-text]")).to_contain_text("runs out in ~")
    shot(page, "usage-after-a-request")

    # by day: the same spend; the filters narrow the log
    page.get_by_role("button", name="By day").click()
    expect(chart).to_have_attribute("data-total-ucr", str(cost))
    page.locator('[data-filter="outcome"]').select_option("upstream_error")
    expect(row).to_have_count(0)
    page.locator('[data-filter="outcome"]').select_option("ok")
    expect(row).to_have_count(1)
    csv = page.locator("[data-csv]").get_attribute("href") or ""
    assert "format=csv" in csv and "outcome=ok" in csv
    assert "request_id" in page.evaluate(f"fetch({csv!r}).then(r => r.text())")

    # Customers: the three switches, a grant, the self-service settings
    go(page, stack, "Customers", "/partner/customers")
    cust = page.locator(f'[data-customer="{world.customer["id"]}"]')
    balance = cust.locator("[data-ai-balance]")
    before = owner.ok("GET", f"/partner/customers/{world.customer['id']}")["ai_credit_balance"]["uai"]
    assert before < 500 * 1_000_000  # the request above was billed to its AI credits
    expect(balance).to_have_attribute("data-ai-balance", str(before))
    expect(cust.locator("[data-visibility]")).to_have_attribute("data-visibility", "hidden")
    menu = cust.locator('[data-switch="ai_gateway_menu_enabled"]')
    api_access = cust.locator('[data-switch="api_access_enabled"]')
    expect(menu).not_to_be_checked()
    menu.check()
    expect(menu).to_be_checked()
    api_access.check()
    expect(api_access).to_be_checked()
    got = owner.ok("GET", f"/partner/customers/{world.customer['id']}")
    assert got["ai_gateway_menu_enabled"] and got["api_access_enabled"]
    api_access.uncheck()
    expect(api_access).not_to_be_checked()
    eventually(
        lambda: not owner.ok("GET", f"/partner/customers/{world.customer['id']}")["api_access_enabled"], what="off"
    )

    cust.locator("[data-open-grant]").click()
    grant = page.locator('dialog[data-dialog="grant"]')
    grant.get_by_label("AI credits to grant").fill("0")
    grant.locator("[data-grant-next]").click()
    expect(grant.locator('[data-field-error="grant-amount"]')).to_be_visible()
    grant.get_by_label("AI credits to grant").fill("250")
    grant.locator("[data-grant-next]").click()
    expect(grant.locator("[data-grant-confirm]")).to_contain_text("Grant 250 AI credits")
    shot(page, "customers-grant-confirm")
    grant.locator("[data-confirm]").dblclick()  # one Idempotency-Key per opening: granted once
    expect(grant).to_be_hidden()
    expect(balance).to_have_attribute("data-ai-balance", str(before + 250 * 1_000_000))
    assert (
        owner.ok("GET", f"/partner/customers/{world.customer['id']}")["ai_credit_balance"]["uai"]
        == before + 250 * 1_000_000
    )

    ss = page.locator("[data-self-service]")
    expect(ss.locator("[data-deposit-rule]")).to_contain_text("1,000 credits")
    expect(ss.locator("[data-deposit-rule]")).to_contain_text("suspended")
    unchanged = owner.ok("GET", "/partner/self-service")
    ss.get_by_label("Default profit multiplier").fill("0")  # the API's bound: said next to the field, nothing saved
    ss.locator("[data-ss-save]").click()
    expect(ss.locator('[data-field-error="ss-multiplier"]')).to_be_visible()
    assert owner.ok("GET", "/partner/self-service") == unchanged
    ss.locator('[data-ss="enabled"]').check()
    ss.get_by_label("Default profit multiplier").fill("3")
    ss.get_by_label("AI credit → USD cents").fill("2")
    ss.locator("[data-ss-save]").click()
    expect(ss.locator("[data-ss-notice]")).to_contain_text("Saved")
    settings = owner.ok("GET", "/partner/self-service")
    assert settings["enabled"] is True
    assert float(settings["default_profit_multiplier"]) == 3 and float(settings["ai_credit_price_cents"]) == 2
    # all three on now: the customer sees AI Gateway
    expect(cust.locator("[data-visibility]")).to_have_attribute("data-visibility", "visible")
    shot(page, "customers")

    # API & Webhooks: a token, shown once, then revoked
    go(page, stack, "API & Webhooks", "/partner/api")
    page.locator("[data-open-token]").click()
    tdialog = page.locator('dialog[data-dialog="create-token"]')
    tdialog.get_by_label("Token name").fill("Billing export")
    tdialog.get_by_text("Read & write").click()
    tdialog.locator("[data-create-token]").click()
    token_secret = page.locator("[data-token-secret]").inner_text().strip()
    assert token_secret.startswith("cgm_")
    tokens = owner.ok("GET", "/partner/tokens")["data"]
    assert [(t["name"], t["scope"]) for t in tokens] == [("Billing export", "write")]
    token_row = page.locator(f'[data-token="{tokens[0]["id"]}"]')
    expect(token_row).to_contain_text("Never")
    shot(page, "api-token-created")

    # a webhook endpoint on the loopback receiver, and its test delivery
    url, got_hooks = receiver
    page.locator("[data-open-endpoint]").click()
    edialog = page.locator('dialog[data-dialog="endpoint"]')
    edialog.get_by_label("Endpoint URL").fill(url)
    edialog.get_by_label("Description (optional)").fill("Back office")
    edialog.locator("[data-save-endpoint]").click()
    expect(page.locator("[data-webhook-secret]")).to_contain_text("whsec_")
    endpoints = owner.ok("GET", "/partner/webhooks")["data"]
    assert [e["url"] for e in endpoints] == [url]
    endpoint = page.locator(f'[data-endpoint="{endpoints[0]["id"]}"]')
    endpoint.locator("[data-send-test]").click()
    delivery = endpoint.locator('[data-delivery][data-event-type="webhook.test"]')
    expect(delivery).to_have_count(1)
    expect(delivery).to_have_attribute("data-state", "succeeded", timeout=20_000)
    assert any(b"webhook.test" in body for body in got_hooks)
    endpoint.locator("[data-edit-endpoint]").click()
    edialog.get_by_label("Description (optional)").fill("Back office (edited)")
    edialog.locator("[data-save-endpoint]").click()
    expect(endpoint).to_contain_text("Back office (edited)")
    shot(page, "api-webhooks")
    assert page.evaluate("window.__samePage === true")  # every move so far was in the page

    # a reload shows neither secret again; the token is then revoked, confirmed
    page.reload()
    expect(token_row).to_be_visible()
    expect(page.locator("[data-token-secret]")).to_have_count(0)
    expect(page.locator("[data-webhook-secret]")).to_have_count(0)
    assert token_secret not in page.content()
    token_row.get_by_role("button", name="Revoke Billing export").click()
    confirm = page.locator('dialog[data-dialog="revoke-token"]')
    expect(confirm).to_contain_text("cannot be undone")
    confirm.locator("[data-confirm]").click()
    expect(token_row).to_have_count(0)
    assert owner.ok("GET", "/partner/tokens", params={"include_revoked": "true"})["data"][0]["revoked_at"]
    page.get_by_label("Show revoked").check()
    expect(token_row).to_have_attribute("data-revoked", "true")
    print(f"\npartner pages flow: {time.monotonic() - started:.1f}s")


def test_customer_portal_branding(stack: Stack, world: World, context: BrowserContext, browser: Browser, shot):
    owner = world.owner
    partner_name = owner.ok("GET", "/partner")["name"]
    page = context.new_page()
    sign_in(page, stack, world.email)
    go(page, stack, "Customers", "/partner/customers")
    card = page.locator("[data-branding]")
    preview = card.locator("[data-brand-preview]")
    expect(card.locator("[data-brand-state]")).to_have_text("Default")
    expect(preview.locator("[data-preview-name]")).to_have_text(partner_name)

    # a name and colours: the preview follows as one types, by the customer portal's rules
    card.get_by_label("Display name").fill("Northwind AI")
    card.get_by_label("Primary colour", exact=True).fill("#0B7A3E")
    card.locator('[data-brand-picker="accent_color"]').fill("#f59e0b")
    expect(card.get_by_label("Accent colour", exact=True)).to_have_value("#f59e0b")
    expect(preview.locator("[data-preview-name]")).to_have_text("Northwind AI")
    expect(preview).to_have_attribute("data-preview-primary", "#0b7a3e")
    expect(preview.locator(".topbar")).to_have_css("border-top-color", "rgb(11, 122, 62)")
    expect(preview.locator(".preview-tab-current")).to_have_css("background-color", "rgb(245, 158, 11)")
    expect(preview.locator(".preview-tab-current")).to_have_css("color", "rgb(0, 0, 0)")  # black reads on amber
    card.locator("[data-brand-save]").click()
    expect(card.locator("[data-brand-notice]")).to_contain_text("Saved")
    expect(card.locator("[data-brand-state]")).to_have_text("Custom")
    saved = owner.ok("GET", "/partner/branding")
    assert (saved["display_name"], saved["custom_name"], saved["logo_url"]) == ("Northwind AI", True, None)
    assert (saved["primary_color"], saved["accent_color"]) == ("#0b7a3e", "#f59e0b")
    shot(page, "branding-saved")

    # refused logos (http://, an SVG data URL): said next to the field, nothing changed
    logo = card.get_by_label("Logo URL")
    for bad in ("http://cdn.example.com/logo.png", "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4="):
        card.get_by_label("Display name").fill("Not saved")
        logo.fill(bad)
        card.locator("[data-brand-save]").click()
        error = card.locator('[data-field-error="brand-logo"]')
        expect(error).to_be_visible()
        expect(logo).to_have_attribute("aria-invalid", "true")
        assert "brand-logo-error" in (logo.get_attribute("aria-describedby") or "")
        assert owner.ok("GET", "/partner/branding") == saved
    expect(card.locator('[data-field-error="brand-logo"]')).to_contain_text("data:image")
    expect(preview.locator("[data-preview-logo]")).to_have_count(0)  # never shown: not a logo the API takes
    shot(page, "branding-refused-logo")

    # the customer's portal reads what was saved
    with bff.customer_user(stack, owner, world.customer["id"]) as customer:
        seen = customer.ok("GET", "/customer/branding")
    assert (seen["display_name"], seen["primary_color"], seen["accent_color"]) == ("Northwind AI", "#0b7a3e", "#f59e0b")

    # a viewer sees the branding, read-only
    viewer_email = bff.unique_email("viewer")
    bff.partner_user(stack, world.partner_id, "viewer", via=owner, email=viewer_email).close()
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(WAIT_MS)
    try:
        vpage = ctx.new_page()
        sign_in(vpage, stack, viewer_email)
        go(vpage, stack, "Customers", "/partner/customers")
        vcard = vpage.locator("[data-branding]")
        expect(vcard.get_by_label("Display name")).to_have_value("Northwind AI")
        expect(vcard.get_by_label("Display name")).to_be_disabled()
        expect(vcard.locator("[data-brand-save]")).to_have_count(0)
        expect(vcard.locator("[data-brand-readonly]")).to_be_visible()
        shot(vpage, "branding-viewer")
    finally:
        ctx.close()


def test_partner_pages_at_phone_and_desktop_width(stack: Stack, world: World, browser: Browser, shot):
    for width, height in ((390, 844), (1280, 900)):
        ctx = browser.new_context(viewport={"width": width, "height": height})
        ctx.set_default_timeout(WAIT_MS)
        try:
            page = ctx.new_page()
            sign_in(page, stack, world.email)
            for label, path in (
                ("Usage", "/partner/usage"),
                ("Customers", "/partner/customers"),
                ("API & Webhooks", "/partner/api"),
            ):
                go(page, stack, label, path)
                if path == "/partner/usage":
                    expect(page.locator(".chart canvas")).to_have_count(1)
                    expect(page.locator("[data-runway]").first).to_be_visible()
                    expect(page.locator("[data-request-log] [aria-busy]")).to_have_count(0)
                if path == "/partner/customers":
                    expect(page.locator("[data-customer]").first).to_contain_text(LONG_NAME[:20])
                    expect(page.locator("[data-self-service] [data-deposit-rule]")).to_be_visible()
                if path == "/partner/api":
                    expect(page.locator("[data-webhooks] [aria-busy], [data-tokens] [aria-busy]")).to_have_count(0)
                no_horizontal_overflow(page)
                shot(page, f"{path.rsplit('/', 1)[1]}-{width}px")
        finally:
            ctx.close()
