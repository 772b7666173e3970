"""White-label branding through the management API (in-process BFF, real keys and ledger;
SQLite and PostgreSQL): the partner reads and replaces it, its customers read it; bad
logos and colours are refused with the field named and change nothing; a viewer or a
read-only token may not change it; another partner and another partner's customers never
see it (every route acts on the principal's own partner)."""

from __future__ import annotations

import base64

import pytest
from bff_tenant import Harness, error, harness

from support.stacks import KEYS_AND_LEDGER, shared_stack

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 64).decode()
BRAND = {
    "display_name": "Acme Cloud",
    "logo_url": "https://cdn.example.com/acme.png",
    "primary_color": "#0B5CAD",
    "accent_color": "#e0a100",
}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request):
    return shared_stack(request, KEYS_AND_LEDGER)


@pytest.fixture(scope="module")
def h(stack, tmp_path_factory):
    with harness(stack, tmp_path_factory.mktemp("bff")) as h:
        yield h


def tenant(h: Harness, name: str) -> tuple[str, str, str]:
    """A partner named ``name``: its owner, a customer's user, and the partner's id."""
    pid = h.new_partner(credits=0, name=name)
    owner = h.partner_user(f"owner-{pid}", pid)
    customer = h.ok(owner, "POST", "/partner/customers", {"name": f"{name} customer"})
    return owner, h.customer_user(f"cust-{pid}", pid, customer["id"]), pid


def test_the_partner_brands_its_customers_portal(h: Harness):
    owner, customer, pid = tenant(h, "Brand Partner")
    other_owner, other_customer, other = tenant(h, "Other Partner")
    viewer = h.partner_user(f"viewer-{pid}", pid, role="viewer")
    reader = h.partner_token(f"read-{pid}", pid, "read")
    writer = h.partner_token(f"write-{pid}", pid, "write")

    # what the customer's portal needs beside it: the gateway's URL and the models of the plan
    assert h.ok(customer, "GET", "/customer")["gateway_base_url"].startswith("http")
    models = h.ok(customer, "GET", "/customer/models")
    assert models["tier"] == "growth" and any(
        m["id"] == "gpt-4o-mini" for c in models["categories"] for m in c["models"]
    )

    # nothing set: the partner's own name, no logo, the product's colours
    default = h.ok(customer, "GET", "/customer/branding")
    assert default == {
        "partner_id": pid,
        "display_name": "Brand Partner",
        "custom_name": False,
        "logo_url": None,
        "primary_color": None,
        "accent_color": None,
        "updated_at": None,
    }

    made = h.ok(owner, "PUT", "/partner/branding", BRAND)
    assert (made["display_name"], made["custom_name"], made["primary_color"]) == ("Acme Cloud", True, "#0b5cad")
    assert made["updated_at"] is not None
    assert h.ok(viewer, "GET", "/partner/branding") == made
    assert h.ok(reader, "GET", "/partner/branding") == made
    assert h.ok(customer, "GET", "/customer/branding") == made
    # a small data: image is a logo too; a write token may change it
    assert h.ok(writer, "PUT", "/partner/branding", {**BRAND, "logo_url": PNG})["logo_url"] == PNG
    made = h.ok(owner, "PUT", "/partner/branding", BRAND)

    # the other partner and its customers see their own (default) branding, never this one
    for who in (other_owner, other_customer):
        path = "/partner/branding" if who == other_owner else "/customer/branding"
        theirs = h.ok(who, "GET", path)
        assert (theirs["partner_id"], theirs["display_name"], theirs["logo_url"]) == (other, "Other Partner", None)
    # and what they put is theirs alone
    h.ok(other_owner, "PUT", "/partner/branding", {"display_name": "Other Brand", "primary_color": "#112233"})
    assert h.ok(customer, "GET", "/customer/branding") == made
    assert h.ok(other_customer, "GET", "/customer/branding")["display_name"] == "Other Brand"

    # a viewer and a read-only token may not change it; customers may not use the partner's routes
    for who in (viewer, reader):
        assert h.call(who, "PUT", "/partner/branding", BRAND).status_code == 403
    assert h.call(customer, "PUT", "/partner/branding", BRAND).status_code == 403
    assert h.call(customer, "GET", "/partner/branding").status_code == 403
    assert h.call(owner, "GET", "/customer/branding").status_code == 403
    assert h.call(None, "GET", "/customer/branding").status_code == 401

    # a field left out falls back to the default: PUT replaces the whole branding
    plain = h.ok(owner, "PUT", "/partner/branding", {"primary_color": "#000000"})
    assert (plain["display_name"], plain["custom_name"], plain["logo_url"]) == ("Brand Partner", False, None)
    h.ok(owner, "PUT", "/partner/branding", BRAND)


BIG_PNG = "data:image/png;base64," + base64.b64encode(b"\0" * (32 * 1024 + 1)).decode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logo_url", "http://cdn.example.com/logo.png"),  # not https
        ("logo_url", "javascript:alert(1)"),
        ("logo_url", "https://"),
        ("logo_url", 'https://cdn.example.com/a.png" onerror="alert(1)'),
        ("logo_url", "https://user@cdn.example.com/logo.png"),
        ("logo_url", "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4="),  # SVG can carry script
        ("logo_url", "data:text/html;base64,PGgxPmhpPC9oMT4="),
        ("logo_url", "data:image/png;base64,not base64!"),
        ("logo_url", BIG_PNG),  # over 32 KiB
        ("primary_color", "red"),
        ("primary_color", "#12345"),
        ("accent_color", "#gggggg"),
        ("display_name", " "),
        ("display_name", "x" * 81),
        ("display_name", "nul\x00"),
    ],
)
def test_bad_branding_is_refused_with_its_field_and_changes_nothing(h: Harness, field: str, value: str):
    owner, customer, _ = tenant(h, "Strict Partner")
    before = h.ok(owner, "PUT", "/partner/branding", BRAND)
    r = h.call(owner, "PUT", "/partner/branding", {**BRAND, field: value})
    assert r.status_code == 400, r.text
    got = error(r)
    assert got["code"] == "invalid_request" and field in got["fields"], got
    assert h.ok(customer, "GET", "/customer/branding") == before
