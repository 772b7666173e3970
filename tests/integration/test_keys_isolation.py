"""Tenant isolation of the keys service, as a matrix over real processes.

Actors (partner A, partner B, customers A1, A2 and B1, and actors that must not get
anywhere) x operations x targets (own / the same partner's other customer / another
partner), each with one exact expected outcome: allowed, NOT_FOUND or
PERMISSION_DENIED (and, where the actor may act but the state forbids it,
FAILED_PRECONDITION or INVALID_ARGUMENT). The rules (see ``cg_keys.access`` and the
proto's header):

- a partner sees and changes all its own keys and customers;
- a customer sees its own keys (created by it, or partner keys billed to it) and
  changes only the keys it created, and only name, description and allowed_models;
- partner-only calls by a customer are PERMISSION_DENIED;
- another partner's things, or another customer's key, are NOT_FOUND with exactly the
  answer a nonexistent id gets (existence is not revealed);
- a nonexistent actor is NOT_FOUND, an actor without a partner id PERMISSION_DENIED.

Every answer (and every error text) is searched for every secret handed out so far:
only CreateKey, CreateCustomerKey and RegenerateKey may return one, their own. The
keys service's log must never contain one either.

One stack (nats, ledger, keys) per database; the world is built once per stack and
tracked in a registry, so ListKeys / ListCustomers can be checked for exactly the
actor's visible things whatever ran before.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc
import pytest

from cg_devstack import Stack
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2 as pb_ledger
from creditgate.ledger.v1 import ledger_pb2_grpc
from support.stacks import KEYS_AND_LEDGER, shared_stack

T = 10  # seconds, every call
SECRET_PREFIX = "sk-cg-"

OK = "OK"
NF = "NOT_FOUND"
PD = "PERMISSION_DENIED"
FP = "FAILED_PRECONDITION"
IA = "INVALID_ARGUMENT"

# -- the stack ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def keys_stack(request) -> Stack:
    return shared_stack(request, KEYS_AND_LEDGER)


# -- the world: partners, customers, keys, and a registry of everything made ----------


@dataclass
class KeyRec:
    id: str
    partner: str  # partner id
    owner: str | None  # customer id that created it (customer keys)
    billed: str | None  # customer id its usage is billed to
    revoked: bool = False


@dataclass
class World:
    keys: keys_pb2_grpc.KeysServiceStub
    ledger: ledger_pb2_grpc.LedgerServiceStub
    partners: dict[str, str] = field(default_factory=dict)  # "A" -> id
    customers: dict[str, str] = field(default_factory=dict)  # "A1" -> id
    customers_of: dict[str, set[str]] = field(default_factory=dict)  # partner id -> customer ids
    key_recs: dict[str, KeyRec] = field(default_factory=dict)
    labeled: dict[str, str] = field(default_factory=dict)  # "keyA" -> key id
    secrets: list[str] = field(default_factory=list)

    # every secret ever handed out must never show up anywhere else
    def assert_no_secret(self, what: object, allow: str = "") -> None:
        text = str(what)
        leaked = [s[:12] + "..." for s in self.secrets if s != allow and s in text]
        assert not leaked, f"secret(s) {leaked} in a response: {text[:500]}"

    def take_secret(self, resp: pb.CreateKeyResponse) -> None:
        """A create/regenerate answer: carries a fresh, well-formed secret of its own and no other."""
        assert resp.secret.startswith(SECRET_PREFIX) and len(resp.secret) == len(SECRET_PREFIX) + 40, resp.secret
        assert resp.secret not in self.secrets, "a secret was handed out twice"
        assert resp.key.prefix and resp.secret.startswith(resp.key.prefix) and len(resp.key.prefix) < 20
        self.assert_no_secret(resp)
        without = pb.CreateKeyResponse()
        without.CopyFrom(resp)
        without.secret = ""
        assert resp.secret not in str(without), "the secret appears outside the secret field"
        self.secrets.append(resp.secret)

    def partner_key(self, partner: str, billed_customer: str | None = None) -> str:
        fields = pb.KeyFields(name="k", allowed_models=["gpt-4o-mini"])
        if billed_customer:
            fields.billing.CopyFrom(
                pb.CustomerBilling(
                    customer_id=self.customers[billed_customer], profit_multiplier="2", price_per_ai_credit_cents="1"
                )
            )
        resp = self.keys.CreateKey(
            pb.CreateKeyRequest(
                actor=pb.Actor(partner_id=self.partners[partner]),
                idempotency_key=uuid.uuid4().hex,
                fields=fields,
                budget_credits=10,
            ),
            timeout=T,
        )
        self.take_secret(resp)
        billed = self.customers[billed_customer] if billed_customer else None
        self.key_recs[resp.key.id] = KeyRec(resp.key.id, self.partners[partner], None, billed)
        return resp.key.id

    def customer_key(self, customer: str) -> str:
        partner, cid = self.partners[customer[0]], self.customers[customer]
        resp = self.keys.CreateCustomerKey(
            pb.CreateCustomerKeyRequest(
                actor=pb.Actor(partner_id=partner, customer_id=cid),
                idempotency_key=uuid.uuid4().hex,
                name=f"{customer}'s key",
                allowed_models=["gpt-4o-mini", "gemini-2.5-flash"],
            ),
            timeout=T,
        )
        self.take_secret(resp)
        self.key_recs[resp.key.id] = KeyRec(resp.key.id, partner, cid, cid)
        return resp.key.id

    def make_key(self, shape: str) -> str:
        """A fresh key shaped like the labeled one (for calls that use a key up)."""
        return {
            "keyA": lambda: self.partner_key("A"),
            "keyA_billedA1": lambda: self.partner_key("A", "A1"),
            "keyA1": lambda: self.customer_key("A1"),
            "keyA2": lambda: self.customer_key("A2"),
            "keyB": lambda: self.partner_key("B"),
            "keyB1": lambda: self.customer_key("B1"),
        }[shape]()

    def visible_key_ids(self, partner_id: str, customer_id: str | None, include_revoked: bool) -> set[str]:
        return {
            k.id
            for k in self.key_recs.values()
            if k.partner == partner_id
            and (customer_id is None or customer_id in (k.owner, k.billed))
            and (include_revoked or not k.revoked)
        }


def _deposit(ledger, partner_id: str, credits: int) -> None:
    ledger.Deposit(
        pb_ledger.DepositRequest(
            idempotency_id=f"dep-{uuid.uuid4().hex}", account=f"partner:{partner_id}", amount_ucr=credits * CREDIT
        ),
        timeout=T,
    )


SELF_SERVICE = pb.SelfServiceSettings(
    enabled=True, apply_to_new_customers=True, default_profit_multiplier="1.5", ai_credit_price_cents="1"
)


@pytest.fixture(scope="module")
def world(keys_stack: Stack) -> Iterator[World]:
    keys_ch = grpc.insecure_channel(keys_stack.keys_addr)
    ledger_ch = grpc.insecure_channel(keys_stack.ledger_addr)
    w = World(keys_pb2_grpc.KeysServiceStub(keys_ch), ledger_pb2_grpc.LedgerServiceStub(ledger_ch))
    run = uuid.uuid4().hex[:8]
    for p in ("A", "B"):
        partner = w.keys.CreatePartner(
            pb.CreatePartnerRequest(name=f"Partner {p}", tier="enterprise", external_ref=f"iso-{p}-{run}"), timeout=T
        )
        w.partners[p] = partner.id
        w.customers_of[partner.id] = set()
        _deposit(w.ledger, partner.id, 1_000_000)  # customer keys hold 1,000 each; plenty of headroom
    for c in ("A1", "A2", "B1"):
        pid = w.partners[c[0]]
        customer = w.keys.CreateCustomer(
            pb.CreateCustomerRequest(actor=pb.Actor(partner_id=pid), name=f"Customer {c}", ai_credits_enabled=True),
            timeout=T,
        )
        w.customers[c] = customer.id
        w.customers_of[pid].add(customer.id)
    for p in ("A", "B"):
        partner = w.keys.UpdateSelfService(
            pb.UpdateSelfServiceRequest(
                actor=pb.Actor(partner_id=w.partners[p]), settings=SELF_SERVICE, apply_to_existing_customers=True
            ),
            timeout=T,
        )
        assert partner.self_service.enabled
    for shape in ("keyA", "keyA_billedA1", "keyA1", "keyA2", "keyB", "keyB1"):
        w.labeled[shape] = w.make_key(shape)
    yield w
    keys_ch.close()
    ledger_ch.close()


# -- actors ---------------------------------------------------------------------------

# name -> (role, partner label or id, customer label or id)
ACTORS: dict[str, tuple[str, str, str]] = {
    "partnerA": ("partner", "A", ""),
    "partnerB": ("partner", "B", ""),
    "customerA1": ("customer", "A", "A1"),
    "customerA2": ("customer", "A", "A2"),
    "customerB1": ("customer", "B", "B1"),
    "unknownPartner": ("nonexistent", "ptn_doesnotexist0000", ""),
    "unknownCustomerOfA": ("nonexistent", "A", "cus_doesnotexist0000"),
    "customerA1ClaimingB": ("nonexistent", "B", "A1"),  # a real customer, not of that partner
    "emptyActor": ("no partner", "", ""),
    "customerA1WithoutPartner": ("no partner", "", "A1"),
}


def actor_of(w: World, name: str) -> pb.Actor:
    _, p, c = ACTORS[name]
    return pb.Actor(partner_id=w.partners.get(p, p), customer_id=w.customers.get(c, c))


def acting_ids(w: World, name: str) -> tuple[str, str | None]:
    """(partner id, customer id or None) of a real actor."""
    _, p, c = ACTORS[name]
    return w.partners[p], (w.customers[c] if c else None)


# -- key targets: the fixed keys, classified relative to the actor ---------------------

# label -> (partner label, created by customer, billed to customer)
KEY_SHAPES: dict[str, tuple[str, str, str] | None] = {
    "keyA": ("A", "", ""),
    "keyA_billedA1": ("A", "", "A1"),
    "keyA1": ("A", "A1", "A1"),
    "keyA2": ("A", "A2", "A2"),
    "keyB": ("B", "", ""),
    "keyB1": ("B", "B1", "B1"),
    "noSuchKey": None,
}


def key_relation(actor: str, target: str) -> str:
    role, p, c = ACTORS[actor]
    if role not in ("partner", "customer"):
        return "any"
    shape = KEY_SHAPES[target]
    if shape is None:
        return "no such key"
    kp, owner, billed = shape
    if kp != p:
        return "other partner's key"
    if role == "partner":
        return "own customer's key" if owner else "own partner key"
    if owner == c:
        return "created by it"
    if billed == c:
        return "partner key billed to it"
    if owner:
        return "same partner's other customer's key"
    return "partner key not billed to it"


KEY_OPS = ("GetKey", "UpdateKey", "RegenerateKey", "RevokeKey", "SuspendKey", "ResumeKey", "TopUpKey")


def _row(get, update, regenerate, revoke, suspend, resume, top_up) -> dict[str, str]:
    return dict(zip(KEY_OPS, (get, update, regenerate, revoke, suspend, resume, top_up), strict=True))


# (role, relation) -> op -> outcome. The expected answers, written out.
KEY_RULES: dict[tuple[str, str], dict[str, str]] = {
    #                                                     Get Update Regen Revoke Suspend Resume TopUp
    ("partner", "own partner key"): _row(OK, OK, OK, OK, OK, OK, OK),
    ("partner", "own customer's key"): _row(OK, OK, OK, OK, OK, OK, FP),  # no budget to top up
    ("partner", "other partner's key"): _row(NF, NF, NF, NF, NF, NF, NF),
    ("partner", "no such key"): _row(NF, NF, NF, NF, NF, NF, NF),
    ("customer", "created by it"): _row(OK, OK, OK, OK, PD, PD, PD),
    ("customer", "partner key billed to it"): _row(OK, PD, PD, PD, PD, PD, PD),
    ("customer", "partner key not billed to it"): _row(NF, NF, NF, NF, PD, PD, PD),
    ("customer", "same partner's other customer's key"): _row(NF, NF, NF, NF, PD, PD, PD),
    ("customer", "other partner's key"): _row(NF, NF, NF, NF, PD, PD, PD),
    ("customer", "no such key"): _row(NF, NF, NF, NF, PD, PD, PD),
    ("nonexistent", "any"): _row(NF, NF, NF, NF, NF, NF, NF),
    ("no partner", "any"): _row(PD, PD, PD, PD, PD, PD, PD),
}

KEY_CASES = [
    pytest.param(
        actor, op, target, KEY_RULES[(ACTORS[actor][0], key_relation(actor, target))][op], id=f"{actor}-{op}-{target}"
    )
    for actor in ACTORS
    for op in KEY_OPS
    for target in KEY_SHAPES
]


def _call(fn: Callable[[], object]) -> tuple[str, object, str]:
    try:
        return OK, fn(), ""
    except grpc.RpcError as e:
        return e.code().name, None, e.details() or ""


def _key_call(w: World, actor: pb.Actor, op: str, key_id: str) -> Callable[[], object]:
    k = w.keys
    return {
        "GetKey": lambda: k.GetKey(pb.GetKeyRequest(actor=actor, key_id=key_id), timeout=T),
        "UpdateKey": lambda: k.UpdateKey(
            pb.UpdateKeyRequest(
                actor=actor,
                key_id=key_id,
                fields=pb.KeyFields(name=f"renamed {uuid.uuid4().hex[:6]}"),
                update_mask=["name"],
            ),
            timeout=T,
        ),
        "RegenerateKey": lambda: k.RegenerateKey(
            pb.RegenerateKeyRequest(actor=actor, key_id=key_id, idempotency_key=uuid.uuid4().hex), timeout=T
        ),
        "RevokeKey": lambda: k.RevokeKey(pb.RevokeKeyRequest(actor=actor, key_id=key_id), timeout=T),
        "SuspendKey": lambda: k.SuspendKey(pb.SuspendKeyRequest(actor=actor, key_id=key_id, note="test"), timeout=T),
        "ResumeKey": lambda: k.ResumeKey(pb.ResumeKeyRequest(actor=actor, key_id=key_id), timeout=T),
        "TopUpKey": lambda: k.TopUpKey(
            pb.TopUpKeyRequest(actor=actor, key_id=key_id, idempotency_key=uuid.uuid4().hex, amount_credits=1),
            timeout=T,
        ),
    }[op]


NO_SUCH_KEY = "key_doesnotexist000000"


@pytest.mark.parametrize(("actor", "op", "target", "expected"), KEY_CASES)
def test_key_operation(world: World, actor: str, op: str, target: str, expected: str) -> None:
    w = world
    if target == "noSuchKey":
        key_id = NO_SUCH_KEY
    elif op == "RevokeKey":  # final: a throwaway of the same shape, so other cases keep their keys
        key_id = w.make_key(target)
    else:
        key_id = w.labeled[target]
    the_actor = actor_of(w, actor)
    code, resp, details = _call(_key_call(w, the_actor, op, key_id))
    assert code == expected, f"{op} by {actor} on {target}: {code} {details!r}, expected {expected}"
    w.assert_no_secret(details)

    if code == NF and target != "noSuchKey":
        # not revealed: the very answer a key that does not exist gets
        same = _call(_key_call(w, the_actor, op, NO_SUCH_KEY))
        assert (same[0], same[2]) == (code, details), "NOT_FOUND differs from a nonexistent key's"
    if code != OK:
        return

    if op == "RegenerateKey":
        w.take_secret(resp)
        key = resp.key
    else:
        w.assert_no_secret(resp)
        key = resp.key if op in ("GetKey", "TopUpKey") else resp
    assert key.id == key_id
    rec = w.key_recs[key_id]
    assert key.partner_id == rec.partner
    assert key.owner_customer_id == (rec.owner or "")
    assert key.billing.customer_id == (rec.billed or "")
    if op == "RevokeKey":
        rec.revoked = True
        assert key.status == pb.KEY_STATUS_REVOKED
    elif op == "SuspendKey":
        assert key.status == pb.KEY_STATUS_SUSPENDED
    elif op == "ResumeKey":
        assert key.status == pb.KEY_STATUS_ACTIVE
    elif op == "TopUpKey":
        assert resp.amount_ucr == 1 * CREDIT
    elif op == "UpdateKey":
        assert key.name.startswith("renamed ")


# -- customers as targets -----------------------------------------------------------

CUSTOMER_TARGETS = ("A1", "A2", "B1", "noSuchCustomer")


def customer_relation(actor: str, target: str) -> str:
    role, p, c = ACTORS[actor]
    if role not in ("partner", "customer"):
        return "any"
    if target == "noSuchCustomer":
        return "no such customer"
    if target[0] != p:
        return "other partner's customer"
    if role == "partner":
        return "own customer"
    return "itself" if target == c else "same partner's other customer"


CUSTOMER_RULES: dict[tuple[str, str], dict[str, str]] = {
    ("partner", "own customer"): dict(GetCustomer=OK, UpdateCustomer=OK),
    ("partner", "other partner's customer"): dict(GetCustomer=NF, UpdateCustomer=NF),
    ("partner", "no such customer"): dict(GetCustomer=NF, UpdateCustomer=NF),
    ("customer", "itself"): dict(GetCustomer=OK, UpdateCustomer=PD),
    ("customer", "same partner's other customer"): dict(GetCustomer=NF, UpdateCustomer=PD),
    ("customer", "other partner's customer"): dict(GetCustomer=NF, UpdateCustomer=PD),
    ("customer", "no such customer"): dict(GetCustomer=NF, UpdateCustomer=PD),
    ("nonexistent", "any"): dict(GetCustomer=NF, UpdateCustomer=NF),
    ("no partner", "any"): dict(GetCustomer=PD, UpdateCustomer=PD),
}

CUSTOMER_CASES = [
    pytest.param(
        actor,
        op,
        target,
        CUSTOMER_RULES[(ACTORS[actor][0], customer_relation(actor, target))][op],
        id=f"{actor}-{op}-{target}",
    )
    for actor in ACTORS
    for op in ("GetCustomer", "UpdateCustomer")
    for target in CUSTOMER_TARGETS
]


def _customer_call(w: World, actor: pb.Actor, op: str, customer_id: str) -> Callable[[], object]:
    if op == "GetCustomer":
        return lambda: w.keys.GetCustomer(pb.GetCustomerRequest(actor=actor, customer_id=customer_id), timeout=T)
    return lambda: w.keys.UpdateCustomer(
        pb.UpdateCustomerRequest(actor=actor, customer_id=customer_id, name=f"Customer renamed {uuid.uuid4().hex[:6]}"),
        timeout=T,
    )


NO_SUCH_CUSTOMER = "cus_doesnotexist000000"


@pytest.mark.parametrize(("actor", "op", "target", "expected"), CUSTOMER_CASES)
def test_customer_operation(world: World, actor: str, op: str, target: str, expected: str) -> None:
    w = world
    customer_id = w.customers.get(target, NO_SUCH_CUSTOMER)
    the_actor = actor_of(w, actor)
    code, resp, details = _call(_customer_call(w, the_actor, op, customer_id))
    assert code == expected, f"{op} by {actor} on {target}: {code} {details!r}, expected {expected}"
    w.assert_no_secret(details)
    if code == NF and target != "noSuchCustomer":
        same = _call(_customer_call(w, the_actor, op, NO_SUCH_CUSTOMER))
        assert (same[0], same[2]) == (code, details), "NOT_FOUND differs from a nonexistent customer's"
    if code == OK:
        w.assert_no_secret(resp)
        assert resp.id == customer_id
        assert resp.partner_id == w.partners[target[0]]
        if op == "UpdateCustomer":
            assert resp.name.startswith("Customer renamed ")


# -- CreateKey, billed to nobody / an own customer / another partner's customer --------

BILLING_TARGETS = ("unbilled", "billedToA1", "billedToB1")


def billing_relation(actor: str, target: str) -> str:
    role, p, _ = ACTORS[actor]
    if role != "partner":
        return "any"
    if target == "unbilled":
        return "unbilled"
    return "own customer" if target[-2] == p else "other partner's customer"


CREATE_KEY_RULES = {
    ("partner", "unbilled"): OK,
    ("partner", "own customer"): OK,
    ("partner", "other partner's customer"): IA,  # billing.customer_id: not one of your customers
    ("customer", "any"): PD,
    ("nonexistent", "any"): NF,
    ("no partner", "any"): PD,
}

CREATE_KEY_CASES = [
    pytest.param(
        actor,
        target,
        CREATE_KEY_RULES[(ACTORS[actor][0], billing_relation(actor, target))],
        id=f"{actor}-CreateKey-{target}",
    )
    for actor in ACTORS
    for target in BILLING_TARGETS
]


def _create_key_call(w: World, actor: pb.Actor, billed_customer_id: str) -> Callable[[], object]:
    fields = pb.KeyFields(name="matrix key", allowed_models=["gpt-4o-mini"])
    if billed_customer_id:
        fields.billing.CopyFrom(
            pb.CustomerBilling(customer_id=billed_customer_id, profit_multiplier="2", price_per_ai_credit_cents="1")
        )
    return lambda: w.keys.CreateKey(
        pb.CreateKeyRequest(actor=actor, idempotency_key=uuid.uuid4().hex, fields=fields, budget_credits=10), timeout=T
    )


@pytest.mark.parametrize(("actor", "target", "expected"), CREATE_KEY_CASES)
def test_create_key(world: World, actor: str, target: str, expected: str) -> None:
    w = world
    billed = w.customers[target[-2:]] if target != "unbilled" else ""
    the_actor = actor_of(w, actor)
    code, resp, details = _call(_create_key_call(w, the_actor, billed))
    assert code == expected, f"CreateKey by {actor}, {target}: {code} {details!r}, expected {expected}"
    w.assert_no_secret(details)
    if code == IA:
        assert details.startswith("billing.customer_id:"), details
        same = _call(_create_key_call(w, the_actor, NO_SUCH_CUSTOMER))
        assert (same[0], same[2]) == (code, details), "another partner's customer differs from a nonexistent one"
    if code == OK:
        w.take_secret(resp)
        partner_id, _ = acting_ids(w, actor)
        assert resp.key.partner_id == partner_id and resp.key.kind == "partner"
        assert resp.key.billing.customer_id == billed
        w.key_recs[resp.key.id] = KeyRec(resp.key.id, partner_id, None, billed or None)


# -- calls without a target -----------------------------------------------------------

CALL_OPS = (
    "ListKeys",
    "ListCustomers",
    "CreateCustomer",
    "CreateCustomerKey",
    "UpdateSelfService",
    "QuoteKey",
    "ListModels",
    "GetPartner",
)
CALL_RULES: dict[str, dict[str, str]] = {
    "partner": dict(
        ListKeys=OK,
        ListCustomers=OK,
        CreateCustomer=OK,
        CreateCustomerKey=PD,
        UpdateSelfService=OK,
        QuoteKey=OK,
        ListModels=OK,
        GetPartner=OK,
    ),
    "customer": dict(
        ListKeys=OK,
        ListCustomers=PD,
        CreateCustomer=PD,
        CreateCustomerKey=OK,
        UpdateSelfService=PD,
        QuoteKey=PD,
        ListModels=OK,
        GetPartner=OK,
    ),
    "nonexistent": {op: NF for op in CALL_OPS},
    "no partner": {op: PD for op in CALL_OPS},
}

# No actor at all is the operators' view of the whole catalog (the platform admin's).
CALL_EXCEPTIONS = {("emptyActor", "ListModels"): OK}
CALL_CASES = [
    pytest.param(actor, op, CALL_EXCEPTIONS.get((actor, op), CALL_RULES[ACTORS[actor][0]][op]), id=f"{actor}-{op}")
    for actor in ACTORS
    for op in CALL_OPS
]


def _plain_call(w: World, actor: pb.Actor, op: str) -> Callable[[], object]:
    k = w.keys
    return {
        "ListKeys": lambda: k.ListKeys(pb.ListKeysRequest(actor=actor), timeout=T),
        "ListCustomers": lambda: k.ListCustomers(pb.ListCustomersRequest(actor=actor), timeout=T),
        "CreateCustomer": lambda: k.CreateCustomer(
            pb.CreateCustomerRequest(actor=actor, name="matrix customer", ai_credits_enabled=True), timeout=T
        ),
        "CreateCustomerKey": lambda: k.CreateCustomerKey(
            pb.CreateCustomerKeyRequest(
                actor=actor,
                idempotency_key=uuid.uuid4().hex,
                name="matrix customer key",
                allowed_models=["gpt-4o-mini"],
            ),
            timeout=T,
        ),
        "UpdateSelfService": lambda: k.UpdateSelfService(
            pb.UpdateSelfServiceRequest(actor=actor, settings=SELF_SERVICE, apply_to_existing_customers=True), timeout=T
        ),
        "QuoteKey": lambda: k.QuoteKey(pb.QuoteKeyRequest(actor=actor, budget_credits=100), timeout=T),
        "ListModels": lambda: k.ListModels(pb.ListModelsRequest(actor=actor), timeout=T),
        "GetPartner": lambda: k.GetPartner(pb.GetPartnerRequest(actor=actor), timeout=T),
    }[op]


@pytest.mark.parametrize(("actor", "op", "expected"), CALL_CASES)
def test_call(world: World, actor: str, op: str, expected: str) -> None:
    w = world
    code, resp, details = _call(_plain_call(w, actor_of(w, actor), op))
    assert code == expected, f"{op} by {actor}: {code} {details!r}, expected {expected}"
    w.assert_no_secret(details)
    if code != OK:
        return
    if ACTORS[actor][0] == "no partner":  # the whole catalog (CALL_EXCEPTIONS)
        assert resp.tier == "" and [c.category for c in resp.categories] == ["budget", "mid", "premium"]
        return
    partner_id, customer_id = acting_ids(w, actor)
    if op == "CreateCustomerKey":
        w.take_secret(resp)
        assert resp.key.partner_id == partner_id and resp.key.kind == "customer"
        assert resp.key.owner_customer_id == customer_id
        w.key_recs[resp.key.id] = KeyRec(resp.key.id, partner_id, customer_id, customer_id)
        return
    w.assert_no_secret(resp)
    if op == "ListKeys":
        got = [k.id for k in resp.keys]
        assert len(got) == len(set(got))
        assert set(got) == w.visible_key_ids(partner_id, customer_id, include_revoked=False)
        assert all(k.status != pb.KEY_STATUS_REVOKED for k in resp.keys)
        every = w.keys.ListKeys(pb.ListKeysRequest(actor=actor_of(w, actor), include_revoked=True), timeout=T)
        w.assert_no_secret(every)
        assert {k.id for k in every.keys} == w.visible_key_ids(partner_id, customer_id, include_revoked=True)
        for k in every.keys:
            rec = w.key_recs[k.id]
            assert (k.partner_id, k.owner_customer_id, k.billing.customer_id) == (
                rec.partner,
                rec.owner or "",
                rec.billed or "",
            )
            assert (k.status == pb.KEY_STATUS_REVOKED) == rec.revoked
    elif op == "ListCustomers":
        assert {c.id for c in resp.customers} == w.customers_of[partner_id]
        assert all(c.partner_id == partner_id for c in resp.customers)
    elif op == "CreateCustomer":
        assert resp.partner_id == partner_id
        w.customers_of[partner_id].add(resp.id)
    elif op == "UpdateSelfService":
        assert resp.id == partner_id and resp.self_service.enabled
    elif op == "QuoteKey":
        assert (resp.budget_ucr, resp.total_ucr) == (100 * CREDIT, 102 * CREDIT)
    elif op == "ListModels":
        assert resp.tier == "enterprise"
        ids = {m.id for c in resp.categories for m in c.models}
        assert {"gpt-4o-mini", "claude-haiku-4-5", "gpt-4o"} <= ids
    elif op == "GetPartner":
        assert resp.id == partner_id


# -- what a customer may change on its own key ----------------------------------------


def _update_fields(w: World) -> dict[str, pb.KeyFields]:
    return {
        "name": pb.KeyFields(name="own rename"),
        "description": pb.KeyFields(description="own description"),
        "allowed_models": pb.KeyFields(allowed_models=["gemini-2.5-flash"]),
        "billing": pb.KeyFields(
            billing=pb.CustomerBilling(
                customer_id=w.customers["A1"], profit_multiplier="1", price_per_ai_credit_cents="1"
            )
        ),
        "auto_topup": pb.KeyFields(auto_topup=pb.AutoTopUp(enabled=False)),
        "allowed_domains": pb.KeyFields(allowed_domains=["app.example.com"]),
        "rpm_limit": pb.KeyFields(rpm_limit=5),
        "tpm_limit": pb.KeyFields(tpm_limit=5000),
        "expires_at_unix": pb.KeyFields(expires_at_unix=0),
    }


CUSTOMER_MASKS = {
    "name": OK,
    "description": OK,
    "allowed_models": OK,
    "billing": PD,
    "auto_topup": PD,
    "allowed_domains": PD,
    "rpm_limit": PD,
    "tpm_limit": PD,
    "expires_at_unix": PD,
}


@pytest.mark.parametrize(
    ("actor", "mask", "expected"),
    [
        *[pytest.param("customerA1", m, e, id=f"customerA1-{m}-{e}") for m, e in CUSTOMER_MASKS.items()],
        *[pytest.param("partnerA", m, OK, id=f"partnerA-{m}-OK") for m in CUSTOMER_MASKS],
    ],
)
def test_update_key_mask(world: World, actor: str, mask: str, expected: str) -> None:
    """A customer may change only name, description and allowed_models of a key it
    created; its partner may change every field of the same key."""
    w = world
    key_id = w.labeled["keyA1"]
    before = w.keys.GetKey(pb.GetKeyRequest(actor=actor_of(w, "partnerA"), key_id=key_id), timeout=T)
    code, resp, details = _call(
        lambda: w.keys.UpdateKey(
            pb.UpdateKeyRequest(
                actor=actor_of(w, actor), key_id=key_id, fields=_update_fields(w)[mask], update_mask=[mask]
            ),
            timeout=T,
        )
    )
    assert code == expected, f"UpdateKey [{mask}] by {actor}: {code} {details!r}"
    after = w.keys.GetKey(pb.GetKeyRequest(actor=actor_of(w, "partnerA"), key_id=key_id), timeout=T)
    w.assert_no_secret(details)
    w.assert_no_secret(after)
    if code == OK:
        w.assert_no_secret(resp)
    else:
        assert after.key == before.key, "a refused update changed the key"
    # a customer cannot sneak a forbidden field in next to an allowed one
    if actor == "customerA1" and expected == PD:
        code, _, _ = _call(
            lambda: w.keys.UpdateKey(
                pb.UpdateKeyRequest(
                    actor=actor_of(w, actor), key_id=key_id, fields=_update_fields(w)[mask], update_mask=["name", mask]
                ),
                timeout=T,
            )
        )
        assert code == PD
        again = w.keys.GetKey(pb.GetKeyRequest(actor=actor_of(w, "partnerA"), key_id=key_id), timeout=T)
        assert again.key == after.key


# -- logs -----------------------------------------------------------------------------


def test_keys_log_never_contains_a_secret(world: World, keys_stack: Stack) -> None:
    w = world
    # a few more secrets through every path that hands one out, then read the log
    w.make_key("keyA")
    w.make_key("keyA1")
    regenerated = w.keys.RegenerateKey(
        pb.RegenerateKeyRequest(
            actor=actor_of(w, "partnerA"), key_id=w.labeled["keyA"], idempotency_key=uuid.uuid4().hex
        ),
        timeout=T,
    )
    w.take_secret(regenerated)
    assert len(w.secrets) >= 10
    log = keys_stack.procs["keys"].log_text()
    assert log, "the keys service wrote no log at all"
    leaked = [s[:12] + "..." for s in w.secrets if s in log]
    assert not leaked, f"the keys log contains secrets {leaked}"
