"""People, through the BFF's HTTP API on the stack's own BFF process (SQLite and
PostgreSQL): invites (single use, replaced, revoked, raced), the platform admin's invite of
a partner's first owner, customers' users, a partner's roles (viewer, admin, the last
owner, two owners at once), and one partner never reaching another's people or tokens."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
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


# -- invites ----------------------------------------------------------------------------------


def test_an_invite_is_single_use_and_signs_the_new_user_in(stack: Stack, owner: BffClient) -> None:
    email = bff.unique_email("new")
    created = owner.ok("POST", "/partner/users", json={"email": email.title(), "role": "admin"})
    token = created["token"]
    assert created["url"].endswith(f"/invite#{token}")
    assert created["invite"]["status"] == "pending" and created["invite"]["email"] == email
    assert token not in str(owner.ok("GET", "/partner/invites"))  # the token is shown once
    assert any(i["id"] == created["invite"]["id"] for i in owner.ok("GET", "/partner/invites")["data"])

    with BffClient(stack.bff_url) as invitee:
        lookup = invitee.ok("GET", f"/auth/invites/{token}")
        assert lookup["email"] == email and lookup["role"] == "admin" and lookup["kind"] == "partner"
        assert lookup["partner_name"]
        weak = invitee.post(f"/auth/invites/{token}/accept", json={"password": email, "name": "Ada"})
        assert refused(weak, 400) == "weak_password"  # and the invite is still good:
        invitee.accept(token, PASSWORD, "Ada")
        assert invitee.user["role"] == "admin" and invitee.user["name"] == "Ada"
        assert invitee.ok("GET", "/auth/session")["principal"]["partner_id"] == owner.user["partner_id"]

    with BffClient(stack.bff_url) as again:
        assert refused(again.get(f"/auth/invites/{token}"), 409) == "invite_accepted"
        assert (
            refused(again.post(f"/auth/invites/{token}/accept", json={"password": PASSWORD}), 409) == "invite_accepted"
        )
        assert refused(again.get("/auth/invites/not-a-token"), 404) == "not_found"
    assert refused(owner.post("/partner/users", json={"email": email, "role": "viewer"}), 409) == "email_taken"


def test_a_revoked_or_replaced_invite_is_refused(stack: Stack, owner: BffClient) -> None:
    email = bff.unique_email("rev")
    first = owner.ok("POST", "/partner/users", json={"email": email, "role": "viewer"})
    second = owner.ok("POST", "/partner/users", json={"email": email, "role": "admin"})
    revoked = owner.ok("DELETE", f"/partner/invites/{second['invite']['id']}")
    assert revoked["status"] == "revoked"
    with BffClient(stack.bff_url) as invitee:
        assert refused(invitee.get(f"/auth/invites/{first['token']}"), 409) == "invite_revoked"  # replaced
        assert refused(invitee.post(f"/auth/invites/{second['token']}/accept", json={"password": PASSWORD}), 409)


def test_the_admin_invites_a_partners_first_owner(stack: Stack, admin: BffClient, seeder: Seeder) -> None:
    partner_id = bff.new_partner(seeder)
    assert admin.ok("GET", f"/admin/partners/{partner_id}/users")["data"] == []
    assert refused(admin.post("/admin/partners/ptn_nosuchpartner/invites", json={"email": bff.unique_email()}), 404)
    created = admin.ok("POST", f"/admin/partners/{partner_id}/invites", json={"email": bff.unique_email("first")})
    assert created["invite"]["role"] == "owner" and created["invite"]["partner_id"] == partner_id
    with BffClient(stack.bff_url).accept(created["token"], PASSWORD) as first_owner:
        assert first_owner.user["role"] == "owner" and first_owner.user["partner_id"] == partner_id
        assert refused(first_owner.post(f"/admin/partners/{partner_id}/invites", json={"email": "x@y.zz"}), 403)
        users = admin.ok("GET", f"/admin/partners/{partner_id}/users")["data"]
        assert [u["id"] for u in users] == [first_owner.user["id"]]


def test_a_partner_invites_users_of_its_own_customers_only(stack: Stack, owner: BffClient, seeder: Seeder) -> None:
    partner_id = owner.user["partner_id"]
    customer = seeder.customer(partner_id, "Acme", bff.unique("cus"))
    other_partner = bff.new_partner(seeder)
    others_customer = seeder.customer(other_partner, "Not yours", bff.unique("cus"))

    with bff.customer_user(stack, owner, customer.id) as user:
        assert user.user["kind"] == "customer" and user.user["customer_id"] == customer.id
        principal = user.ok("GET", "/auth/session")["principal"]
        assert principal["partner_id"] == partner_id and principal["customer_id"] == customer.id
        assert not principal["can_write"]
        assert refused(user.get("/partner/users"), 403) == "forbidden"
        assert refused(user.post("/partner/tokens", json={"name": "x"}), 403) == "forbidden"
        users = owner.ok("GET", f"/partner/customers/{customer.id}/users")["data"]
        assert [u["id"] for u in users] == [user.user["id"]]
        # removing the customer's user ends its session
        remove = owner.delete(f"/partner/customers/{customer.id}/users/{user.user['id']}")
        assert remove.status_code == 204, remove.text
        assert refused(user.get("/auth/session"), 401) == "unauthenticated"

    for customer_id in (others_customer.id, "cus_nosuchcustomer"):
        invite = owner.post(f"/partner/customers/{customer_id}/invites", json={"email": bff.unique_email()})
        assert refused(invite, 404) == "not_found"
        assert refused(owner.get(f"/partner/customers/{customer_id}/users"), 404) == "not_found"


# -- a partner's roles --------------------------------------------------------------------------


def test_a_viewer_reads_but_changes_nothing(stack: Stack, owner: BffClient) -> None:
    with bff.partner_user(stack, owner.user["partner_id"], "viewer", via=owner) as viewer:
        assert viewer.ok("GET", "/auth/session")["principal"]["can_write"] is False
        assert len(viewer.ok("GET", "/partner/users")["data"]) == 2
        assert viewer.get("/partner/tokens").status_code == 200
        for method, path, body in [
            ("POST", "/partner/users", {"email": bff.unique_email(), "role": "viewer"}),
            ("PATCH", f"/partner/users/{owner.user['id']}", {"role": "viewer"}),
            ("DELETE", f"/partner/users/{owner.user['id']}", None),
            ("POST", "/partner/tokens", {"name": "x", "scope": "read"}),
            ("GET", "/partner/invites", None),
        ]:
            assert refused(viewer.request(method, path, json=body), 403) == "forbidden", (method, path)


def test_an_admin_may_not_touch_owners(stack: Stack, owner: BffClient) -> None:
    partner_id = owner.user["partner_id"]
    with (
        bff.partner_user(stack, partner_id, "admin", via=owner) as admin_user,
        bff.partner_user(stack, partner_id, "viewer", via=owner) as viewer,
    ):
        assert refused(admin_user.post("/partner/users", json={"email": bff.unique_email(), "role": "owner"}), 403)
        assert refused(admin_user.patch(f"/partner/users/{owner.user['id']}", json={"role": "viewer"}), 403)
        assert refused(admin_user.delete(f"/partner/users/{owner.user['id']}"), 403)
        assert refused(admin_user.patch(f"/partner/users/{viewer.user['id']}", json={"role": "owner"}), 403)
        owners_invite = owner.ok("POST", "/partner/users", json={"email": bff.unique_email(), "role": "owner"})
        assert refused(admin_user.delete(f"/partner/invites/{owners_invite['invite']['id']}"), 403)
        # but an admin manages admins and viewers, and the change applies at once
        promoted = admin_user.ok("PATCH", f"/partner/users/{viewer.user['id']}", json={"role": "admin"})
        assert promoted["role"] == "admin"
        assert viewer.ok("GET", "/auth/session")["principal"]["can_write"] is True
        assert admin_user.delete(f"/partner/users/{viewer.user['id']}").status_code == 204
        assert refused(viewer.get("/auth/session"), 401) == "unauthenticated"


def test_the_last_owner_can_be_neither_demoted_nor_removed(stack: Stack, owner: BffClient) -> None:
    me = owner.user["id"]
    assert refused(owner.patch(f"/partner/users/{me}", json={"role": "admin"}), 409) == "last_owner"
    assert refused(owner.delete(f"/partner/users/{me}"), 409) == "last_owner"
    with bff.partner_user(stack, owner.user["partner_id"], "owner", via=owner) as second:
        assert second.ok("PATCH", f"/partner/users/{me}", json={"role": "admin"})["role"] == "admin"
        assert refused(second.patch(f"/partner/users/{second.user['id']}", json={"role": "viewer"}), 409)
        assert refused(owner.patch(f"/partner/users/{me}", json={"role": "owner"}), 403)  # an admin now
        assert second.ok("PATCH", f"/partner/users/{me}", json={"role": "owner"})["role"] == "owner"
        assert second.delete(f"/partner/users/{second.user['id']}").status_code == 204  # not the last one
    assert owner.ok("GET", "/auth/session")["principal"]["role"] == "owner"


def test_two_owners_demoting_each_other_at_once_leave_one_owner(stack: Stack, owner: BffClient) -> None:
    partner_id = owner.user["partner_id"]
    for _ in range(3):
        with (
            bff.partner_user(stack, partner_id, "owner", via=owner) as a,
            bff.partner_user(stack, partner_id, "owner", via=owner) as b,
        ):
            owner.ok("PATCH", f"/partner/users/{owner.user['id']}", json={"role": "admin"})  # a and b are the owners
            with ThreadPoolExecutor(2) as pool:
                answers = list(
                    pool.map(
                        lambda pair: pair[0].patch(f"/partner/users/{pair[1].user['id']}", json={"role": "viewer"}),
                        [(a, b), (b, a)],
                    )
                )
            assert sorted(r.status_code for r in answers) in ([200, 403], [200, 409]), [r.text for r in answers]
            team = {u["id"]: u["role"] for u in owner.ok("GET", "/partner/users")["data"]}
            assert sorted(team[u.user["id"]] for u in (a, b)) == ["owner", "viewer"]
            survivor = a if team[a.user["id"]] == "owner" else b
            demoted = b if survivor is a else a
            survivor.ok("PATCH", f"/partner/users/{owner.user['id']}", json={"role": "owner"})
            survivor.ok("DELETE", f"/partner/users/{demoted.user['id']}")
            owner.ok("DELETE", f"/partner/users/{survivor.user['id']}")


def test_an_invite_accepted_at_once_from_many_places_makes_one_user(stack: Stack, owner: BffClient) -> None:
    token = owner.ok("POST", "/partner/users", json={"email": bff.unique_email("race"), "role": "viewer"})["token"]

    def accept(_: int) -> httpx.Response:
        with BffClient(stack.bff_url) as client:
            return client.post(f"/auth/invites/{token}/accept", json={"password": PASSWORD})

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(accept, range(4)))
    assert sorted(r.status_code for r in answers) == [200, 409, 409, 409], [r.text for r in answers]
    assert len(owner.ok("GET", "/partner/users")["data"]) == 2


# -- tenants ----------------------------------------------------------------------------------------


def test_partner_b_never_reaches_partner_as_people_or_tokens(stack: Stack, owner: BffClient, seeder: Seeder) -> None:
    partner_a = owner.user["partner_id"]
    viewer_a = bff.partner_user(stack, partner_a, "viewer", via=owner)
    _, token_a = bff.token(owner, "read")
    invite_a = owner.ok("POST", "/partner/users", json={"email": bff.unique_email(), "role": "viewer"})["invite"]
    customer_a = seeder.customer(partner_a, "A's customer", bff.unique("cus"))

    partner_b = bff.new_partner(seeder)
    with bff.partner_user(stack, partner_b, "owner") as owner_b, bff.token_client(stack, owner_b, "write") as robot_b:
        assert [u["id"] for u in owner_b.ok("GET", "/partner/users")["data"]] == [owner_b.user["id"]]
        b_tokens = owner_b.ok("GET", "/partner/tokens", params={"include_revoked": "true"})["data"]
        assert [t["id"] for t in b_tokens] == [robot_b.ok("GET", "/auth/session")["principal"]["token_id"]]
        assert all(i["id"] != invite_a["id"] for i in owner_b.ok("GET", "/partner/invites")["data"])
        for method, path, body in [
            ("PATCH", f"/partner/users/{viewer_a.user['id']}", {"role": "admin"}),
            ("DELETE", f"/partner/users/{viewer_a.user['id']}", None),
            ("GET", f"/partner/tokens/{token_a['id']}", None),
            ("DELETE", f"/partner/tokens/{token_a['id']}", None),
            ("DELETE", f"/partner/invites/{invite_a['id']}", None),
            ("GET", f"/partner/customers/{customer_a.id}/users", None),
            ("POST", f"/partner/customers/{customer_a.id}/invites", {"email": bff.unique_email()}),
        ]:
            answer = owner_b.request(method, path, json=body)
            assert refused(answer, 404) == "not_found", (method, path)
            assert viewer_a.user["id"] not in answer.text and token_a["id"] not in answer.text
        # B's token is refused on people and tokens whatever the ids
        assert refused(robot_b.get("/partner/users"), 403) == "forbidden"
        assert refused(robot_b.delete(f"/partner/tokens/{token_a['id']}"), 403) == "forbidden"
    # and nothing of A's changed
    assert viewer_a.ok("GET", "/auth/session")["principal"]["role"] == "viewer"
    assert owner.ok("GET", f"/partner/tokens/{token_a['id']}")["revoked_at"] is None
    assert any(i["id"] == invite_a["id"] for i in owner.ok("GET", "/partner/invites")["data"])
    viewer_a.close()


def test_only_the_platform_admin_reaches_admin_routes(stack: Stack, owner: BffClient, admin: BffClient) -> None:
    partner_id = owner.user["partner_id"]
    with bff.token_client(stack, owner, "write") as robot:
        for client in (owner, robot):
            assert refused(client.post(f"/admin/partners/{partner_id}/invites", json={"email": "a@b.cc"}), 403)
            assert refused(client.get(f"/admin/partners/{partner_id}/users"), 403)
    assert refused(admin.get("/partner/users"), 403) == "forbidden"
    assert refused(admin.post("/partner/tokens", json={"name": "x"}), 403) == "forbidden"
