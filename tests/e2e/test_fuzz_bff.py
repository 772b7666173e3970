"""A fuzzer over the BFF's management API, driven by its own OpenAPI description.

schemathesis reads ``GET /api/v1/openapi.json`` and, for every operation in it, generates
requests that fit the description (positive) and requests that break it (negative: a
wrong type, a missing field, a value out of range, in the path, the query, a header or the
body). They go to the whole stack (NATS, keys, ledger and the BFF as processes, on SQLite)
as the caller each route is for:

- ``/admin/*``: the platform admin, signed in;
- ``/partner/*`` and ``/events``: an owner of the partner, signed in (session cookie and
  CSRF token: an owner may call every partner route, the people and tokens ones too);
- ``/customer/*``: a user of one of the partner's customers;
- ``/auth/sign-in`` and ``/auth/invites/*``: nobody (they are how one signs in);
- ``/auth/session``, ``/auth/password`` and ``/auth/sign-out``: a throwaway user, signed in
  again after a sign-out ends its session (no other caller's session is ever at stake).

Half the requests name real objects of the caller's tenant in the path and the query
(keys, customers, users, invites, tokens, webhook endpoints and deliveries, invite links),
carry values the server takes in the body (models, amounts as decimal strings, printable
names, emails, local webhook URLs; edge amounts too), a fresh ``Idempotency-Key``, and
real credentials on sign-in and password change: the code behind the look-ups and the
money runs, not only the 404s and the validation.
``/events`` streams for ever: it is read for a moment, then closed. Whatever the request:

- the answer is never a 5xx, and an error is always the API's one shape
  ``{"error": {"code", "message", "fields"}}``;
- a refused state change (a 4xx to a POST, PUT, PATCH or DELETE: key create, top-up,
  regenerate and revoke, AI-credit grants, deposits, customers' own keys, and the rest)
  moves no money and changes no key: every ledger account (partners' balances, customers'
  AI credits, keys' budgets, customer keys' deposits) is as it was, and so are the
  partner's keys (how many, their status, funding and secret prefix);
- the books pass the ledger's audit at the end.

Bounded: ``CG_FUZZ_EXAMPLES`` requests per operation and mode (6 by default), derandomized
for CI; ``CG_FUZZ_RANDOM=1`` and a bigger count for a longer hunt. One module of ~450
lines, not split: the world it sets up, the values it puts in and the checks it makes are
one fuzzer, read together.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, openapi

from cg_bff.app import create_app
from cg_bff.settings import Settings
from cg_bff.webhooks.events import SUBSCRIBABLE
from cg_devstack import Stack, StackConfig
from cg_devstack.bff import BffClient
from cg_devstack.seed import Seeder
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from helpers import eventually
from support import bff

EXAMPLES = int(os.environ.get("CG_FUZZ_EXAMPLES", "6"))
RANDOM = os.environ.get("CG_FUZZ_RANDOM") == "1"
API = "/api/v1"
MODELS = ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"]
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# The order of the areas: the customer before its partner (who may turn self-service off),
# the partner before the platform admin (who may suspend it).
AREAS = ("/auth/", "/customer", "/partner", "/events", "/admin/")


def _described_operations() -> list[tuple[str, str, bool]]:
    """(method, path, whether it takes any input) of every operation of the app's own
    description, by area (``test_every_operation_served_is_fuzzed`` checks that the
    served description has these). An operation with no input has no negative case."""
    doc = create_app(Settings()).openapi()
    ops = [
        (method.upper(), path, bool(op.get("parameters") or op.get("requestBody")))
        for path, item in doc["paths"].items()
        for method, op in item.items()
    ]
    order = {a: i for i, a in enumerate(AREAS)}
    return sorted(ops, key=lambda op: next((i for a, i in order.items() if op[1].startswith(API + a)), len(AREAS)))


OPERATIONS = _described_operations()
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path.removeprefix(API)} {name}")
    for method, path, has_input in OPERATIONS
    for mode, name in ((GenerationMode.POSITIVE, "fits"), (GenerationMode.NEGATIVE, "breaks"))
    if has_input or mode is GenerationMode.POSITIVE
]


def area(path: str) -> str:
    """Whose route this is: admin, partner, customer, anonymous, or the throwaway user's."""
    p = path.removeprefix(API)
    if p in ("/auth/session", "/auth/password", "/auth/sign-out"):
        return "throwaway"
    if p.startswith("/auth/"):
        return "anonymous"
    if p.startswith("/admin/"):
        return "admin"
    return "customer" if p.startswith("/customer") else "partner"


@dataclass
class Caller:
    """Who sends a request: a session's cookie and CSRF token, or nobody."""

    cookies: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, client: BffClient) -> Caller:
        return cls({"cg_session": client.http.cookies["cg_session"]}, {"X-CSRF-Token": client.csrf or ""})


@dataclass
class Throwaway:
    """The user of the routes that end its own session or change its password."""

    url: str
    email: str
    password: str
    caller: Caller = field(default_factory=Caller)

    def sign_in(self) -> None:
        with BffClient(self.url) as client:
            self.caller = Caller.of(client.sign_in(self.email, self.password))


@dataclass
class World:
    stack: Stack
    seeder: Seeder
    schema: Any
    http: requests.Session
    callers: dict[str, Caller]
    throwaway: Throwaway
    partner_id: str
    # Real ids to put in a path or query parameter, by area then by the parameter's name,
    # or by (path, name) where a name means something else on that path.
    ids: dict[str, dict[Any, list[str]]]
    customers: list[str]
    ledger_admin: ledger_pb2_grpc.LedgerAdminServiceStub
    # status codes answered, by operation and mode (shown when the audit test runs with -s)
    seen: dict[str, Counter[int]] = field(default_factory=dict)

    def caller(self, path: str) -> Caller:
        who = area(path)
        return self.throwaway.caller if who == "throwaway" else self.callers[who]


def _cookieless() -> requests.Session:
    """A session that keeps no cookie it is sent (a sign-in must not replace a caller's
    session): each request carries its caller's cookie itself."""
    s = requests.Session()
    s.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return s


def _idem(tag: str) -> dict[str, str]:
    return {"Idempotency-Key": bff.unique(tag)}


def _user_id(client: BffClient) -> str:
    assert client.user is not None
    return str(client.user["id"])


def _populate(stack: Stack, seeder: Seeder, http: requests.Session, ledger: grpc.Channel) -> World:
    """The partner, its people, customers, keys, tokens, webhooks and invites that the
    fuzzer's requests may name; the platform admin, and another partner for it to act on."""
    admin = bff.admin(stack)
    pid = bff.new_partner(seeder, credits=1_000_000, tier="enterprise")
    other = bff.new_partner(seeder, credits=1_000)
    seeder.self_service_on(pid)
    owner = bff.partner_user(stack, pid, "owner", via=admin)
    team = [bff.partner_user(stack, pid, role, via=owner) for role in ("viewer", "admin")]
    acme = seeder.customer(pid, "Acme", ref=bff.unique("cus"))
    beta = seeder.customer(pid, "Beta", ref=bff.unique("cus"))
    acme_user = bff.customer_user(stack, owner, acme.id)
    beta_user = bff.customer_user(stack, owner, beta.id)
    owner.ok("POST", f"/partner/customers/{acme.id}/ai-credits", json={"amount": "500"}, headers=_idem("grant"))

    keys = [seeder.funded_key(pid, 200, MODELS, name=f"fuzz {i}").key_id for i in range(4)]
    billing = {"customer_id": acme.id, "profit_multiplier": "1.5", "price_per_ai_credit_cents": "1"}
    billed = owner.ok(
        "POST",
        "/partner/keys",
        json={"name": "billed", "budget_credits": 200, "allowed_models": MODELS, "billing": billing},
        headers=_idem("key"),
    )["key"]["id"]
    own = [
        acme_user.ok("POST", "/customer/keys", json={"name": f"own {i}"}, headers=_idem("own"))["key"]["id"]
        for i in range(3)
    ]
    _, token = bff.token(owner, "read")
    endpoints = [
        owner.ok(
            "POST",
            "/partner/webhooks",
            json={"url": "http://127.0.0.1:9/hook", "event_types": list(SUBSCRIBABLE)},
            headers=_idem("hook"),
        )["endpoint"]["id"]
        for _ in range(3)
    ]
    endpoint = endpoints[0]

    def test_sent() -> str:  # 503 until the BFF's NATS connection (made in the background) is up
        r = owner.post(f"/partner/webhooks/{endpoint}/test")
        return str(r.json()["id"]) if r.status_code == 202 else ""

    delivery = eventually(test_sent, what="a webhook test delivery")

    def invite() -> dict:
        return owner.ok("POST", "/partner/users", json={"email": bff.unique_email("fuzz"), "role": "viewer"})

    pending = [invite()["invite"]["id"] for _ in range(3)]
    links = [invite() for _ in range(5)]
    BffClient(stack.bff_url).accept(links[0]["token"], bff.PASSWORD).close()  # a used link
    owner.ok("DELETE", f"/partner/invites/{links[1]['invite']['id']}")  # a revoked one

    email = bff.unique_email("throwaway")
    bff.partner_user(stack, other, "viewer", email=email).close()
    throwaway = Throwaway(stack.bff_url, email, bff.PASSWORD)
    throwaway.sign_in()

    customer_users = f"{API}/partner/customers/{{customer_id}}/users/{{user_id}}"
    ids: dict[str, dict[Any, list[str]]] = {
        "admin": {"partner_id": [other, pid]},
        "partner": {
            "key_id": [keys[0], keys[1], billed, own[0]],
            # revoked for good: keys of their own, so that the other routes still find live ones
            ("POST", f"{API}/partner/keys/{{key_id}}/revoke", "key_id"): [keys[2], keys[3], own[1]],
            "customer_id": [acme.id, beta.id],
            "id": [keys[0], acme.id],
            "user_id": [_user_id(u) for u in team],
            (customer_users, "customer_id"): [beta.id],
            (customer_users, "user_id"): [_user_id(beta_user)],
            "invite_id": pending,
            "token_id": [token["id"]],
            "endpoint_id": [endpoint],
            ("DELETE", f"{API}/partner/webhooks/{{endpoint_id}}", "endpoint_id"): endpoints[1:],
            "delivery_id": [delivery],
        },
        "customer": {"key_id": [own[2], own[0], billed, keys[0]]},
        "anonymous": {"token": [link["token"] for link in links]},
        "throwaway": {},
    }
    callers = {"admin": Caller.of(admin), "partner": Caller.of(owner), "customer": Caller.of(acme_user)}
    callers["anonymous"] = Caller()
    for client in (admin, owner, acme_user, beta_user, *team):
        client.close()  # their sessions live on: the fuzzer sends their cookies itself
    return World(
        stack=stack,
        seeder=seeder,
        schema=openapi.from_url(f"{stack.bff_url}{API}/openapi.json"),
        http=http,
        callers=callers,
        throwaway=throwaway,
        partner_id=pid,
        ids=ids,
        customers=[acme.id, beta.id],
        ledger_admin=ledger_pb2_grpc.LedgerAdminServiceStub(ledger),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    var = Path(tmp_path_factory.mktemp("fuzz-bff"))
    # the fuzzer signs in with wrong passwords again and again: no account or address locks
    many = "1000000"
    env = {"bff": {"CG_BFF_SIGNIN_MAX_FAILURES_PER_ACCOUNT": many, "CG_BFF_SIGNIN_MAX_FAILURES_PER_ADDRESS": many}}
    config = StackConfig(var_dir=var, services=("nats", "keys", "ledger", "bff"), env=env)
    with (
        Stack(config) as stack,
        contextlib.closing(Seeder(stack.keys_addr, stack.ledger_addr)) as seeder,
        grpc.insecure_channel(stack.ledger_addr) as ledger,
        _cookieless() as http,
    ):
        yield _populate(stack, seeder, http, ledger)


def _snapshot(world: World) -> tuple:
    """Every ledger account's posted and pending amounts, and the partner's keys."""
    accounts: dict[str, tuple[int, ...]] = {}
    token = ""
    while True:
        page = world.ledger_admin.ListAccounts(
            ledger_pb2.ListAccountsRequest(page_size=1000, page_token=token),
            metadata=(("x-cg-admin-token", world.stack.ledger_admin_token),),
            timeout=10,
        )
        for a in page.accounts:
            accounts[a.id] = (a.debits_posted, a.credits_posted, a.debits_pending, a.credits_pending)
        token = page.next_page_token
        if not token:
            break
    listed = world.seeder.keys.ListKeys(
        keys_pb2.ListKeysRequest(actor=keys_pb2.Actor(partner_id=world.partner_id), include_revoked=True), timeout=10
    )
    # a key's expiry passing between two snapshots is not a change anyone made
    status = {keys_pb2.KEY_STATUS_EXPIRED: keys_pb2.KEY_STATUS_ACTIVE}
    keys = sorted((k.id, status.get(k.status, k.status), k.funded_ucr, k.prefix) for k in listed.keys)
    return accounts, keys


# Values the server takes, for the fields whose description says less than the server
# checks (a decimal is any string to it, a name any text without NUL, an email any text).
DECIMAL = st.one_of(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal(5000), places=2).map(str),
    st.sampled_from(["0.000001", "1E-7", "1e-30", "1E+6", "999999999.999999", "1000000001", "0", "-1", "NaN", "Inf"]),
)
TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=40)
REAL_VALUES: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(
        (
            "amount",
            "amount_credits",
            "profit_multiplier",
            "default_profit_multiplier",
            "price_per_ai_credit_cents",
            "ai_credit_price_cents",
            "floor_usd_per_mtok",
            "threshold_usd",
            "amount_usd",
        ),
        DECIMAL,
    ),
    **dict.fromkeys(("name", "description", "memo", "note", "payment_reference", "display_name"), TEXT),
    "logo_url": st.sampled_from(
        ["https://cdn.example.com/logo.png", "data:image/png;base64,iVBORw0KGgo=", "http://example.com/x.png"]
    ),
    **dict.fromkeys(("primary_color", "accent_color"), st.from_regex(r"#[0-9a-fA-F]{6}", fullmatch=True)),
    "email": st.from_regex(r"[a-z]{1,12}", fullmatch=True).map(lambda s: f"{s}@example.com"),
    "url": st.sampled_from(["http://127.0.0.1:9/hook", "http://localhost:9/hook"]),
    "tier": st.sampled_from(["starter", "growth", "enterprise"]),
    **dict.fromkeys(("password", "new_password"), st.text("abcdefghijklmnopqrstuvwxyz0123456789 ", min_size=12)),
}
WHOLE_CREDITS = st.integers(min_value=1, max_value=500)


def _real_values(body: dict[str, Any], data: st.DataObject, depth: int = 0) -> None:
    for name, value in body.items():
        if isinstance(value, dict) and depth < 2:
            _real_values(value, data, depth + 1)
        elif isinstance(value, int) and not isinstance(value, bool) and name.endswith("credits"):
            body[name] = data.draw(WHOLE_CREDITS, label=name)
        elif name in REAL_VALUES:
            body[name] = data.draw(REAL_VALUES[name], label=name)


def _realistic(world: World, case: Any, data: st.DataObject) -> dict[str, str]:
    """Puts real ids, models, values and credentials in the case; answers the headers to add."""
    pools = world.ids[area(case.path)]
    method = case.method.upper()

    def real(name: str) -> list[str]:
        return pools.get((method, case.path, name)) or pools.get((case.path, name)) or pools.get(name) or []

    for params in (case.path_parameters, case.query):
        for name in list(params or {}):
            if choices := real(name):
                params[name] = data.draw(st.sampled_from(choices), label=name)
    body = case.body
    if isinstance(body, dict):
        if method == "PATCH":  # most fields of a change may be left out, but not sent as null
            for name in [n for n, v in body.items() if v is None]:
                del body[name]
        _real_values(body, data)
        for name, least in (("allowed_models", 1), ("models", 0)):
            if name in body:
                body[name] = data.draw(st.lists(st.sampled_from(MODELS), min_size=least, max_size=3, unique=True))
        if isinstance(body.get("billing"), dict):
            body["billing"]["customer_id"] = data.draw(st.sampled_from(world.customers))
        if case.path == f"{API}/auth/sign-in":
            body["email"] = world.throwaway.email
            body["password"] = data.draw(st.sampled_from([world.throwaway.password, "not the password at all"]))
        if case.path == f"{API}/auth/password":
            body["current_password"] = world.throwaway.password
    if method in UNSAFE:
        return {"Idempotency-Key": data.draw(st.uuids(), label="Idempotency-Key").hex}
    return {}


def _fuzz(world: World, data: st.DataObject, method: str, path: str, mode: GenerationMode, label: str) -> None:
    case = data.draw(world.schema[path][method].as_strategy(generation_mode=mode), label="case")
    extra = _realistic(world, case, data) if data.draw(st.booleans(), label="realistic") else {}
    caller = world.caller(path)
    before = _snapshot(world) if method in UNSAFE else None
    # /events streams until the client leaves: read it for a second
    timeout = (5, 1) if path == f"{API}/events" else 30
    r = case.call(
        base_url=world.stack.bff_url,
        session=world.http,
        headers={**caller.headers, **extra},
        cookies=caller.cookies,
        timeout=timeout,
    )
    world.seen.setdefault(label, Counter())[r.status_code] += 1
    sent = r.request
    where = (
        f"{sent.method} {sent.url} -> {r.status_code}: {r.text[:500]}\n"
        f"headers: {dict(case.headers or {})} {extra}\nbody: {str(case.body)[:1000]}"
    )
    assert r.status_code < 500, where
    if r.status_code >= 400:
        try:
            error = r.json()
        except ValueError:
            error = None
        assert isinstance(error, dict) and set(error) == {"error"}, where
        assert set(error["error"]) == {"code", "message", "fields"}, where
        if before is not None:
            assert _snapshot(world) == before, f"a refused request moved money or changed a key:\n{where}"
    elif path in (f"{API}/auth/sign-out", f"{API}/auth/password"):
        if path.endswith("/password"):
            world.throwaway.password = case.body["new_password"]
        else:
            world.throwaway.sign_in()  # its session (or all of them) ended


SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=not RANDOM, database=None, suppress_health_check=list(HealthCheck)
)


def test_every_operation_served_is_fuzzed(world: World):
    served = world.http.get(f"{world.stack.bff_url}{API}/openapi.json", timeout=10).json()
    assert {(m.upper(), p) for p, item in served["paths"].items() for m in item} == {(m, p) for m, p, _ in OPERATIONS}


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_request_is_a_server_fault_and_no_refusal_moves_money(world: World, request, method, path, mode):
    label = request.node.callspec.id

    @SETTINGS
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        _fuzz(world, data, method, path, mode, label)

    run()


def test_the_books_pass_the_audit_after_the_fuzzing(world: World):
    for label, codes in world.seen.items():
        print(f"{label}: {dict(sorted(codes.items()))}")
    audit = world.ledger_admin.AuditBooks(
        ledger_pb2.AuditBooksRequest(), metadata=(("x-cg-admin-token", world.stack.ledger_admin_token),), timeout=30
    )
    assert audit.ok, list(audit.discrepancies)
