"""The management API's cross-tenant authorization matrix, over HTTP through the stack's
own BFF process with real users (SQLite; nats, keys, ledger, bff).

Every (method, path) of ``/api/v1/openapi.json`` has a rule in ``ROUTES``: who may call it
(``Rule.who``) and which kind of object each of its ids names (``Rule.ids``, in the path,
the query or the body). A route without a rule, a rule without a route, or an
``x-cg-anonymous`` mark that disagrees with the rule fails ``test_every_route_has_a_rule``.

The matrix calls every route as each of nine principals (anonymous; the platform admin;
partner A's owner, viewer, read-only and read-write management tokens; partner B's
owner; a user of A's customer and one of B's) with each set of ids: A's objects, B's,
for a customer's own key also another customer of A's, and for a route with two ids the
two mixed. Each cell is one of:

- allowed (the principal's role may, and every id is its own tenant's): a 2xx;
- refused by role: 401 for anonymous, 403 for the others;
- refused by tenant (the role may, an id is another tenant's): exactly the answer (a
  404, or a 400 naming the field for an id in the body; same code and message) that the
  same call gets with those ids replaced by random ones: another tenant's object looks
  like none.

The refused cells run first, and nothing moved: both partners' balances, keys,
customers, people, invites, tokens, webhooks and branding read the same before and after. The
allowed cells run next; those that destroy (revoke, regenerate, suspend, resume, delete)
act on throwaway objects made for the cell; accepting an invite (a throwaway one) signs in a copy of the
caller's client. Those that replace or end the caller's session run after all others,
on its own client: sign-in (the client keeps the new session, as a browser does), then
the password change (which ends the user's other sessions), then sign-out.

(Over 400 lines: ``ROUTES`` is the test, and stays in one piece beside what reads it.)
"""

from __future__ import annotations

import contextlib
import secrets
import string
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.json_format import MessageToDict

from cg_devstack import Stack
from cg_devstack.bff import BffClient
from cg_devstack.seed import Seeder
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2 as lpb
from helpers import eventually
from support import bff
from support.bff import PASSWORD
from support.stacks import stack_on

SERVICES = ("nats", "keys", "ledger", "bff")
API = "/api/v1"
MODELS = ["gpt-4o-mini"]
NEW_PASSWORD = "another horse battery staple"

# -- principals -------------------------------------------------------------------------

ANON, ADMIN = "anonymous", "admin"
A_OWNER, A_VIEWER, A_READ, A_WRITE, B_OWNER = "A owner", "A viewer", "A read token", "A write token", "B owner"
A_CUST, B_CUST = "A's customer", "B's customer"


@dataclass(frozen=True)
class Who:
    partner: str = ""  # "A" or "B": the partner the principal acts for
    customer: str = ""  # "A1" or "B1": a customer's user
    token: bool = False  # a management API token (no session)


PRINCIPALS = {
    ANON: Who(),
    ADMIN: Who(),
    A_OWNER: Who("A"),
    A_VIEWER: Who("A"),
    A_READ: Who("A", token=True),
    A_WRITE: Who("A", token=True),
    B_OWNER: Who("B"),
    A_CUST: Who("A", "A1"),
    B_CUST: Who("B", "B1"),
}
EVERYONE = frozenset(PRINCIPALS)
SIGNED_IN = EVERYONE - {ANON}
SESSIONS = frozenset(p for p in SIGNED_IN if not PRINCIPALS[p].token)
TENANTS = SIGNED_IN - {ADMIN}
ADMINS = frozenset({ADMIN})
READERS = frozenset({A_OWNER, A_VIEWER, A_READ, A_WRITE, B_OWNER})  # PartnerReader
PEOPLE = frozenset({A_OWNER, A_VIEWER, B_OWNER})  # a partner's users, any role (no token)
WRITERS = frozenset({A_OWNER, A_WRITE, B_OWNER})  # PartnerWriter
MANAGERS = frozenset({A_OWNER, B_OWNER})  # PartnerManager: owners and admins, signed in
CUSTOMERS = frozenset({A_CUST, B_CUST})

# -- sets of ids: whose objects a cell names ------------------------------------------------


@dataclass(frozen=True)
class Owner:
    partner: str
    customer: str


SETS = {"A": Owner("A", "A1"), "B": Owner("B", "B1"), "A2": Owner("A", "A2")}
CUSTOMER_OWNED = frozenset({"customer_key"})  # kinds a customer owns; the others, a partner


def own(principal: str, kind: str, id_set: str) -> bool:
    who, owner = PRINCIPALS[principal], SETS[id_set]
    if kind in CUSTOMER_OWNED and who.customer:
        return owner.customer == who.customer
    return owner.partner == who.partner


# -- the rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    who: frozenset[str]
    # each {placeholder} of the path, query and body, and the kind of object it names
    ids: dict[str, str] = field(default_factory=dict)
    scoped: bool = True  # the ids must be the caller's own tenant's (False: any, e.g. the admin's)
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None  # {email} and {name} are made unique per call; {my_email}, {my_password} the caller's
    fresh: dict[str, str] = field(default_factory=dict)  # allowed cells act on a throwaway object of this kind
    copy: bool = False  # allowed cells on a copy of the caller's client (what the answer sets stays there)
    last: int = 0  # replaces or ends the caller's session: after every other cell, in this order
    # what another tenant's id gets, as an id that names nothing does (400: an id in the body)
    hidden: frozenset[int] = frozenset({404})
    stream: bool = False  # server-sent events: read the status, close


KEY = {"key_id": "key"}
CUSTOMER = {"customer_id": "customer"}
PARTNER = {"partner_id": "partner"}
ENDPOINT = {"endpoint_id": "endpoint"}
DELIVERY = {"endpoint_id": "endpoint", "delivery_id": "delivery"}
OWN_KEY = {"key_id": "customer_key"}
INVITE_TOKEN = {"token": "invite_token"}
BILLING = {"customer_id": "{customer_id}", "profit_multiplier": "1.5", "price_per_ai_credit_cents": "1"}
HOOK_URL = "http://127.0.0.1:9/hook"  # the stack's BFF allows private targets; nothing delivers here
SELF_SERVICE = {
    "enabled": True,
    "apply_to_new_customers": True,
    "default_profit_multiplier": "1.7",
    "ai_credit_price_cents": "2",
}
BRANDING = {"display_name": "{name}", "logo_url": "https://cdn.example.com/logo.png", "primary_color": "#0b5cad"}

Route = tuple[str, str]  # (METHOD, path under /api/v1)
ROUTES: dict[Route, Rule] = {
    # the platform admin
    ("GET", "/admin/partners"): Rule(ADMINS),
    ("POST", "/admin/partners"): Rule(ADMINS, body={"name": "{name}", "tier": "growth"}),
    ("GET", "/admin/partners/{partner_id}"): Rule(ADMINS, PARTNER, scoped=False),
    ("PATCH", "/admin/partners/{partner_id}"): Rule(ADMINS, PARTNER, scoped=False, body={"name": "{name}"}),
    ("POST", "/admin/partners/{partner_id}/deposits"): Rule(
        ADMINS, PARTNER, scoped=False, body={"amount_credits": "1"}
    ),
    ("GET", "/admin/catalog"): Rule(ADMINS),
    ("GET", "/admin/audit"): Rule(ADMINS),
    ("POST", "/admin/partners/{partner_id}/invites"): Rule(
        ADMINS, PARTNER, scoped=False, body={"email": "{email}", "role": "viewer"}
    ),
    ("GET", "/admin/partners/{partner_id}/users"): Rule(ADMINS, PARTNER, scoped=False),
    # signing in and out; invites (x-cg-anonymous: the token is the credential)
    ("POST", "/auth/sign-in"): Rule(EVERYONE, body={"email": "{my_email}", "password": "{my_password}"}, last=1),
    ("POST", "/auth/sign-out"): Rule(SESSIONS, last=3),
    ("GET", "/auth/session"): Rule(SIGNED_IN),
    ("POST", "/auth/password"): Rule(
        SESSIONS,
        body={"current_password": "{my_password}", "new_password": NEW_PASSWORD},
        last=2,
    ),
    ("GET", "/auth/invites/{token}"): Rule(EVERYONE, INVITE_TOKEN, scoped=False),
    ("POST", "/auth/invites/{token}/accept"): Rule(
        EVERYONE, INVITE_TOKEN, scoped=False, body={"password": PASSWORD}, fresh=INVITE_TOKEN, copy=True
    ),
    # a customer's own
    ("GET", "/customer"): Rule(CUSTOMERS),
    ("GET", "/customer/keys"): Rule(CUSTOMERS),
    ("POST", "/customer/keys"): Rule(CUSTOMERS, body={"name": "{name}", "allowed_models": MODELS}),
    ("POST", "/customer/keys/{key_id}/revoke"): Rule(CUSTOMERS, OWN_KEY, fresh=OWN_KEY),
    ("GET", "/customer/balance"): Rule(CUSTOMERS),
    ("GET", "/customer/models"): Rule(CUSTOMERS),
    ("GET", "/customer/branding"): Rule(CUSTOMERS),  # its own partner's: no id to name another
    ("GET", "/customer/usage/series"): Rule(CUSTOMERS, OWN_KEY, query={"key_id": "{key_id}"}),
    ("GET", "/customer/usage/requests"): Rule(CUSTOMERS, OWN_KEY, query={"key_id": "{key_id}"}),
    ("GET", "/events"): Rule(TENANTS, stream=True),
    # the partner's account
    ("GET", "/partner"): Rule(READERS),
    ("GET", "/partner/models"): Rule(READERS),
    ("POST", "/partner/billing-preview"): Rule(
        READERS, body={"models": MODELS, "profit_multiplier": "1.5", "price_per_ai_credit_cents": "1"}
    ),
    ("GET", "/partner/self-service"): Rule(READERS),
    ("PUT", "/partner/self-service"): Rule(WRITERS, body=SELF_SERVICE),
    ("GET", "/partner/branding"): Rule(READERS),
    ("PUT", "/partner/branding"): Rule(WRITERS, body=BRANDING),
    ("GET", "/partner/statement"): Rule(READERS),
    # its customers
    ("GET", "/partner/customers"): Rule(READERS),
    ("POST", "/partner/customers"): Rule(WRITERS, body={"name": "{name}"}),
    ("GET", "/partner/customers/{customer_id}"): Rule(READERS, CUSTOMER),
    ("PATCH", "/partner/customers/{customer_id}"): Rule(WRITERS, CUSTOMER, body={"name": "{name}"}),
    ("POST", "/partner/customers/{customer_id}/ai-credits"): Rule(WRITERS, CUSTOMER, body={"amount": "1"}),
    # its keys (a new key billed to a customer: the customer's id is in the body)
    ("POST", "/partner/keys/quote"): Rule(READERS, body={"budget_credits": 10}),
    ("GET", "/partner/keys"): Rule(READERS),
    ("POST", "/partner/keys"): Rule(
        WRITERS,
        CUSTOMER,
        body={"name": "{name}", "budget_credits": 1, "allowed_models": MODELS, "billing": BILLING},
        hidden=frozenset({400}),  # "billing.customer_id: not one of your customers"
    ),
    ("GET", "/partner/keys/{key_id}"): Rule(READERS, KEY),
    ("PATCH", "/partner/keys/{key_id}"): Rule(
        WRITERS,
        {"key_id": "key", "customer_id": "customer"},
        body={"name": "{name}", "billing": BILLING},
        hidden=frozenset({400, 404}),
    ),
    ("POST", "/partner/keys/{key_id}/top-up"): Rule(WRITERS, KEY, body={"amount_credits": 1}),
    ("POST", "/partner/keys/{key_id}/regenerate"): Rule(WRITERS, KEY, fresh=KEY),
    ("POST", "/partner/keys/{key_id}/revoke"): Rule(WRITERS, KEY, fresh=KEY),
    ("POST", "/partner/keys/{key_id}/suspend"): Rule(WRITERS, KEY, body={"note": "matrix"}, fresh=KEY),
    ("POST", "/partner/keys/{key_id}/resume"): Rule(
        WRITERS, {"key_id": "suspended_key"}, fresh={"key_id": "suspended_key"}
    ),
    # management API tokens
    ("GET", "/partner/tokens"): Rule(PEOPLE),
    ("POST", "/partner/tokens"): Rule(MANAGERS, body={"name": "{name}", "scope": "read"}),
    ("GET", "/partner/tokens/{token_id}"): Rule(PEOPLE, {"token_id": "token"}),
    ("DELETE", "/partner/tokens/{token_id}"): Rule(MANAGERS, {"token_id": "token"}, fresh={"token_id": "token"}),
    # usage (ids in the query)
    ("GET", "/partner/usage/series"): Rule(READERS, KEY, query={"by": "key", "id": "{key_id}"}),
    ("GET", "/partner/usage/requests"): Rule(
        READERS,
        {"key_id": "key", "customer_id": "customer"},
        query={"key_id": "{key_id}", "customer_id": "{customer_id}"},
    ),
    ("GET", "/partner/usage/profit"): Rule(READERS),
    ("GET", "/partner/usage/runway"): Rule(READERS),
    ("GET", "/partner/keys/{key_id}/runway"): Rule(READERS, KEY),
    # people
    ("GET", "/partner/users"): Rule(PEOPLE),
    ("POST", "/partner/users"): Rule(MANAGERS, body={"email": "{email}", "role": "viewer"}),
    ("PATCH", "/partner/users/{user_id}"): Rule(MANAGERS, {"user_id": "member"}, body={"role": "admin"}),
    ("DELETE", "/partner/users/{user_id}"): Rule(MANAGERS, {"user_id": "member"}, fresh={"user_id": "member"}),
    ("GET", "/partner/invites"): Rule(MANAGERS),
    ("DELETE", "/partner/invites/{invite_id}"): Rule(MANAGERS, {"invite_id": "invite"}, fresh={"invite_id": "invite"}),
    ("GET", "/partner/customers/{customer_id}/users"): Rule(PEOPLE, CUSTOMER),
    ("POST", "/partner/customers/{customer_id}/invites"): Rule(MANAGERS, CUSTOMER, body={"email": "{email}"}),
    ("DELETE", "/partner/customers/{customer_id}/users/{user_id}"): Rule(
        MANAGERS, {"customer_id": "customer", "user_id": "customer_member"}, fresh={"user_id": "customer_member"}
    ),
    # webhooks
    ("GET", "/partner/webhooks"): Rule(READERS),
    ("POST", "/partner/webhooks"): Rule(WRITERS, body={"url": HOOK_URL, "event_types": ["key.suspended"]}),
    ("GET", "/partner/webhooks/{endpoint_id}"): Rule(READERS, ENDPOINT),
    ("PATCH", "/partner/webhooks/{endpoint_id}"): Rule(WRITERS, ENDPOINT, body={"description": "{name}"}),
    ("DELETE", "/partner/webhooks/{endpoint_id}"): Rule(WRITERS, ENDPOINT, fresh=ENDPOINT),
    ("POST", "/partner/webhooks/{endpoint_id}/rotate-secret"): Rule(WRITERS, ENDPOINT, body={"keep_previous_s": 600}),
    ("GET", "/partner/webhooks/{endpoint_id}/deliveries"): Rule(READERS, ENDPOINT),
    ("GET", "/partner/webhooks/{endpoint_id}/deliveries/{delivery_id}"): Rule(READERS, DELIVERY),
    ("POST", "/partner/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver"): Rule(WRITERS, DELIVERY),
    ("POST", "/partner/webhooks/{endpoint_id}/test"): Rule(WRITERS, ENDPOINT),
}

# -- the stack and its tenants ------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite"])
def stack(request) -> Iterator[Stack]:
    with stack_on(request, services=SERVICES) as s:
        yield s


@pytest.fixture(scope="module")
def openapi(stack: Stack) -> dict[Route, dict[str, Any]]:
    """Every operation of the running BFF's OpenAPI description, by (METHOD, path under /api/v1)."""
    doc = httpx.get(f"{stack.bff_url}{API}/openapi.json", timeout=10).raise_for_status().json()
    return {
        (method.upper(), path.removeprefix(API)): op for path, ops in doc["paths"].items() for method, op in ops.items()
    }


@dataclass
class World:
    stack: Stack
    seeder: Seeder
    partners: dict[str, str]  # "A", "B" -> partner id
    customers: dict[str, str]  # "A1", "A2", "B1" -> customer id
    clients: dict[str, BffClient]  # principal -> its client (anonymous: none signed in)
    creds: dict[str, tuple[str, str]]  # principal -> (email, password) to sign in with
    tokens: dict[str, str]  # token principals -> secret
    ids: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, set) -> an object's id

    def owner(self, partner: str) -> BffClient:
        return self.clients[A_OWNER if partner == "A" else B_OWNER]

    def copy(self, principal: str) -> BffClient:
        """A client with the principal's credentials in a cookie jar of its own."""
        made = BffClient(self.stack.bff_url, token=self.tokens.get(principal))
        made.http.cookies.update(self.clients[principal].http.cookies)
        made.csrf = self.clients[principal].csrf
        return made


def user_of(client: BffClient) -> dict[str, str]:
    assert client.user is not None, "not signed in"
    return client.user


def make(world: World, kind: str, id_set: str) -> str:
    """A new object of this kind belonging to the id set's tenant; its id (for an invite
    link, its token)."""
    partner_label, customer_label = SETS[id_set].partner, SETS[id_set].customer
    pid, cid = world.partners[partner_label], world.customers[customer_label]
    owner, seeder = world.owner(partner_label), world.seeder
    if kind == "partner":
        return pid
    if kind == "customer":
        return cid
    if kind in ("key", "suspended_key"):
        key_id = seeder.funded_key(pid, 1, MODELS, name="matrix").key_id
        if kind == "suspended_key":
            seeder.keys.SuspendKey(pb.SuspendKeyRequest(actor=pb.Actor(partner_id=pid), key_id=key_id), timeout=5)
        return key_id
    if kind == "customer_key":
        made = seeder.keys.CreateCustomerKey(
            pb.CreateCustomerKeyRequest(
                actor=pb.Actor(partner_id=pid, customer_id=cid),
                idempotency_key=bff.unique("ck"),
                name="matrix",
                allowed_models=MODELS,
            ),
            timeout=5,
        )
        return str(made.key.id)
    if kind == "token":
        return str(bff.token(owner)[1]["id"])
    if kind == "member":
        with bff.partner_user(world.stack, pid, "viewer", via=owner) as user:
            return user_of(user)["id"]
    if kind == "customer_member":
        with bff.customer_user(world.stack, owner, cid) as user:
            return user_of(user)["id"]
    if kind in ("invite", "invite_token"):
        made = owner.ok("POST", "/partner/users", json={"email": bff.unique_email("inv"), "role": "viewer"})
        return str(made["invite"]["id"] if kind == "invite" else made["token"])
    if kind == "endpoint":
        made = owner.ok(
            "POST",
            "/partner/webhooks",
            json={"url": HOOK_URL, "event_types": ["key.suspended"]},
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        return str(made["endpoint"]["id"])
    if kind == "delivery":  # a test event to the set's endpoint (published on NATS: the BFF may still be connecting)
        endpoint = world.ids[("endpoint", id_set)]

        def sent() -> httpx.Response | None:
            r = owner.post(f"/partner/webhooks/{endpoint}/test")
            return r if r.status_code == 202 else None

        answer = eventually(sent, timeout_s=20, what="a test delivery (the BFF connected to NATS)")
        assert answer is not None
        return str(answer.json()["id"])
    raise KeyError(kind)


@pytest.fixture(scope="module")
def world(stack: Stack) -> Iterator[World]:
    with contextlib.ExitStack() as opened:
        seeder = Seeder(stack.keys_addr, stack.ledger_addr)
        opened.callback(seeder.close)
        admin = opened.enter_context(bff.admin(stack))
        partners = {"A": bff.new_partner(seeder, credits=20_000), "B": bff.new_partner(seeder, credits=20_000)}
        for pid in partners.values():
            seeder.self_service_on(pid)  # customers see AI Gateway, and may make their own keys
        customers = {
            label: seeder.customer(partners[label[0]], f"Customer {label}", bff.unique("cus")).id
            for label in ("A1", "A2", "B1")
        }
        a_owner = opened.enter_context(bff.partner_user(stack, partners["A"], "owner", via=admin))
        b_owner = opened.enter_context(bff.partner_user(stack, partners["B"], "owner", via=admin))
        tokens = {A_READ: bff.token(a_owner, "read")[0], A_WRITE: bff.token(a_owner, "write")[0]}
        clients = {
            ANON: BffClient(stack.bff_url),
            ADMIN: admin,
            A_OWNER: a_owner,
            A_VIEWER: bff.partner_user(stack, partners["A"], "viewer", via=a_owner),
            A_READ: BffClient(stack.bff_url, token=tokens[A_READ]),
            A_WRITE: BffClient(stack.bff_url, token=tokens[A_WRITE]),
            B_OWNER: b_owner,
            A_CUST: bff.customer_user(stack, a_owner, customers["A1"]),
            B_CUST: bff.customer_user(stack, b_owner, customers["B1"]),
        }
        for client in clients.values():
            opened.enter_context(client)
        creds = {p: (c.user["email"], PASSWORD) for p, c in clients.items() if c.user}
        creds[ADMIN] = (stack.bff_admin["email"], stack.bff_admin["password"])
        for p in (ANON, A_READ, A_WRITE):  # their sign-in cell signs in as A's viewer
            creds[p] = creds[A_VIEWER]
        w = World(stack, seeder, partners, customers, clients, creds, tokens)
        wanted = {(kind, s) for cell in every_cell(ROUTES) for _, kind, s in cell.ids}
        for kind, id_set in sorted(wanted, key=lambda ks: ks[0] == "delivery"):  # a delivery needs its endpoint
            w.ids[(kind, id_set)] = make(w, kind, id_set)
        yield w


# -- cells --------------------------------------------------------------------------------

Ids = tuple[tuple[str, str, str], ...]  # (placeholder, kind, id set) for each id of a route


def id_sets(rule: Rule) -> list[Ids]:
    """Every set of ids a route is called with: all A's, all B's, another customer of A's
    for a customer's own objects, and with two ids both mixes."""
    names = list(rule.ids.items())
    if not names:
        return [()]
    sets = ["A", "B"] + (["A2"] if any(kind in CUSTOMER_OWNED for _, kind in names) else [])
    chosen = [tuple((n, k, s) for n, k in names) for s in sets]
    if len(names) == 2:
        chosen += [((names[0][0], names[0][1], x), (names[1][0], names[1][1], y)) for x, y in (("A", "B"), ("B", "A"))]
    return chosen


@dataclass(frozen=True)
class Cell:
    route: Route
    rule: Rule
    principal: str
    ids: Ids

    @property
    def expect(self) -> str:
        """What the cell must get: "allowed" (a success), "role" (refused whatever the ids) or
        "tenant" (an id is another tenant's: refused as if it named nothing)."""
        if self.principal not in self.rule.who:
            return "role"
        if self.rule.scoped and not all(own(self.principal, kind, s) for _, kind, s in self.ids):
            return "tenant"
        return "allowed"

    def values(self, world: World, *, foreign_random: bool = False) -> dict[str, str]:
        """The ids; with ``foreign_random``, those not the principal's own replaced by ids that name nothing."""
        return {
            name: random_like(world.ids[(kind, s)])
            if foreign_random and not own(self.principal, kind, s)
            else world.ids[(kind, s)]
            for name, kind, s in self.ids
        }

    def __str__(self) -> str:
        return f"{self.route[0]} {self.route[1]} as {self.principal} with {'/'.join(s for *_, s in self.ids) or '-'}"


def every_cell(routes: Iterable[Route]) -> list[Cell]:
    return [
        Cell(route, ROUTES[route], principal, ids)
        for route in routes
        if route in ROUTES
        for principal, ids in product(PRINCIPALS, id_sets(ROUTES[route]))
    ]


@dataclass(frozen=True)
class Answer:
    status: int
    code: str = ""
    message: str = ""
    body: Any = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.status} {self.code} {self.message!r}" if self.code else str(self.status)


ALPHABET = string.ascii_letters + string.digits


def random_like(value: str) -> str:
    """An id of the same shape (its prefix kept) that names nothing."""
    prefix, sep, rest = value.rpartition("_")
    return prefix + sep + "".join(secrets.choice(ALPHABET) for _ in rest or value)


def fill(template: Any, values: dict[str, str]) -> Any:
    if isinstance(template, str):
        return template.format_map(values)
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values) for v in template]
    return template


def send(world: World, client: BffClient, cell: Cell, ids: dict[str, str]) -> Answer:
    """The cell's request with these ids (a POST with an Idempotency-Key, as money and secrets need)."""
    (method, template), rule = cell.route, cell.rule
    email, password = world.creds[cell.principal]
    values = {**ids, "email": bff.unique_email("matrix"), "name": bff.unique("matrix")}
    values |= {"my_email": email, "my_password": password}
    path, query, body = fill(template, values), fill(rule.query, values), fill(rule.body, values)
    headers = {"Idempotency-Key": uuid.uuid4().hex} if method == "POST" else {}
    if rule.stream:
        with client.http.stream(method, path, params=query, headers=headers) as r:
            if r.is_success:
                return Answer(r.status_code)
            r.read()
            return answer_of(r)
    got = answer_of(client.request(method, path, params=query or None, json=body, headers=headers))
    if isinstance(got.body, dict) and "csrf_token" in got.body:  # signed in: the client keeps the new session
        client.csrf, client.user = got.body["csrf_token"], got.body["user"]
    return got


def answer_of(r: httpx.Response) -> Answer:
    if r.is_success:
        return Answer(r.status_code, body=r.json() if r.content else None)
    try:
        error = r.json()["error"]
        return Answer(r.status_code, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        return Answer(r.status_code, "not the API's error shape", r.text[:200])


def run_refused(world: World, cells: list[Cell]) -> list[str]:
    """Runs the refused cells on the principals' own clients; what went otherwise."""
    failures: list[str] = []
    nothing: dict[tuple[Any, ...], Answer] = {}  # the answers to ids that name nothing
    for cell in cells:
        client = world.clients[cell.principal]
        got = send(world, client, cell, cell.values(world))
        if cell.expect == "role":
            wanted = 401 if cell.principal == ANON else 403
            if got.status != wanted:
                failures.append(f"{cell}: {got}, not {wanted}")
            continue
        ids = cell.values(world, foreign_random=True)
        key = (cell.route, cell.principal, tuple(sorted(ids.items())))
        if key not in nothing:
            nothing[key] = send(world, client, cell, ids)
        like = nothing[key]
        if got.status not in cell.rule.hidden or got != like:
            failures.append(f"{cell}: {got}; with ids that name nothing: {like}")
    return failures


def run_allowed(world: World, cells: list[Cell]) -> list[str]:
    """Runs the allowed cells, those that end sessions last; what did not succeed."""
    failures: list[str] = []
    for cell in sorted(cells, key=lambda c: c.rule.last):
        ids = cell.values(world)
        for name, kind in cell.rule.fresh.items():
            ids[name] = make(world, kind, next(s for n, _, s in cell.ids if n == name))
        client = world.copy(cell.principal) if cell.rule.copy else world.clients[cell.principal]
        try:
            got = send(world, client, cell, ids)
        finally:
            if cell.rule.copy:
                client.close()
        if not 200 <= got.status < 300:
            failures.append(f"{cell}: {got}, not a success")
    return failures


# -- what must not move ---------------------------------------------------------------------


def _balance(seeder: Seeder, account: str) -> tuple[int, int] | None:
    try:
        b = seeder.ledger.GetBalance(lpb.GetBalanceRequest(account=account), timeout=5)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return b.posted_ucr, b.pending_ucr


def _all(client: BffClient, path: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.ok("GET", path, params={"limit": 200, **params, **({"cursor": cursor} if cursor else {})})
        rows += page["data"]
        if not (cursor := page["next_cursor"]):
            return rows


def snapshot(world: World) -> dict[str, Any]:
    """Both partners as keys, the ledger and the BFF hold them (read as their owners), and
    the list of partners."""
    s = world.seeder
    seen: dict[str, Any] = {
        "partners": sorted(p.id for p in s.keys.ListPartners(pb.ListPartnersRequest(page_size=500), timeout=5).partners)
    }
    for label, pid in world.partners.items():
        actor, owner = pb.Actor(partner_id=pid), world.owner(label)
        keys = s.keys.ListKeys(pb.ListKeysRequest(actor=actor, include_revoked=True), timeout=5).keys
        customers = s.keys.ListCustomers(pb.ListCustomersRequest(actor=actor), timeout=5).customers
        accounts = [f"partner:{pid}", *(k.budget_account for k in keys), *(f"keydeposit:{k.id}" for k in keys)]
        accounts += [f"customer:{c.id}" for c in customers]
        endpoints = _all(owner, "/partner/webhooks")
        seen[label] = {
            "partner": MessageToDict(s.keys.GetPartner(pb.GetPartnerRequest(actor=actor), timeout=5)),
            "keys": {k.id: MessageToDict(k) for k in keys},
            "customers": {c.id: MessageToDict(c) for c in customers},
            "balances": {a: _balance(s, a) for a in sorted(set(accounts))},
            "users": _all(owner, "/partner/users"),
            "customer users": {c.id: _all(owner, f"/partner/customers/{c.id}/users") for c in customers},
            "invites": _all(owner, "/partner/invites"),
            "tokens": [
                {k: v for k, v in t.items() if k != "last_used_at"}  # the token principals are used meanwhile
                for t in _all(owner, "/partner/tokens", include_revoked=True)
            ],
            "webhooks": endpoints,
            "branding": owner.ok("GET", "/partner/branding"),
            "deliveries": {e["id"]: _all(owner, f"/partner/webhooks/{e['id']}/deliveries") for e in endpoints},
        }
    return seen


def changes(before: Any, after: Any, where: str = "") -> list[str]:
    """Every difference, by where it is."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            c for k in sorted(set(before) | set(after)) for c in changes(before.get(k), after.get(k), f"{where}/{k}")
        ]
    return [] if before == after else [f"{where}: {before!r} -> {after!r}"]


# -- the tests ------------------------------------------------------------------------------


def test_every_route_has_a_rule(openapi: dict[Route, dict[str, Any]]) -> None:
    missing = sorted(set(openapi) - set(ROUTES))
    assert not missing, f"routes without a rule in ROUTES (who may call them, what their ids name): {missing}"
    stale = sorted(set(ROUTES) - set(openapi))
    assert not stale, f"rules for routes the API does not have: {stale}"
    anonymous = {route for route, op in openapi.items() if op.get("x-cg-anonymous") is True}
    assert anonymous == {route for route, rule in ROUTES.items() if rule.who == EVERYONE}, anonymous
    for route, rule in ROUTES.items():
        params = {p["name"] for p in openapi[route].get("parameters", []) if p["in"] == "path"}
        in_path = {n for n in rule.ids if "{" + n + "}" in route[1]}
        assert params == in_path, f"{route}: the path's ids {params}, the rule's {in_path}"
        unused = {n for n in rule.ids if "{" + n + "}" not in f"{route[1]} {rule.query} {rule.body}"}
        assert not unused, f"{route}: ids the rule names but never sends: {unused}"


def test_only_the_allowed_cells_succeed_and_the_refused_move_nothing(
    world: World, openapi: dict[Route, dict[str, Any]]
) -> None:
    failures = [f"{route}: no rule in ROUTES" for route in openapi if route not in ROUTES]
    cells = every_cell(openapi)
    before = snapshot(world)
    failures += run_refused(world, [c for c in cells if c.expect != "allowed"])
    failures += [f"a refused cell moved {c}" for c in changes(before, snapshot(world))]
    allowed = [c for c in cells if c.expect == "allowed"]
    failures += run_allowed(world, allowed)
    summary = f"{len(cells)} cells ({len(allowed)} allowed) over {len({c.route for c in cells})} routes"
    assert not failures, f"{len(failures)} failures in {summary}:\n" + "\n".join(failures)
