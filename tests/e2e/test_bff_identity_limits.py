"""Identity's limits in time, on a BFF given small numbers (SQLite and PostgreSQL):
sign-in throttling per account and per client address, the idle and absolute expiry of a
session, and an invite's expiry.

Each throttling test signs in from its own loopback address (127.0.0.x: Linux answers on
all of 127/8), so that the address buckets of different tests never meet; the setup signs
in from 127.0.0.1, and successes count against nothing."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import httpx
import pytest

from cg_devstack import Stack
from cg_devstack.bff import BffClient
from cg_devstack.seed import Seeder
from support import bff
from support.bff import PASSWORD
from support.stacks import stack_on

# long enough that the failures of one test (a slow argon2 hash each) are all still in it
WINDOW_S = 8
PER_ACCOUNT = 3
PER_ADDRESS = 5
IDLE_S = 3
MAX_AGE_S = 6
INVITE_TTL_S = 2
ENV = {
    "bff": {
        "CG_BFF_SIGNIN_WINDOW_S": str(WINDOW_S),
        "CG_BFF_SIGNIN_MAX_FAILURES_PER_ACCOUNT": str(PER_ACCOUNT),
        "CG_BFF_SIGNIN_MAX_FAILURES_PER_ADDRESS": str(PER_ADDRESS),
        "CG_BFF_SESSION_IDLE_S": str(IDLE_S),
        "CG_BFF_SESSION_MAX_AGE_S": str(MAX_AGE_S),
        "CG_BFF_INVITE_TTL_S": str(INVITE_TTL_S),
    }
}
_addresses = itertools.count(10)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request) -> Iterator[Stack]:
    with stack_on(request, services=("nats", "keys", "ledger", "bff"), env=ENV) as s:
        yield s


@pytest.fixture
def owner(stack: Stack, seeder: Seeder) -> Iterator[BffClient]:
    with bff.partner_user(stack, bff.new_partner(seeder), "owner") as client:
        yield client


@pytest.fixture
def address() -> str:
    """A loopback address of this test's own."""
    return f"127.0.0.{next(_addresses)}"


def sign_in(stack: Stack, address: str, email: str, password: str) -> httpx.Response:
    with BffClient(stack.bff_url, local_address=address) as client:
        return client.post("/auth/sign-in", json={"email": email, "password": password})


def throttled(response: httpx.Response) -> int:
    """The Retry-After of a 429 too_many_attempts."""
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "too_many_attempts"
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= WINDOW_S
    return retry_after


def test_an_account_is_throttled_after_its_failures_then_freed(stack: Stack, owner: BffClient, address: str) -> None:
    email = owner.user["email"]
    for _ in range(PER_ACCOUNT):
        assert sign_in(stack, address, email, "wrong password!").status_code == 401
        assert owner.get("/auth/session").status_code == 200  # (activity: the session must not idle out)
    # now even the right password is refused, from any address, without being checked
    retry_after = throttled(sign_in(stack, address, email, PASSWORD))
    throttled(sign_in(stack, "127.0.0.1", email.upper(), PASSWORD))
    # an existing session is not affected
    assert owner.get("/auth/session").status_code == 200
    time.sleep(retry_after + 0.2)
    assert sign_in(stack, address, email, PASSWORD).status_code == 200
    # a success starts the account afresh
    assert sign_in(stack, address, email, "wrong password!").status_code == 401
    assert sign_in(stack, address, email, PASSWORD).status_code == 200


def test_a_throttled_answer_does_not_reveal_whether_the_account_exists(stack: Stack, owner: BffClient) -> None:
    nobody = bff.unique_email("nobody")
    for email in (owner.user["email"], nobody):
        address = f"127.0.0.{next(_addresses)}"  # one per account: the address limit is not tested here
        for _ in range(PER_ACCOUNT):
            assert sign_in(stack, address, email, "wrong password!").status_code == 401
    address = f"127.0.0.{next(_addresses)}"
    real = sign_in(stack, address, owner.user["email"], PASSWORD)
    unknown = sign_in(stack, address, nobody, PASSWORD)
    throttled(real)
    throttled(unknown)
    assert real.json() == unknown.json()


def test_an_address_is_throttled_across_accounts(stack: Stack, owner: BffClient, address: str) -> None:
    for _ in range(PER_ADDRESS):
        assert sign_in(stack, address, bff.unique_email("guess"), "wrong password!").status_code == 401
    # this address may not even try the owner's right password; another address may
    throttled(sign_in(stack, address, owner.user["email"], PASSWORD))
    other = f"127.0.0.{next(_addresses)}"
    assert sign_in(stack, other, owner.user["email"], PASSWORD).status_code == 200
    time.sleep(WINDOW_S + 0.2)
    assert sign_in(stack, address, owner.user["email"], PASSWORD).status_code == 200


def test_a_wrong_current_password_counts_as_a_failed_sign_in(stack: Stack, owner: BffClient, address: str) -> None:
    with BffClient(stack.bff_url, local_address=address).sign_in(owner.user["email"], PASSWORD) as client:
        for _ in range(PER_ACCOUNT):
            body = {"current_password": "wrong password!", "new_password": "a whole new one"}
            assert client.post("/auth/password", json=body).status_code == 400
        body = {"current_password": PASSWORD, "new_password": "a whole new one"}
        throttled(client.post("/auth/password", json=body))


def test_a_session_ends_after_its_idle_time(stack: Stack, owner: BffClient) -> None:
    with BffClient(stack.bff_url).sign_in(owner.user["email"], PASSWORD) as client:
        assert client.get("/auth/session").status_code == 200
        time.sleep(IDLE_S + 0.5)
        refused = client.get("/auth/session")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthenticated"


def test_a_session_ends_at_its_maximum_age_however_busy(stack: Stack, owner: BffClient) -> None:
    with BffClient(stack.bff_url).sign_in(owner.user["email"], PASSWORD) as client:
        started = time.monotonic()
        while time.monotonic() - started < MAX_AGE_S - 1:
            assert client.get("/auth/session").status_code == 200  # activity keeps it from idling out
            time.sleep(0.5)
        time.sleep(1.5)
        assert client.get("/auth/session").status_code == 401


def test_an_invite_expires(stack: Stack, owner: BffClient) -> None:
    created = owner.ok("POST", "/partner/users", json={"email": bff.unique_email("late"), "role": "viewer"})
    with BffClient(stack.bff_url) as invitee:
        assert invitee.get(f"/auth/invites/{created['token']}").status_code == 200
        time.sleep(INVITE_TTL_S + 0.3)
        for response in (
            invitee.get(f"/auth/invites/{created['token']}"),
            invitee.post(f"/auth/invites/{created['token']}/accept", json={"password": PASSWORD}),
        ):
            assert response.status_code == 409 and response.json()["error"]["code"] == "invite_expired"
    # an expired invite is no longer pending
    owner.sign_in(owner.user["email"], PASSWORD)  # the fixture's session may have idled out meanwhile
    assert created["invite"]["id"] not in {i["id"] for i in owner.ok("GET", "/partner/invites")["data"]}
