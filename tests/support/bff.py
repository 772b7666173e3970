"""Signed-in clients of the BFF for tests: the platform admin, a partner's users (any role),
a customer's users and management API tokens.

Tenants (partners, customers) are made through keys, as the seeder does; people through
the BFF's own API (an invite, then its acceptance), as the product makes them. Every
client is a ``cg_devstack.bff.BffClient``: it keeps its session cookie and sends the CSRF
token on state changes (``csrf=False`` on a request to leave it out).

    admin = bff.admin(stack)
    partner_id = bff.new_partner(seeder)
    owner = bff.partner_user(stack, partner_id, "owner", via=admin)
    viewer = bff.partner_user(stack, partner_id, "viewer", via=owner)
    customer = seeder.customer(partner_id, "Acme", ref=bff.unique("cus"))
    acme_user = bff.customer_user(stack, owner, customer.id)
    robot = bff.token_client(stack, owner, "read")
"""

from __future__ import annotations

import uuid

import httpx

from cg_devstack import Stack
from cg_devstack.bff import BffClient, invite_and_accept
from cg_devstack.seed import Seeder

PASSWORD = "correct horse battery staple"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def unique_email(prefix: str = "user") -> str:
    return f"{unique(prefix)}@example.com"


def refused(response: httpx.Response, status: int) -> str:
    """The error code of a refusal with this status, checking the API's one error shape."""
    assert response.status_code == status, f"{response.status_code}, not {status}: {response.text}"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "fields"}, body
    return body["error"]["code"]


def admin(stack: Stack) -> BffClient:
    """The platform admin (the BFF's bootstrap admin), signed in."""
    creds = stack.bff_admin
    return BffClient(stack.bff_url).sign_in(creds["email"], creds["password"])


def new_partner(seeder: Seeder, credits: int = 10_000, tier: str = "growth") -> str:
    return seeder.partner(unique("ptn"), credits=credits, tier=tier)


def partner_user(
    stack: Stack, partner_id: str, role: str = "owner", *, via: BffClient | None = None, email: str = ""
) -> BffClient:
    """A new user of the partner with this role, signed in. ``via``: who invites, the
    platform admin (the default) or one of the partner's owners / admins."""
    inviter = via or admin(stack)
    path = (
        "/partner/users"
        if inviter.user and inviter.user["kind"] == "partner"
        else f"/admin/partners/{partner_id}/invites"
    )
    try:
        return invite_and_accept(inviter, path, {"email": email or unique_email(role), "role": role}, PASSWORD)
    finally:
        if via is None:
            inviter.close()


def customer_user(stack: Stack, inviter: BffClient, customer_id: str, *, email: str = "") -> BffClient:
    """A new user of the customer, signed in; ``inviter`` is the partner's owner or admin."""
    del stack  # the inviter knows the BFF
    return invite_and_accept(
        inviter, f"/partner/customers/{customer_id}/invites", {"email": email or unique_email("cust")}, PASSWORD
    )


def token(manager: BffClient, scope: str = "read", name: str = "") -> tuple[str, dict]:
    """A new management API token of the manager's partner: (secret, the token's public view)."""
    body = manager.ok("POST", "/partner/tokens", json={"name": name or unique("robot"), "scope": scope})
    return body["secret"], body["token"]


def token_client(stack: Stack, manager: BffClient, scope: str = "read") -> BffClient:
    """A client that sends a new token of the manager's partner as ``Authorization: Bearer``."""
    secret, _ = token(manager, scope)
    return BffClient(stack.bff_url, token=secret)
