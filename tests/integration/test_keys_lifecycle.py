"""The virtual-key lifecycle over real gRPC: keys + ledger + NATS processes, on SQLite
and PostgreSQL."""

from __future__ import annotations

import time
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
IA = grpc.StatusCode.INVALID_ARGUMENT
UNSPECIFIED = pb.SUSPENSION_REASON_UNSPECIFIED
BY_PARTNER = pb.SUSPENSION_REASON_BY_PARTNER
DEPOSIT_LINE = pb.SUSPENSION_REASON_DEPOSIT_LINE


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


def partner(keys, ledger, tier="growth", credits=10_000):
    p = keys.CreatePartner(pb.CreatePartnerRequest(name="P", tier=tier, external_ref=uuid.uuid4().hex), timeout=T)
    if credits:
        ledger.Deposit(
            lpb.DepositRequest(idempotency_id=uuid.uuid4().hex, account=f"partner:{p.id}", amount_ucr=credits * CREDIT),
            timeout=T,
        )
    return p, pb.Actor(partner_id=p.id)


def balance(ledger, account) -> lpb.Balance:
    return ledger.GetBalance(lpb.GetBalanceRequest(account=account), timeout=T)


def create(keys, actor, budget=100, models=("gpt-4o-mini",), idem=None, **fields):
    return keys.CreateKey(
        pb.CreateKeyRequest(
            actor=actor,
            idempotency_key=idem or uuid.uuid4().hex,
            budget_credits=budget,
            fields=pb.KeyFields(name=fields.pop("name", "key"), allowed_models=list(models), **fields),
        ),
        timeout=T,
    )


def auth(keys, secret):
    return keys.AuthenticateKey(pb.AuthenticateKeyRequest(key_hash=hash_secret(secret)), timeout=T)


def code(fn, *args) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args, timeout=T)
    return e.value.code()


def test_list_models_by_tier(keys, ledger):
    _, actor = partner(keys, ledger, tier="growth", credits=0)
    models = keys.ListModels(pb.ListModelsRequest(actor=actor), timeout=T)
    assert models.tier == "growth" and models.catalog_version
    assert [c.category for c in models.categories] == ["budget", "mid"]
    ids = {m.id for c in models.categories for m in c.models}
    assert {"gpt-4o-mini", "claude-haiku-4-5"} <= ids and "gpt-4o" not in ids


def test_create_partner_key_charges_budget_and_fee_and_shows_the_secret_once(keys, ledger):
    p, actor = partner(keys, ledger, tier="growth")
    quote = keys.QuoteKey(pb.QuoteKeyRequest(actor=actor, budget_credits=100), timeout=T)
    assert (quote.budget_ucr, quote.fee_ucr, quote.total_ucr, quote.fee_rate) == (
        100 * CREDIT,
        5 * CREDIT,
        105 * CREDIT,
        "0.05",
    )
    made = create(
        keys,
        actor,
        100,
        ["gpt-4o-mini", "claude-haiku-4-5"],
        name="Support bot",
        description="prod",
        allowed_domains=["app.example.com", "*.example.org"],
        rpm_limit=60,
        tpm_limit=10_000,
        auto_topup=pb.AutoTopUp(enabled=True, threshold_usd="5", amount_usd="20"),
    )
    assert made.total_ucr == quote.total_ucr and made.secret.startswith("sk-cg-")
    assert made.key.prefix == made.secret[:12] and made.key.status == pb.KEY_STATUS_ACTIVE
    assert balance(ledger, f"partner:{p.id}").posted_ucr == (10_000 - 105) * CREDIT
    detail = keys.GetKey(pb.GetKeyRequest(actor=actor, key_id=made.key.id), timeout=T)
    assert (detail.remaining_ucr, detail.reserved_ucr, detail.used_ucr) == (100 * CREDIT, 0, 0)
    k = detail.key
    assert (k.name, k.description, list(k.allowed_domains), k.rpm_limit, k.tpm_limit) == (
        "Support bot",
        "prod",
        ["app.example.com", "*.example.org"],
        60,
        10_000,
    )
    assert (k.auto_topup.enabled, k.auto_topup.threshold_usd, k.auto_topup.amount_usd) == (True, "5", "20")
    assert made.secret not in str(detail) and made.secret not in str(keys.ListKeys(pb.ListKeysRequest(actor=actor)))
    # budget vs spend, in the list too: 1 credit spent
    ledger.Reserve(
        lpb.ReserveRequest(
            request_id=uuid.uuid4().hex,
            account=made.key.budget_account,
            model="m",
            price=lpb.Price(input_usd_per_mtok="0", output_usd_per_mtok="100"),
            max_output_tokens=100,
        ),
        timeout=T,
    )
    rid = uuid.uuid4().hex
    ledger.Reserve(
        lpb.ReserveRequest(
            request_id=rid,
            account=made.key.budget_account,
            model="m",
            price=lpb.Price(input_usd_per_mtok="0", output_usd_per_mtok="100"),
            max_output_tokens=100,
        ),
        timeout=T,
    )
    ledger.Settle(
        lpb.SettleRequest(request_id=rid, output_tokens=100, usage_source=lpb.USAGE_SOURCE_PROVIDER), timeout=T
    )
    listed = {k.id: k for k in keys.ListKeys(pb.ListKeysRequest(actor=actor), timeout=T).keys}[made.key.id]
    assert (listed.funded_ucr, listed.spent_ucr, listed.remaining_ucr) == (100 * CREDIT, CREDIT, 98 * CREDIT)
    detail = keys.GetKey(pb.GetKeyRequest(actor=actor, key_id=made.key.id), timeout=T)
    assert (detail.used_ucr, detail.reserved_ucr, detail.remaining_ucr) == (CREDIT, CREDIT, 98 * CREDIT)
    authed = auth(keys, made.secret)
    assert authed.key.id == made.key.id and authed.billing.payer_account == f"key:{made.key.id}"
    assert [m.id for m in authed.models] == ["gpt-4o-mini", "claude-haiku-4-5"]
    assert authed.models[0].input_usd_per_mtok == "0.15" and authed.models[0].upstream_model == "gpt-4o-mini"


def test_a_retried_create_is_one_key_and_one_funding(keys, ledger):
    p, actor = partner(keys, ledger)
    first = create(keys, actor, 50, idem="same")
    again = create(keys, actor, 50, idem="same")
    assert again.key.id == first.key.id and first.secret and not first.replayed
    # the secret was shown once: the replay shows none, and the first one keeps working
    assert again.replayed and again.secret == "" and again.total_ucr == first.total_ucr
    assert auth(keys, first.secret).key.id == first.key.id
    assert balance(ledger, f"partner:{p.id}").posted_ucr == (10_000 - 52.5) * CREDIT
    assert len(keys.ListKeys(pb.ListKeysRequest(actor=actor), timeout=T).keys) == 1


def test_customer_keys_need_all_three_switches_and_hold_the_deposit(keys, ledger):
    p, actor = partner(keys, ledger, credits=2_000)
    customer = keys.CreateCustomer(
        pb.CreateCustomerRequest(actor=actor, name="Acme", ai_credits_enabled=True), timeout=T
    )
    cactor = pb.Actor(partner_id=p.id, customer_id=customer.id)
    request = pb.CreateCustomerKeyRequest(
        actor=cactor, name="mine", allowed_models=["gpt-4o-mini"], idempotency_key=uuid.uuid4().hex
    )

    def refused(expected_words: str):
        with pytest.raises(grpc.RpcError) as e:
            keys.CreateCustomerKey(request, timeout=T)
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION and expected_words in e.value.details()

    settings = pb.SelfServiceSettings(enabled=False, default_profit_multiplier="2", ai_credit_price_cents="1")
    # master toggle off (customer has AI credits, menu made visible for everyone)
    keys.UpdateSelfService(
        pb.UpdateSelfServiceRequest(actor=actor, settings=settings, apply_to_existing_customers=True), timeout=T
    )
    read = keys.GetCustomer(pb.GetCustomerRequest(actor=actor, customer_id=customer.id), timeout=T)
    assert read.ai_gateway_menu_enabled and not read.ai_gateway_visible
    assert list(read.ai_gateway_missing) == ["self_service_disabled"]
    refused("self-service")
    settings.enabled = True
    keys.UpdateSelfService(pb.UpdateSelfServiceRequest(actor=actor, settings=settings), timeout=T)
    # AI Credits off alone
    keys.UpdateCustomer(
        pb.UpdateCustomerRequest(actor=actor, customer_id=customer.id, ai_credits_enabled=False), timeout=T
    )
    refused("AI Credits")
    keys.UpdateCustomer(
        pb.UpdateCustomerRequest(actor=actor, customer_id=customer.id, ai_credits_enabled=True), timeout=T
    )
    # AI Gateway menu off alone
    keys.UpdateCustomer(
        pb.UpdateCustomerRequest(actor=actor, customer_id=customer.id, ai_gateway_menu_enabled=False), timeout=T
    )
    refused("AI Gateway")
    keys.UpdateCustomer(
        pb.UpdateCustomerRequest(actor=actor, customer_id=customer.id, ai_gateway_menu_enabled=True), timeout=T
    )
    made = keys.CreateCustomerKey(request, timeout=T)
    assert made.key.kind == "customer" and made.total_ucr == 1_000 * CREDIT
    assert balance(ledger, f"partner:{p.id}").available_ucr == 1_000 * CREDIT
    authed = auth(keys, made.secret)
    b = authed.billing
    assert (
        b.payer_account,
        b.customer_account,
        b.revenue_account,
        b.profit_multiplier,
        b.price_per_ai_credit_cents,
    ) == (f"partner:{p.id}", f"customer:{customer.id}", f"partnerrev:{p.id}", "2", "1")
    keys.RevokeKey(pb.RevokeKeyRequest(actor=cactor, key_id=made.key.id), timeout=T)
    assert balance(ledger, f"partner:{p.id}").available_ucr == 2_000 * CREDIT
    # the deposit line: a partner that cannot hold another deposit cannot create the key
    poor, pactor = partner(keys, ledger, credits=999)
    keys.UpdateSelfService(pb.UpdateSelfServiceRequest(actor=pactor, settings=settings), timeout=T)
    c2 = keys.CreateCustomer(pb.CreateCustomerRequest(actor=pactor, name="B", ai_credits_enabled=True), timeout=T)
    keys.UpdateCustomer(
        pb.UpdateCustomerRequest(actor=pactor, customer_id=c2.id, ai_gateway_menu_enabled=True), timeout=T
    )
    assert (
        code(
            keys.CreateCustomerKey,
            pb.CreateCustomerKeyRequest(
                actor=pb.Actor(partner_id=poor.id, customer_id=c2.id),
                name="x",
                allowed_models=["gpt-4o-mini"],
                idempotency_key=uuid.uuid4().hex,
            ),
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert balance(ledger, f"partner:{poor.id}").available_ucr == 999 * CREDIT


def test_new_customers_follow_apply_to_new(keys, ledger):
    _, actor = partner(keys, ledger, credits=0)
    keys.UpdateSelfService(
        pb.UpdateSelfServiceRequest(
            actor=actor,
            settings=pb.SelfServiceSettings(
                enabled=True, apply_to_new_customers=True, default_profit_multiplier="1.5", ai_credit_price_cents="1"
            ),
        ),
        timeout=T,
    )
    new = keys.CreateCustomer(pb.CreateCustomerRequest(actor=actor, name="New"), timeout=T)
    assert new.ai_gateway_menu_enabled and list(new.ai_gateway_missing) == ["ai_credits_disabled"]
    assert not new.ai_gateway_visible
    new = keys.CreateCustomer(pb.CreateCustomerRequest(actor=actor, name="New", ai_credits_enabled=True), timeout=T)
    assert new.ai_gateway_visible and list(new.ai_gateway_missing) == []
    # an explicit toggle wins over the partner's default
    off = keys.CreateCustomer(
        pb.CreateCustomerRequest(actor=actor, name="Off", ai_credits_enabled=True, ai_gateway_menu_enabled=False),
        timeout=T,
    )
    assert not off.ai_gateway_visible and list(off.ai_gateway_missing) == ["ai_gateway_menu_disabled"]


def test_regenerate_keeps_id_and_budget_and_kills_the_old_secret(keys, ledger):
    _, actor = partner(keys, ledger)
    made = create(keys, actor, 20)
    again = keys.RegenerateKey(
        pb.RegenerateKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="r-1"), timeout=T
    )
    assert again.key.id == made.key.id and again.secret != made.secret and again.key.funded_ucr == 20 * CREDIT
    assert (
        code(keys.AuthenticateKey, pb.AuthenticateKeyRequest(key_hash=hash_secret(made.secret)))
        == grpc.StatusCode.NOT_FOUND
    )
    assert auth(keys, again.secret).key.id == made.key.id


def test_revoke_is_final_refunds_unused_budget_and_is_idempotent(keys, ledger):
    p, actor = partner(keys, ledger)
    made = create(keys, actor, 100)
    ledger.Reserve(
        lpb.ReserveRequest(
            request_id=uuid.uuid4().hex,
            account=made.key.budget_account,
            model="m",
            price=lpb.Price(input_usd_per_mtok="0", output_usd_per_mtok="100"),
            max_output_tokens=100,
        ),
        timeout=T,
    )  # 1 credit in flight
    revoked = keys.RevokeKey(pb.RevokeKeyRequest(actor=actor, key_id=made.key.id), timeout=T)
    assert revoked.status == pb.KEY_STATUS_REVOKED
    assert balance(ledger, f"partner:{p.id}").posted_ucr == (10_000 - 105 + 99) * CREDIT  # the fee stays paid
    keys.RevokeKey(pb.RevokeKeyRequest(actor=actor, key_id=made.key.id), timeout=T)
    assert balance(ledger, f"partner:{p.id}").posted_ucr == (10_000 - 105 + 99) * CREDIT
    assert auth(keys, made.secret).key.status == pb.KEY_STATUS_REVOKED
    for call, req in (
        (keys.RegenerateKey, pb.RegenerateKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="r")),
        (keys.ResumeKey, pb.ResumeKeyRequest(actor=actor, key_id=made.key.id)),
        (keys.SuspendKey, pb.SuspendKeyRequest(actor=actor, key_id=made.key.id, note="x")),
        (keys.MarkKeyExhausted, pb.MarkKeyExhaustedRequest(actor=actor, key_id=made.key.id)),
        (
            keys.UpdateKey,
            pb.UpdateKeyRequest(
                actor=actor, key_id=made.key.id, update_mask=["name"], fields=pb.KeyFields(name="back?")
            ),
        ),
        (keys.TopUpKey, pb.TopUpKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="t", amount_credits=5)),
    ):
        assert code(call, req) == grpc.StatusCode.FAILED_PRECONDITION, call
    assert auth(keys, made.secret).key.status == pb.KEY_STATUS_REVOKED
    listed = keys.ListKeys(pb.ListKeysRequest(actor=actor), timeout=T).keys
    assert made.key.id not in [k.id for k in listed]
    listed = keys.ListKeys(pb.ListKeysRequest(actor=actor, include_revoked=True), timeout=T).keys
    assert made.key.id in [k.id for k in listed]


def test_suspend_resume_and_top_up(keys, ledger):
    p, actor = partner(keys, ledger)
    made = create(keys, actor, 10)

    def suspend(**kw) -> pb.Key:
        return keys.SuspendKey(pb.SuspendKeyRequest(actor=actor, key_id=made.key.id, **kw), timeout=T)

    def resume(**kw) -> pb.Key:
        return keys.ResumeKey(pb.ResumeKeyRequest(actor=actor, key_id=made.key.id, **kw), timeout=T)

    s = suspend(suspension=DEPOSIT_LINE, note="below the line")
    assert (s.status, s.suspension, s.status_reason) == (pb.KEY_STATUS_SUSPENDED, DEPOSIT_LINE, "below the line")
    assert auth(keys, made.secret).key.status == pb.KEY_STATUS_SUSPENDED
    assert auth(keys, made.secret).key.suspension == DEPOSIT_LINE
    still = resume(only_if=BY_PARTNER)
    assert (still.status, still.suspension) == (pb.KEY_STATUS_SUSPENDED, DEPOSIT_LINE)
    # a deliberate suspension (UNSPECIFIED is one) replaces the worker's, so the worker's
    # resume cannot lift it ...
    abuse = suspend(note="abuse")
    assert (abuse.suspension, abuse.status_reason) == (BY_PARTNER, "abuse")
    lifted = resume(only_if=DEPOSIT_LINE)
    assert (lifted.status, lifted.suspension, lifted.status_reason) == (pb.KEY_STATUS_SUSPENDED, BY_PARTNER, "abuse")
    # ... and the worker's never replaces a deliberate one
    again = suspend(suspension=DEPOSIT_LINE)
    assert (again.suspension, again.status_reason) == (BY_PARTNER, "abuse")
    back = resume()
    assert (back.status, back.suspension, back.status_reason) == (pb.KEY_STATUS_ACTIVE, UNSPECIFIED, "")
    # a suspension the enum does not have, or a note too long, is refused, and nothing changes
    for bad in ({"suspension": 99}, {"note": "n" * 201}):
        assert code(keys.SuspendKey, pb.SuspendKeyRequest(actor=actor, key_id=made.key.id, **bad)) == IA, bad
    assert code(keys.ResumeKey, pb.ResumeKeyRequest(actor=actor, key_id=made.key.id, only_if=99)) == IA
    assert auth(keys, made.secret).key.status == pb.KEY_STATUS_ACTIVE
    top = pb.TopUpKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="t-1", amount_credits=40)
    out = keys.TopUpKey(top, timeout=T)
    assert (out.amount_ucr, out.fee_ucr, out.key.funded_ucr) == (40 * CREDIT, 2 * CREDIT, 50 * CREDIT)
    again = keys.TopUpKey(top, timeout=T)
    assert again.key.funded_ucr == 50 * CREDIT
    assert balance(ledger, f"partner:{p.id}").posted_ucr == (10_000 - 10.5 - 42) * CREDIT
    assert balance(ledger, made.key.budget_account).posted_ucr == 50 * CREDIT


def test_update_and_expiry(keys, ledger):
    _, actor = partner(keys, ledger)
    made = create(keys, actor, 10)
    soon = int(time.time()) + 2
    updated = keys.UpdateKey(
        pb.UpdateKeyRequest(
            actor=actor,
            key_id=made.key.id,
            update_mask=["name", "allowed_domains", "expires_at_unix", "rpm_limit"],
            fields=pb.KeyFields(name="renamed", allowed_domains=["*.Example.com"], expires_at_unix=soon, rpm_limit=5),
        ),
        timeout=T,
    )
    assert (updated.name, list(updated.allowed_domains), updated.rpm_limit, updated.expires_at_unix) == (
        "renamed",
        ["*.example.com"],
        5,
        soon,
    )
    assert auth(keys, made.secret).key.status == pb.KEY_STATUS_ACTIVE
    time.sleep(max(soon - time.time(), 0) + 0.2)
    assert auth(keys, made.secret).key.status == pb.KEY_STATUS_EXPIRED
    assert keys.GetKey(pb.GetKeyRequest(actor=actor, key_id=made.key.id), timeout=T).key.status == pb.KEY_STATUS_EXPIRED


def test_lifecycle_changes_are_published(stack, keys, ledger):
    import asyncio

    import nats

    from creditgate.events.v1 import events_pb2

    _, actor = partner(keys, ledger)
    made = create(keys, actor, 10)

    async def watch():
        nc = await nats.connect(stack.nats_url)
        got: list = []

        async def on_event(msg):
            event = events_pb2.KeyChanged.FromString(msg.data)
            if event.change != events_pb2.KEY_CHANGE_CREATED:  # the creation's own, late on a loaded machine
                got.append(event)

        sub = await nc.subscribe(f"keys.{made.key.partner_id}.{made.key.id}", cb=on_event)
        await nc.flush()  # the server has the subscription before anything is published
        await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: keys.RegenerateKey(
                pb.RegenerateKeyRequest(actor=actor, key_id=made.key.id, idempotency_key="r-1"), timeout=T
            ),
        )
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: keys.SuspendKey(
                pb.SuspendKeyRequest(actor=actor, key_id=made.key.id, suspension=DEPOSIT_LINE), timeout=T
            ),
        )
        for _ in range(100):
            if len(got) >= 2:
                break
            await asyncio.sleep(0.02)
        await sub.unsubscribe()
        await nc.drain()
        return got

    events = asyncio.run(watch())
    assert events and events[0].change == events_pb2.KEY_CHANGE_REGENERATED
    assert events[0].stale_key_hashes == [hash_secret(made.secret)]
    assert (events[0].status, events[0].suspension) == ("active", UNSPECIFIED)
    assert len(events) == 2 and events[1].change == events_pb2.KEY_CHANGE_SUSPENDED
    assert (events[1].status, events[1].suspension) == ("suspended", DEPOSIT_LINE)


def test_idempotency_keys_belong_to_their_owner(keys, ledger):
    """Two customers (and the partner) using the same idempotency key get their own keys:
    nobody can block, or learn about, another's create."""
    p, actor = partner(keys, ledger, credits=5_000)
    keys.UpdateSelfService(
        pb.UpdateSelfServiceRequest(
            actor=actor,
            settings=pb.SelfServiceSettings(
                enabled=True, apply_to_new_customers=True, default_profit_multiplier="2", ai_credit_price_cents="1"
            ),
        ),
        timeout=T,
    )
    made = []
    for name in ("one", "two"):
        c = keys.CreateCustomer(pb.CreateCustomerRequest(actor=actor, name=name, ai_credits_enabled=True), timeout=T)
        made.append(
            keys.CreateCustomerKey(
                pb.CreateCustomerKeyRequest(
                    actor=pb.Actor(partner_id=p.id, customer_id=c.id),
                    idempotency_key="same",
                    name=name,
                    allowed_models=["gpt-4o-mini"],
                ),
                timeout=T,
            ).key
        )
    made.append(create(keys, actor, 10, idem="same").key)
    assert len({k.id for k in made}) == 3
    assert [k.owner_customer_id != "" for k in made] == [True, True, False]
