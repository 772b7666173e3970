"""Identity through the BFF's HTTP API, on the stack's own BFF process (SQLite and
PostgreSQL): sign-in and out, the session cookie, CSRF, password change, management API
tokens, and sessions across a restart.

People (invites, a partner's roles, tenants apart): ``test_bff_identity_people.py``;
throttling and the expiry of sessions and invites, which need small settings of their
own: ``test_bff_identity_limits.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cg_devstack import Stack
from cg_devstack.bff import BffClient
from cg_devstack.seed import Seeder
from support import bff
from support.bff import PASSWORD, refused
from support.stacks import shared_stack

SERVICES = ("nats", "keys", "ledger", "bff")
# these tests fail sign-ins on purpose, all from 127.0.0.1: the address limit is not what they test
ENV = {"bff": {"CG_BFF_SIGNIN_MAX_FAILURES_PER_ADDRESS": "1000"}}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request) -> Stack:
    return shared_stack(request, services=SERVICES, env=ENV)


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[BffClient]:
    with bff.admin(stack) as client:
        yield client


@pytest.fixture
def partner(seeder: Seeder) -> str:
    return bff.new_partner(seeder)


@pytest.fixture
def owner(stack: Stack, admin: BffClient, partner: str) -> Iterator[BffClient]:
    with bff.partner_user(stack, partner, "owner", via=admin) as client:
        yield client


def session_cookie(client: BffClient) -> str:
    return client.http.cookies["cg_session"]


def replay(stack: Stack, cookie: str) -> BffClient:
    """A client presenting only this session cookie (as a stolen or kept cookie would be)."""
    client = BffClient(stack.bff_url)
    client.http.cookies.set("cg_session", cookie)
    return client


# -- signing in and out ---------------------------------------------------------------------


def test_sign_in_sets_a_server_side_session_in_a_safe_cookie(stack: Stack, owner: BffClient) -> None:
    email = owner.user["email"]
    with BffClient(stack.bff_url) as client:
        response = client.post("/auth/sign-in", json={"email": email.upper(), "password": PASSWORD})
        assert response.status_code == 200, response.text
        cookie = response.headers["set-cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert cookie.startswith("cg_session=")
        assert {"httponly", "path", "max-age"} <= attributes
        assert "samesite=lax" in cookie.lower()
        assert "secure" not in attributes  # served over plain http here (cookie_secure unset)
        body = response.json()
        assert body["user"]["email"] == email and body["user"]["kind"] == "partner"
        assert body["user"]["role"] == "owner" and "password_hash" not in body["user"]

        session = client.ok("GET", "/auth/session")
        assert session["csrf_token"] == body["csrf_token"]
        assert session["principal"] == {
            "kind": "partner",
            "via": "session",
            "user_id": body["user"]["id"],
            "email": email,
            "partner_id": body["user"]["partner_id"],
            "customer_id": None,
            "role": "owner",
            "scope": None,
            "token_id": None,
            "can_write": True,
        }
        assert session["idle_expires_at"] <= session["expires_at"]


def test_over_tls_the_cookie_is_secure(stack: Stack, owner: BffClient) -> None:
    """Behind a TLS-terminating proxy (uvicorn trusts X-Forwarded-Proto from 127.0.0.1)."""
    with BffClient(stack.bff_url) as client:
        response = client.post(
            "/auth/sign-in",
            json={"email": owner.user["email"], "password": PASSWORD},
            headers={"X-Forwarded-Proto": "https"},
        )
        assert response.status_code == 200, response.text
        assert "secure" in {part.strip().lower() for part in response.headers["set-cookie"].split(";")}


def test_without_credentials_every_identity_route_is_401(stack: Stack) -> None:
    with BffClient(stack.bff_url) as anonymous:
        for method, path in [
            ("GET", "/auth/session"),
            ("POST", "/auth/sign-out"),
            ("POST", "/auth/password"),
            ("GET", "/partner/users"),
            ("POST", "/partner/users"),
            ("GET", "/partner/tokens"),
            ("POST", "/partner/tokens"),
            ("DELETE", "/partner/tokens/mtk_x"),
            ("POST", "/admin/partners/ptn_x/invites"),
        ]:
            assert refused(anonymous.request(method, path, json={}), 401) == "unauthenticated", (method, path)


def test_a_wrong_password_and_an_unknown_account_get_the_same_answer(stack: Stack, owner: BffClient) -> None:
    with BffClient(stack.bff_url) as client:
        wrong = client.post("/auth/sign-in", json={"email": owner.user["email"], "password": "not the password!"})
        unknown = client.post("/auth/sign-in", json={"email": bff.unique_email("nobody"), "password": PASSWORD})
        assert refused(wrong, 401) == refused(unknown, 401) == "invalid_credentials"
        assert wrong.json() == unknown.json()
        assert "set-cookie" not in wrong.headers
        assert refused(client.get("/auth/session"), 401) == "unauthenticated"


def test_sign_out_ends_the_session_at_once(stack: Stack, admin: BffClient, partner: str) -> None:
    client = bff.partner_user(stack, partner, "viewer", via=admin)
    cookie = session_cookie(client)
    assert refused(client.post("/auth/sign-out", csrf=False), 403) == "csrf_failed"
    response = client.post("/auth/sign-out")
    assert response.status_code == 204, response.text
    assert 'cg_session=""' in response.headers["set-cookie"] and "max-age=0" in response.headers["set-cookie"].lower()
    with replay(stack, cookie) as stolen:
        answer = stolen.get("/auth/session")
        assert refused(answer, 401) == "unauthenticated"
        assert "max-age=0" in answer.headers["set-cookie"].lower()  # the browser is told to drop it


def test_sign_out_everywhere_ends_every_session_of_the_user(stack: Stack, owner: BffClient) -> None:
    email = bff.unique_email("laptop")
    phone = bff.partner_user(stack, owner.user["partner_id"], "viewer", via=owner, email=email)
    laptop = BffClient(stack.bff_url).sign_in(email, PASSWORD)
    assert phone.post("/auth/sign-out", params={"everywhere": "true"}).status_code == 204
    for client in (phone, laptop):
        assert refused(client.get("/auth/session"), 401) == "unauthenticated"
        client.close()
    assert owner.get("/auth/session").status_code == 200  # another user's session stays


def test_a_new_sign_in_replaces_the_browsers_session(stack: Stack, owner: BffClient) -> None:
    client = bff.partner_user(stack, owner.user["partner_id"], "viewer", via=owner)
    first = session_cookie(client)
    client.sign_in(client.user["email"], PASSWORD)
    assert session_cookie(client) != first
    with replay(stack, first) as old:
        assert refused(old.get("/auth/session"), 401) == "unauthenticated"
    assert client.ok("GET", "/auth/session")["user"]["id"] == client.user["id"]


# -- CSRF -----------------------------------------------------------------------------------


def test_a_cookie_authenticated_change_needs_the_sessions_csrf_token(stack: Stack, owner: BffClient) -> None:
    body = {"name": "robot", "scope": "read"}
    assert refused(owner.post("/partner/tokens", json=body, csrf=False), 403) == "csrf_failed"
    wrong = {"X-CSRF-Token": owner.csrf[:-2] + ("AA" if not owner.csrf.endswith("AA") else "BB")}
    assert refused(owner.post("/partner/tokens", json=body, csrf=False, headers=wrong), 403) == "csrf_failed"
    with bff.partner_user(stack, owner.user["partner_id"], "admin", via=owner) as other:
        # another session's token (of the same partner, even) is not this session's
        other_token = {"X-CSRF-Token": other.csrf}
        assert refused(owner.post("/partner/tokens", json=body, csrf=False, headers=other_token), 403) == "csrf_failed"
    for method, path in [("PATCH", "/partner/users/usr_x"), ("DELETE", "/partner/tokens/mtk_x")]:
        assert refused(owner.request(method, path, json={"role": "viewer"}, csrf=False), 403) == "csrf_failed"
    assert owner.get("/partner/tokens", csrf=False).status_code == 200  # a read needs none
    assert owner.post("/partner/tokens", json=body).status_code == 201


def test_a_cross_site_form_cannot_sign_a_browser_in(stack: Stack, owner: BffClient) -> None:
    """Login CSRF: another site's form (or a script without a CORS preflight) can only send
    a "simple" content type; sign-in reads JSON only, so such a post signs no one in."""
    body = f'{{"email": "{owner.user["email"]}", "password": "{PASSWORD}"}}'
    with BffClient(stack.bff_url) as browser:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            response = browser.post("/auth/sign-in", content=body, headers={"Content-Type": content_type})
            assert refused(response, 400) == "invalid_request", content_type
            assert "set-cookie" not in response.headers


# -- passwords --------------------------------------------------------------------------------


def test_a_password_change_ends_the_other_sessions(stack: Stack, owner: BffClient) -> None:
    email = bff.unique_email("pw")
    here = bff.partner_user(stack, owner.user["partner_id"], "admin", via=owner, email=email)
    there = BffClient(stack.bff_url).sign_in(email, PASSWORD)
    new = "a brand new passphrase"

    wrong = here.post("/auth/password", json={"current_password": "not it at all", "new_password": new})
    assert refused(wrong, 400) == "invalid_request" and "current_password" in wrong.json()["error"]["fields"]
    short = here.post("/auth/password", json={"current_password": PASSWORD, "new_password": "short"})
    assert refused(short, 400) == "weak_password" and "new_password" in short.json()["error"]["fields"]
    same_as_email = here.post("/auth/password", json={"current_password": PASSWORD, "new_password": email.upper()})
    assert refused(same_as_email, 400) == "weak_password"
    assert there.get("/auth/session").status_code == 200  # refused changes end nothing

    no_csrf = here.post("/auth/password", json={"current_password": PASSWORD, "new_password": new}, csrf=False)
    assert refused(no_csrf, 403) == "csrf_failed"
    assert here.post("/auth/password", json={"current_password": PASSWORD, "new_password": new}).status_code == 204
    assert refused(there.get("/auth/session"), 401) == "unauthenticated"
    assert here.get("/auth/session").status_code == 200  # this one stays
    with BffClient(stack.bff_url) as fresh:
        assert refused(fresh.post("/auth/sign-in", json={"email": email, "password": PASSWORD}), 401)
        fresh.sign_in(email, new)


# -- management API tokens ------------------------------------------------------------------------


def test_a_token_is_shown_once_stored_hashed_and_acts_as_its_partner(stack: Stack, owner: BffClient) -> None:
    secret, public = bff.token(owner, "write", "billing sync")
    assert secret.startswith("cgm_") and len(secret) == 44
    assert public["prefix"] == secret[:12] and public["scope"] == "write" and public["last_used_at"] is None
    assert public["created_by"] == owner.user["email"]
    listed = owner.ok("GET", "/partner/tokens")["data"]
    assert secret not in str(listed) and [t["id"] for t in listed] == [public["id"]]
    with BffClient(stack.bff_url, token=secret) as robot:
        principal = robot.ok("GET", "/auth/session")["principal"]
        assert principal == {
            "kind": "partner",
            "via": "token",
            "user_id": None,
            "email": None,
            "partner_id": owner.user["partner_id"],
            "customer_id": None,
            "role": None,
            "scope": "write",
            "token_id": public["id"],
            "can_write": True,
        }
        # a bearer token needs no CSRF: a write-scoped token writes
        created = robot.post("/partner/customers", json={"name": "From a script"})
        assert created.status_code == 201, created.text
        used = owner.ok("GET", f"/partner/tokens/{public['id']}")
        assert used["last_used_at"] is not None and used["last_used_at"] >= used["created_at"]
        robot.ok("GET", "/auth/session")  # again within the minute: last_used_at is not written again
        assert owner.ok("GET", f"/partner/tokens/{public['id']}")["last_used_at"] == used["last_used_at"]


def test_tokens_are_listed_in_cursor_pages(stack: Stack, admin: BffClient, partner: str) -> None:
    with bff.partner_user(stack, partner, "admin", via=admin) as manager:
        made = [bff.token(manager, "read", f"t{i}")[1]["id"] for i in range(5)]
        seen, cursor, pages = [], None, 0
        while True:
            page = manager.ok("GET", "/partner/tokens", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            seen += [t["id"] for t in page["data"]]
            pages, cursor = pages + 1, page["next_cursor"]
            if cursor is None:
                break
        assert seen == made and pages == 3
        bad = manager.get("/partner/tokens", params={"cursor": "eyJ0IjoxZTQwMCwiaWQiOiJ4In0"})  # {"t":1e400,"id":"x"}
        assert refused(bad, 400) == "invalid_request" and "cursor" in bad.json()["error"]["fields"]


def test_a_read_only_token_cannot_write(stack: Stack, owner: BffClient) -> None:
    with bff.token_client(stack, owner, "read") as robot:
        assert robot.ok("GET", "/auth/session")["principal"]["can_write"] is False
        assert refused(robot.post("/partner/customers", json={"name": "nope"}), 403) == "forbidden"
        assert refused(robot.put("/partner/self-service", json={}), 403) == "forbidden"


def test_a_token_manages_neither_tokens_nor_users(stack: Stack, owner: BffClient) -> None:
    with bff.token_client(stack, owner, "write") as robot:
        for method, path, body in [
            ("GET", "/partner/tokens", None),
            ("POST", "/partner/tokens", {"name": "child", "scope": "write"}),
            ("DELETE", f"/partner/tokens/{robot.ok('GET', '/auth/session')['principal']['token_id']}", None),
            ("GET", "/partner/users", None),
            ("POST", "/partner/users", {"email": bff.unique_email(), "role": "owner"}),
            ("PATCH", f"/partner/users/{owner.user['id']}", {"role": "viewer"}),
            ("DELETE", f"/partner/users/{owner.user['id']}", None),
            ("GET", "/partner/invites", None),
            ("POST", "/auth/password", {"current_password": PASSWORD, "new_password": "x" * 20}),
            ("POST", "/auth/sign-out", None),
        ]:
            assert refused(robot.request(method, path, json=body), 403) == "forbidden", (method, path)


def test_a_revoked_token_is_refused_at_once(stack: Stack, owner: BffClient) -> None:
    secret, public = bff.token(owner, "write")
    with BffClient(stack.bff_url, token=secret) as robot:
        assert robot.get("/auth/session").status_code == 200
        revoked = owner.ok("DELETE", f"/partner/tokens/{public['id']}")
        assert revoked["revoked_at"] is not None
        assert refused(robot.get("/auth/session"), 401) == "unauthenticated"
        assert refused(robot.post("/partner/customers", json={"name": "late"}), 401) == "unauthenticated"
    assert owner.ok("DELETE", f"/partner/tokens/{public['id']}")["revoked_at"] == revoked["revoked_at"]
    assert public["id"] not in {t["id"] for t in owner.ok("GET", "/partner/tokens")["data"]}
    with_revoked = owner.ok("GET", "/partner/tokens", params={"include_revoked": "true"})["data"]
    assert public["id"] in {t["id"] for t in with_revoked}
    for bad in ("Bearer cgm_" + "A" * 40, "Bearer sk-cg-whatever", "Bearer", "Basic dXNlcjpwYXNz", secret):
        header = {"Authorization": bad}
        with BffClient(stack.bff_url) as client:
            assert refused(client.get("/auth/session", headers=header), 401) == "unauthenticated", bad


# -- the bootstrap admin, and sessions across a restart ---------------------------------------------


def test_a_restart_keeps_sessions_and_makes_no_second_admin(stack: Stack, owner: BffClient, admin: BffClient) -> None:
    stack.stop_service("bff")
    stack.start_service("bff")
    assert owner.ok("GET", "/auth/session")["user"]["id"] == owner.user["id"]
    assert admin.ok("GET", "/auth/session")["user"]["id"] == admin.user["id"]
    with bff.admin(stack) as again:
        assert again.user["id"] == admin.user["id"]
