"""Retries converge, impossible transitions are refused, and reads show what applies:
the keys service over real gRPC (nats, ledger, keys processes), on SQLite and
PostgreSQL.

- Calls that move money or make a secret require an idempotency key; a replayed create
  or regenerate answers ``replayed`` with no secret and the first secret keeps working.
- Nothing but a read leaves a revoked key; a repeated change is an idempotent OK.
- Exhaustion is decided by the keys service, under the key's lock, by the cheapest
  request the key can make, from its settled balance (holds left out).
- A customer's AI Gateway visibility is the three conditions together; a key's billing
  read back is the terms it is billed at; spend stays true as holds settle after a revoke.
"""

from __future__ import annotations

import uuid

import grpc
import pytest

from cglib.keysecret import hash_secret
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2 as lpb
from creditgate.ledger.v1 import ledger_pb2_grpc
from support.stacks import KEYS_AND_LEDGER, shared_stack

T = 10
FP = grpc.StatusCode.FAILED_PRECONDITION
IA = grpc.StatusCode.INVALID_ARGUMENT
# 1 ucr per token: a ledger price that charges an exact amount of ucr
ONE_UCR_PER_TOKEN = lpb.Price(input_usd_per_mtok="0.01", output_usd_per_mtok="0.01")
SELF_SERVICE = pb.SelfServiceSettings(
    enabled=True, apply_to_new_customers=True, default_profit_multiplier="2", ai_credit_price_cents="1"
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request):
    return shared_stack(request, KEYS_AND_LEDGER)


@pytest.fixture(scope="module")
def keys(stack):
    with grpc.insecure_channel(stack.keys_addr) as ch:
        yield keys_pb2_grpc.KeysServiceStub(ch)


@pytest.fixture(scope="module")
def ledger(stack):
    with grpc.insecure_channel(stack.ledger_addr) as ch:
        yield ledger_pb2_grpc.LedgerServiceStub(ch)


def partner(keys, ledger, credits=10_000, tier="growth"):
    p = keys.CreatePartner(pb.CreatePartnerRequest(name="P", tier=tier, external_ref=uuid.uuid4().hex), timeout=T)
    if credits:
        ledger.Deposit(
            lpb.DepositRequest(idempotency_id=uuid.uuid4().hex, account=f"partner:{p.id}", amount_ucr=credits * CREDIT),
            timeout=T,
        )
    return p.id, pb.Actor(partner_id=p.id)


def create(keys, actor, budget=100, models=("gpt-4o-mini",), idem=None, **fields):
    return keys.CreateKey(
        pb.CreateKeyRequest(
            actor=actor,
            idempotency_key=uuid.uuid4().hex if idem is None else idem,
            budget_credits=budget,
            fields=pb.KeyFields(name="key", allowed_models=list(models), **fields),
        ),
        timeout=T,
    )


def customer_with_gateway(keys, ledger, pid, actor):
    keys.UpdateSelfService(pb.UpdateSelfServiceRequest(actor=actor, settings=SELF_SERVICE), timeout=T)
    c = keys.CreateCustomer(pb.CreateCustomerRequest(actor=actor, name="C", ai_credits_enabled=True), timeout=T)
    return c, pb.Actor(partner_id=pid, customer_id=c.id)


def customer_key(keys, cactor, idem=None):
    return keys.CreateCustomerKey(
        pb.CreateCustomerKeyRequest(
            actor=cactor,
            idempotency_key=uuid.uuid4().hex if idem is None else idem,
            name="mine",
            allowed_models=["gpt-4o-mini"],
        ),
        timeout=T,
    )


def balance(ledger, account) -> lpb.Balance:
    return ledger.GetBalance(lpb.GetBalanceRequest(account=account), timeout=T)


def works(keys, secret) -> bool:
    try:
        keys.AuthenticateKey(pb.AuthenticateKeyRequest(key_hash=hash_secret(secret)), timeout=T)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND
        return False
    return True


def refused(fn, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn(request, timeout=T)
    return e.value


def detail(keys, actor, key_id) -> pb.KeyDetail:
    return keys.GetKey(pb.GetKeyRequest(actor=actor, key_id=key_id), timeout=T)


def spend_exactly(ledger, account, amount_ucr: int) -> None:
    rid = uuid.uuid4().hex
    ledger.Reserve(
        lpb.ReserveRequest(
            request_id=rid, account=account, model="m", price=ONE_UCR_PER_TOKEN, max_input_tokens=amount_ucr
        ),
        timeout=T,
    )
    ledger.Settle(
        lpb.SettleRequest(request_id=rid, input_tokens=amount_ucr, usage_source=lpb.USAGE_SOURCE_PROVIDER), timeout=T
    )


# -- idempotency keys are required -------------------------------------------------------


def test_creates_and_regenerate_require_an_idempotency_key(keys, ledger):
    pid, actor = partner(keys, ledger)
    made = create(keys, actor, 10)
    _, cactor = customer_with_gateway(keys, ledger, pid, actor)
    before = (
        balance(ledger, f"partner:{pid}"),
        keys.ListKeys(pb.ListKeysRequest(actor=actor, include_revoked=True), timeout=T),
    )
    for call, request in (
        (
            keys.CreateKey,
            pb.CreateKeyRequest(
                actor=actor, budget_credits=10, fields=pb.KeyFields(name="k", allowed_models=["gpt-4o-mini"])
            ),
        ),
        (keys.CreateCustomerKey, pb.CreateCustomerKeyRequest(actor=cactor, name="k", allowed_models=["gpt-4o-mini"])),
        (keys.RegenerateKey, pb.RegenerateKeyRequest(actor=actor, key_id=made.key.id)),
        (keys.RegenerateKey, pb.RegenerateKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="r" * 81)),
    ):
        e = refused(call, request)
        assert e.code() == IA and e.details().startswith("idempotency_key:"), (call, e.details())
    after = (
        balance(ledger, f"partner:{pid}"),
        keys.ListKeys(pb.ListKeysRequest(actor=actor, include_revoked=True), timeout=T),
    )
    assert after == before
    assert works(keys, made.secret)


# -- replays converge on the first outcome -----------------------------------------------


def test_a_retried_regenerate_rotates_once(keys, ledger):
    _, actor = partner(keys, ledger)
    made = create(keys, actor, 10)
    request = pb.RegenerateKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="rotate-1")
    first = keys.RegenerateKey(request, timeout=T)
    assert first.secret and not first.replayed and not works(keys, made.secret)
    for _ in range(2):
        again = keys.RegenerateKey(request, timeout=T)
        assert again.replayed and again.secret == "" and again.key.id == made.key.id
        assert again.key.prefix == first.key.prefix
    assert works(keys, first.secret)
    # another idempotency key is another rotation
    second = keys.RegenerateKey(
        pb.RegenerateKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="rotate-2"), timeout=T
    )
    assert second.secret and not second.replayed
    assert works(keys, second.secret) and not works(keys, first.secret)
    # revoked since: the first rotation's retry still converges; a new rotation is refused
    keys.RevokeKey(pb.RevokeKeyRequest(actor=actor, key_id=made.key.id), timeout=T)
    assert keys.RegenerateKey(request, timeout=T).replayed
    assert (
        refused(
            keys.RegenerateKey, pb.RegenerateKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="rotate-3")
        ).code()
        == FP
    )


def test_a_replayed_customer_key_create_shows_no_secret_and_moves_nothing(keys, ledger):
    pid, actor = partner(keys, ledger, credits=3_000)
    _, cactor = customer_with_gateway(keys, ledger, pid, actor)
    first = customer_key(keys, cactor, idem="ck-1")
    assert first.secret and not first.replayed
    after_first = balance(ledger, f"partner:{pid}")
    # a switch turned off since does not turn the retry into a refusal: it converges
    keys.UpdateSelfService(
        pb.UpdateSelfServiceRequest(
            actor=actor,
            settings=pb.SelfServiceSettings(enabled=False, default_profit_multiplier="2", ai_credit_price_cents="1"),
        ),
        timeout=T,
    )
    again = customer_key(keys, cactor, idem="ck-1")
    assert again.replayed and again.secret == "" and again.key.id == first.key.id
    assert again.total_ucr == first.total_ucr == 1_000 * CREDIT
    assert works(keys, first.secret)
    assert balance(ledger, f"partner:{pid}") == after_first
    # a new idempotency key is a new create, refused now that self-service is off
    assert (
        refused(
            keys.CreateCustomerKey,
            pb.CreateCustomerKeyRequest(actor=cactor, idempotency_key="ck-2", name="x", allowed_models=["gpt-4o-mini"]),
        ).code()
        == FP
    )


def test_create_customer_with_an_idempotency_key_returns_the_first_customer(keys, ledger):
    _, actor = partner(keys, ledger, credits=0)

    def make(idem: str, name: str = "Acme"):
        return keys.CreateCustomer(
            pb.CreateCustomerRequest(actor=actor, name=name, ai_credits_enabled=True, idempotency_key=idem), timeout=T
        )

    first = make("cust-1")
    assert make("cust-1").id == first.id
    assert make("cust-1", name="Acme, retried").name == "Acme"  # the first outcome
    assert make("cust-2").id != first.id
    assert make("").id != make("").id  # without one, every call is a new customer
    listed = keys.ListCustomers(pb.ListCustomersRequest(actor=actor), timeout=T).customers
    assert len(listed) == 4
    # idempotency keys are the partner's own
    _, other = partner(keys, ledger, credits=0)
    assert (
        keys.CreateCustomer(pb.CreateCustomerRequest(actor=other, name="Acme", idempotency_key="cust-1"), timeout=T).id
        != first.id
    )
    e = refused(keys.CreateCustomer, pb.CreateCustomerRequest(actor=actor, name="A", idempotency_key="c" * 81))
    assert e.code() == IA and e.details().startswith("idempotency_key:")


# -- transitions ---------------------------------------------------------------------


def test_repeated_changes_are_idempotent_and_impossible_ones_refused(keys, ledger):
    _, actor = partner(keys, ledger)
    made = create(keys, actor, 10)
    key_id = made.key.id
    for _ in range(2):  # resume of an active key: OK, unchanged
        assert keys.ResumeKey(pb.ResumeKeyRequest(actor=actor, key_id=key_id), timeout=T).status == pb.KEY_STATUS_ACTIVE
    for _ in range(2):
        assert (
            keys.SuspendKey(pb.SuspendKeyRequest(actor=actor, key_id=key_id, note="abuse"), timeout=T).status
            == pb.KEY_STATUS_SUSPENDED
        )
    # a suspended key is not "exhausted" by the worker: only an active one can be
    assert refused(keys.MarkKeyExhausted, pb.MarkKeyExhaustedRequest(actor=actor, key_id=key_id)).code() == FP
    for _ in range(2):
        assert (
            keys.RevokeKey(pb.RevokeKeyRequest(actor=actor, key_id=key_id), timeout=T).status == pb.KEY_STATUS_REVOKED
        )
    e = refused(keys.ResumeKey, pb.ResumeKeyRequest(actor=actor, key_id=key_id))
    assert e.code() == FP and "revoked" in e.details()
    assert (
        refused(
            keys.ResumeKey,
            pb.ResumeKeyRequest(actor=actor, key_id=key_id, only_if=pb.SUSPENSION_REASON_DEPOSIT_LINE),
        ).code()
        == FP
    )
    assert detail(keys, actor, key_id).key.status == pb.KEY_STATUS_REVOKED
    assert auth_status(keys, made.secret) == pb.KEY_STATUS_REVOKED


def test_a_top_up_retried_after_a_revoke_converges(keys, ledger):
    pid, actor = partner(keys, ledger)
    made = create(keys, actor, 10)
    top = pb.TopUpKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="t-1", amount_credits=5)
    first = keys.TopUpKey(top, timeout=T)
    keys.RevokeKey(pb.RevokeKeyRequest(actor=actor, key_id=made.key.id), timeout=T)
    before = balance(ledger, f"partner:{pid}")
    again = keys.TopUpKey(top, timeout=T)
    assert again.replayed and again.key.funded_ucr == first.key.funded_ucr == 15 * CREDIT
    assert balance(ledger, f"partner:{pid}") == before
    top.idempotency_key = "t-2"
    assert refused(keys.TopUpKey, top).code() == FP


# -- exhaustion: the cheapest request, settled, decided under the key's lock ----------------


def test_exhaustion_is_decided_by_the_cheapest_request_from_the_settled_budget(keys, ledger):
    _, actor = partner(keys, ledger, tier="enterprise")
    made = create(keys, actor, 1, models=("gpt-4o", "gpt-4o-mini"))
    account = made.key.budget_account
    d = detail(keys, actor, made.key.id)
    # gpt-4o-mini, the cheaper: $0.15 + $0.60 per 1M tokens -> 0.75 x 100 = 75 ucr for 1 + 1 tokens
    assert (d.min_request_ucr, d.settled_remaining_ucr, d.remaining_ucr) == (75, CREDIT, CREDIT)
    mark = pb.MarkKeyExhaustedRequest(actor=actor, key_id=made.key.id)

    spend_exactly(ledger, account, CREDIT - 75)  # exactly one cheapest request left
    e = refused(keys.MarkKeyExhausted, mark)
    assert e.code() == FP and "can still pay" in e.details()
    # a hold in flight leaves the settled budget alone: still not exhausted
    ledger.Reserve(
        lpb.ReserveRequest(
            request_id=uuid.uuid4().hex, account=account, model="m", price=ONE_UCR_PER_TOKEN, max_input_tokens=50
        ),
        timeout=T,
    )
    d = detail(keys, actor, made.key.id)
    assert (d.settled_remaining_ucr, d.reserved_ucr, d.remaining_ucr, d.used_ucr) == (75, 50, 25, CREDIT - 75)
    assert refused(keys.MarkKeyExhausted, mark).code() == FP
    assert detail(keys, actor, made.key.id).key.status == pb.KEY_STATUS_ACTIVE

    spend_exactly(ledger, account, 1)  # 74 settled: not even the cheapest request
    assert keys.MarkKeyExhausted(mark, timeout=T).status == pb.KEY_STATUS_EXHAUSTED
    assert keys.MarkKeyExhausted(mark, timeout=T).status == pb.KEY_STATUS_EXHAUSTED  # a retry: OK
    assert auth_status(keys, made.secret) == pb.KEY_STATUS_EXHAUSTED
    keys.TopUpKey(
        pb.TopUpKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="revive", amount_credits=1), timeout=T
    )
    assert detail(keys, actor, made.key.id).key.status == pb.KEY_STATUS_ACTIVE
    assert refused(keys.MarkKeyExhausted, mark).code() == FP


def test_the_cheapest_request_follows_the_allowed_models(keys, ledger):
    _, actor = partner(keys, ledger, tier="enterprise")
    made = create(keys, actor, 1, models=("gpt-4o",))
    assert detail(keys, actor, made.key.id).min_request_ucr == 1_250  # $2.50 + $10.00 -> 12.5 x 100
    keys.UpdateKey(
        pb.UpdateKeyRequest(
            actor=actor,
            key_id=made.key.id,
            update_mask=["allowed_models"],
            fields=pb.KeyFields(allowed_models=["gpt-4o", "claude-haiku-4-5"]),
        ),
        timeout=T,
    )
    # claude-haiku-4-5: $1 + $5 -> 600 ucr
    assert detail(keys, actor, made.key.id).min_request_ucr == 600


def auth_status(keys, secret):
    return keys.AuthenticateKey(pb.AuthenticateKeyRequest(key_hash=hash_secret(secret)), timeout=T).key.status


# -- reads that show what applies ----------------------------------------------------------


def test_visibility_is_the_three_conditions_together(keys, ledger):
    pid, actor = partner(keys, ledger, credits=0)
    c = keys.CreateCustomer(pb.CreateCustomerRequest(actor=actor, name="C"), timeout=T)
    assert (c.ai_gateway_visible, c.ai_gateway_menu_enabled, list(c.ai_gateway_missing)) == (
        False,
        False,
        ["self_service_disabled", "ai_credits_disabled", "ai_gateway_menu_disabled"],
    )

    def read():
        got = keys.GetCustomer(pb.GetCustomerRequest(actor=actor, customer_id=c.id), timeout=T)
        listed = {x.id: x for x in keys.ListCustomers(pb.ListCustomersRequest(actor=actor), timeout=T).customers}
        own = keys.GetCustomer(
            pb.GetCustomerRequest(actor=pb.Actor(partner_id=pid, customer_id=c.id), customer_id=c.id), timeout=T
        )
        assert listed[c.id] == got == own
        return got.ai_gateway_visible, list(got.ai_gateway_missing)

    # apply to existing customers turns the menu toggle on; the master switch is still off
    settings = pb.SelfServiceSettings(enabled=False, default_profit_multiplier="2", ai_credit_price_cents="1")
    keys.UpdateSelfService(
        pb.UpdateSelfServiceRequest(actor=actor, settings=settings, apply_to_existing_customers=True), timeout=T
    )
    assert read() == (False, ["self_service_disabled", "ai_credits_disabled"])
    updated = keys.UpdateCustomer(
        pb.UpdateCustomerRequest(actor=actor, customer_id=c.id, ai_credits_enabled=True), timeout=T
    )
    assert (updated.ai_gateway_visible, list(updated.ai_gateway_missing)) == (False, ["self_service_disabled"])
    settings.enabled = True
    keys.UpdateSelfService(pb.UpdateSelfServiceRequest(actor=actor, settings=settings), timeout=T)
    assert read() == (True, [])
    keys.UpdateCustomer(
        pb.UpdateCustomerRequest(actor=actor, customer_id=c.id, ai_gateway_menu_enabled=False), timeout=T
    )
    assert read() == (False, ["ai_gateway_menu_disabled"])


def test_a_customer_keys_billing_reads_back_as_billed(keys, ledger):
    pid, actor = partner(keys, ledger, credits=2_000)
    c, cactor = customer_with_gateway(keys, ledger, pid, actor)
    made = customer_key(keys, cactor)

    def every_read():
        """The key's billing in every answer that carries it, and what the proxy bills."""
        reads = [
            detail(keys, actor, made.key.id).key.billing,
            detail(keys, cactor, made.key.id).key.billing,
            {k.id: k for k in keys.ListKeys(pb.ListKeysRequest(actor=actor), timeout=T).keys}[made.key.id].billing,
            keys.UpdateKey(
                pb.UpdateKeyRequest(
                    actor=cactor, key_id=made.key.id, update_mask=["name"], fields=pb.KeyFields(name="renamed")
                ),
                timeout=T,
            ).billing,
            keys.ResumeKey(pb.ResumeKeyRequest(actor=actor, key_id=made.key.id), timeout=T).billing,
        ]
        authed = keys.AuthenticateKey(pb.AuthenticateKeyRequest(key_hash=hash_secret(made.secret)), timeout=T).billing
        return reads, (authed.profit_multiplier, authed.price_per_ai_credit_cents, authed.floor_usd_per_mtok)

    reads, billed = every_read()
    for b in [made.key.billing, *reads]:
        assert (b.customer_id, b.profit_multiplier, b.price_per_ai_credit_cents, b.floor_usd_per_mtok) == (
            c.id,
            "2",
            "1",
            "",
        )
    assert billed == ("2", "1", "")
    keys.UpdateSelfService(
        pb.UpdateSelfServiceRequest(
            actor=actor,
            settings=pb.SelfServiceSettings(enabled=True, default_profit_multiplier="3.5", ai_credit_price_cents="0.5"),
        ),
        timeout=T,
    )
    reads, billed = every_read()
    for b in reads:
        assert (b.customer_id, b.profit_multiplier, b.price_per_ai_credit_cents, b.floor_usd_per_mtok) == (
            c.id,
            "3.5",
            "0.5",
            "",
        )
    assert billed == ("3.5", "0.5", "")


def test_a_partner_keys_billing_reads_back_as_stored(keys, ledger):
    pid, actor = partner(keys, ledger)
    c = keys.CreateCustomer(pb.CreateCustomerRequest(actor=actor, name="C", ai_credits_enabled=True), timeout=T)
    made = create(
        keys,
        actor,
        10,
        billing=pb.CustomerBilling(
            customer_id=c.id, profit_multiplier="2.5", price_per_ai_credit_cents="1.2", floor_usd_per_mtok="3"
        ),
    )
    keys.UpdateSelfService(pb.UpdateSelfServiceRequest(actor=actor, settings=SELF_SERVICE), timeout=T)
    b = detail(keys, actor, made.key.id).key.billing
    assert (b.customer_id, b.profit_multiplier, b.price_per_ai_credit_cents, b.floor_usd_per_mtok) == (
        c.id,
        "2.5",
        "1.2",
        "3",
    )
    authed = keys.AuthenticateKey(pb.AuthenticateKeyRequest(key_hash=hash_secret(made.secret)), timeout=T).billing
    assert (authed.profit_multiplier, authed.price_per_ai_credit_cents, authed.floor_usd_per_mtok) == (
        "2.5",
        "1.2",
        "3",
    )


# -- spend after a revoke, as in-flight requests settle -----------------------------------


def test_spend_stays_true_while_holds_settle_after_a_revoke(keys, ledger):
    """The ledger closes a revoked key's account: a hold in flight at the revoke releases
    its rest to the partner when it settles. Spend reads count that as refunded."""
    pid, actor = partner(keys, ledger)
    made = create(keys, actor, 100)
    account = made.key.budget_account
    spend_exactly(ledger, account, 3 * CREDIT)
    rid = uuid.uuid4().hex
    ledger.Reserve(
        lpb.ReserveRequest(
            request_id=rid, account=account, model="m", price=ONE_UCR_PER_TOKEN, max_input_tokens=10 * CREDIT
        ),
        timeout=T,
    )  # 10 credits in flight
    keys.RevokeKey(pb.RevokeKeyRequest(actor=actor, key_id=made.key.id), timeout=T)
    partner_after_revoke = balance(ledger, f"partner:{pid}").posted_ucr

    def spent():
        d = detail(keys, actor, made.key.id)
        listed = {
            k.id: k for k in keys.ListKeys(pb.ListKeysRequest(actor=actor, include_revoked=True), timeout=T).keys
        }[made.key.id]
        assert listed.spent_ucr == d.key.spent_ucr == d.used_ucr
        return d.key.spent_ucr

    assert spent() == 3 * CREDIT
    ledger.Settle(
        lpb.SettleRequest(request_id=rid, input_tokens=4 * CREDIT, usage_source=lpb.USAGE_SOURCE_PROVIDER), timeout=T
    )
    assert spent() == 7 * CREDIT
    # the ledger's side of it: the rest went to the partner, and the account says so
    b = balance(ledger, account)
    assert b.closed_to == f"partner:{pid}" and (b.posted_ucr, b.pending_ucr) == (0, 0)
    assert b.refunded_ucr == 100 * CREDIT - 7 * CREDIT
    assert balance(ledger, f"partner:{pid}").posted_ucr == partner_after_revoke + 6 * CREDIT
