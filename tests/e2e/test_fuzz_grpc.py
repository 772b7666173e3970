"""A fuzzer over every gRPC method of keys and ledger, against the real processes.

Each example calls one method with a request drawn from its message type (see
``support.protofuzz``: edge integers, hostile strings, known ids). Whatever it sends:
- the answer is never INTERNAL, UNKNOWN or DATA_LOSS (a server fault): bad input is the
  caller's fault and says so (INVALID_ARGUMENT, OUT_OF_RANGE, NOT_FOUND, ...);
- a refused call moves no money: every account's posted counters are what they were;
- the books stay sound: the ledger's own audit finds nothing, at the end.

Bounded: ``CG_FUZZ_EXAMPLES`` examples (200 by default), derandomized so that CI runs the
same cases every time; raise the count (and set ``CG_FUZZ_RANDOM=1``) for a longer hunt.
"""

from __future__ import annotations

import os

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cg_devstack import Stack
from cg_devstack.seed import Seeder
from creditgate.keys.v1 import keys_pb2
from creditgate.ledger.v1 import ledger_pb2, ledger_pb2_grpc
from support.protofuzz import Known, request_strategy
from support.stacks import stack_on

SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
EXAMPLES = int(os.environ.get("CG_FUZZ_EXAMPLES", "200"))
RANDOM = os.environ.get("CG_FUZZ_RANDOM") == "1"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def world(request):
    """On both databases: PostgreSQL refuses what SQLite stores (a NUL in a string)."""
    with stack_on(request, services=("nats", "ledger", "keys")) as stack:
        seeder = Seeder(stack.keys_addr, stack.ledger_addr)
        try:
            yield stack, seeder, _seed(seeder)
        finally:
            seeder.close()


def _seed(seeder: Seeder) -> Known:
    """A partner with credits, a customer with AI Gateway on and AI credits, a partner
    key and a customer key: the ids the fuzzer mixes into its strings."""
    partner_id = seeder.partner("fuzz-partner", credits=50_000)
    # several keys: a revoke drawn early must not leave the rest of the run without one
    keys = [
        seeder.funded_key(partner_id, budget_credits=500, models=["gpt-4o-mini", "claude-haiku-4-5"]) for _ in range(6)
    ]
    key = keys[0]
    actor = keys_pb2.Actor(partner_id=key.partner_id)
    seeder.keys.UpdateSelfService(
        keys_pb2.UpdateSelfServiceRequest(
            actor=actor,
            settings=keys_pb2.SelfServiceSettings(
                enabled=True, apply_to_new_customers=True, default_profit_multiplier="1.5", ai_credit_price_cents="1"
            ),
        ),
        timeout=5,
    )
    customer = seeder.keys.CreateCustomer(
        keys_pb2.CreateCustomerRequest(
            actor=actor, name="Fuzz customer", ai_credits_enabled=True, idempotency_key="fuzz-customer"
        ),
        timeout=5,
    )
    seeder.ledger.GrantAiCredits(
        ledger_pb2.GrantAiCreditsRequest(
            idempotency_id="fuzz-grant", customer_account=f"customer:{customer.id}", amount_uai=1_000 * 10**6
        ),
        timeout=5,
    )
    ckey = seeder.keys.CreateCustomerKey(
        keys_pb2.CreateCustomerKeyRequest(
            actor=keys_pb2.Actor(partner_id=key.partner_id, customer_id=customer.id),
            idempotency_key="fuzz-ckey",
            name="Fuzz customer key",
            allowed_models=["gpt-4o-mini"],
        ),
        timeout=5,
    )
    return Known(
        partner_ids=[key.partner_id],
        customer_ids=[customer.id],
        key_ids=[k.key_id for k in keys] + [ckey.key.id],
        accounts=[f"partner:{key.partner_id}"] * 3
        + [k.account for k in keys]
        + [f"keydeposit:{ckey.key.id}", "platform:usage", "external:credits"],
        customer_accounts=[f"customer:{customer.id}"],
        revenue_accounts=[f"partnerrev:{key.partner_id}"],
        models=["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"],
        tiers=["growth", "starter", "enterprise"],
    )


def _methods() -> list[tuple[str, str, object, object]]:
    """(service, method, request class, stub attribute) of every unary method."""
    out = []
    for module, service in (
        (keys_pb2, "KeysService"),
        (ledger_pb2, "LedgerService"),
        (ledger_pb2, "LedgerAdminService"),
    ):
        for m in module.DESCRIPTOR.services_by_name[service].methods:
            out.append((service, m.name, m.input_type))
    return out


METHODS = _methods()


def _snapshot(stack: Stack, admin) -> dict[str, tuple[int, int]]:
    """Every account's posted counters (pending ones move with the expiry sweep)."""
    meta = (("x-cg-admin-token", stack.ledger_admin_token),)
    accounts, token = {}, ""
    while True:
        page = admin.ListAccounts(
            ledger_pb2.ListAccountsRequest(page_size=1000, page_token=token), metadata=meta, timeout=10
        )
        accounts.update({a.id: (a.credits_posted, a.debits_posted) for a in page.accounts})
        token = page.next_page_token
        if not token:
            return accounts


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_no_request_is_a_server_fault_and_no_refusal_moves_money(world, data):
    stack, seeder, known = world
    channels = {"KeysService": seeder.keys, "LedgerService": seeder.ledger}
    admin = ledger_pb2_grpc.LedgerAdminServiceStub(seeder._ledger_ch)
    channels["LedgerAdminService"] = admin
    service, method, descriptor = data.draw(st.sampled_from(METHODS), label="method")
    request = data.draw(request_strategy(descriptor, known), label="request")
    before = _snapshot(stack, admin)
    metadata = ()
    if service == "LedgerAdminService" and data.draw(st.booleans(), label="with admin token"):
        metadata = (("x-cg-admin-token", stack.ledger_admin_token),)
    try:
        getattr(channels[service], method)(request, timeout=10, metadata=metadata)
    except grpc.RpcError as e:
        assert e.code() not in SERVER_FAULTS, f"{service}.{method}: {e.code().name} {e.details()}"
        assert _snapshot(stack, admin) == before, f"{service}.{method} was refused ({e.code().name}) but moved money"


def test_the_books_pass_the_audit_after_the_fuzzing(world):
    stack, seeder, _ = world
    admin = ledger_pb2_grpc.LedgerAdminServiceStub(seeder._ledger_ch)
    audit = admin.AuditBooks(
        ledger_pb2.AuditBooksRequest(), metadata=(("x-cg-admin-token", stack.ledger_admin_token),), timeout=30
    )
    assert audit.ok, list(audit.discrepancies)
