"""Operators' calls on partners over real gRPC (keys + ledger + NATS, SQLite and
PostgreSQL): ListPartners pages and filters; UpdatePartner changes the tier (and so the
fee and the models) and the status, which the proxy's login sees at once (a KeyChanged
per live key of the partner)."""

from __future__ import annotations

import asyncio
import base64
import uuid

import grpc
import nats
import pytest

from cglib.keysecret import hash_secret
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.keys.v1 import keys_pb2_grpc
from creditgate.ledger.v1 import ledger_pb2 as lpb
from creditgate.ledger.v1 import ledger_pb2_grpc
from support.stacks import KEYS_AND_LEDGER, shared_stack

T = 10
SUSPENDED, ACTIVE = pb.PARTNER_STATUS_SUSPENDED, pb.PARTNER_STATUS_ACTIVE
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND


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


def new_partner(keys, ledger, name="P", tier="growth", credits=10_000) -> pb.Partner:
    p = keys.CreatePartner(pb.CreatePartnerRequest(name=name, tier=tier, external_ref=uuid.uuid4().hex), timeout=T)
    if credits:
        deposit = lpb.DepositRequest(
            idempotency_id=uuid.uuid4().hex, account=f"partner:{p.id}", amount_ucr=credits * 1_000_000
        )
        ledger.Deposit(deposit, timeout=T)
    return p


def new_key(keys, partner_id: str, models=("gpt-4o-mini",)) -> pb.CreateKeyResponse:
    return keys.CreateKey(
        pb.CreateKeyRequest(
            actor=pb.Actor(partner_id=partner_id),
            idempotency_key=uuid.uuid4().hex,
            budget_credits=100,
            fields=pb.KeyFields(name="k", allowed_models=list(models)),
        ),
        timeout=T,
    )


def code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def test_a_partner_reads_with_its_fee_rate_creation_time_and_state(keys, ledger):
    p = new_partner(keys, ledger, tier="starter")
    assert (p.tier, p.fee_rate, p.status, p.state) == ("starter", "0.10", "active", ACTIVE)
    assert p.created_at_unix > 0
    got = keys.GetPartner(pb.GetPartnerRequest(actor=pb.Actor(partner_id=p.id)), timeout=T)
    assert (got.fee_rate, got.state, got.created_at_unix) == ("0.10", ACTIVE, p.created_at_unix)


def test_list_partners_pages_every_partner_once_and_filters(keys, ledger):
    tag = uuid.uuid4().hex[:8]
    made = [new_partner(keys, ledger, name=f"Lister {tag} {i}", credits=0).id for i in range(5)]
    seen: list[str] = []
    token = ""
    while True:
        page = keys.ListPartners(pb.ListPartnersRequest(page_size=2, page_token=token, name_contains=tag), timeout=T)
        assert len(page.partners) <= 2
        seen += [p.id for p in page.partners]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) and set(seen) == set(made)  # each once (oldest first, to the second)
    upper = keys.ListPartners(pb.ListPartnersRequest(name_contains=f"LISTER {tag.upper()} 3"), timeout=T)
    assert [p.id for p in upper.partners] == [made[3]]
    keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=made[1], state=SUSPENDED), timeout=T)
    suspended = keys.ListPartners(pb.ListPartnersRequest(state=SUSPENDED, name_contains=tag), timeout=T)
    assert [p.id for p in suspended.partners] == [made[1]]
    active = keys.ListPartners(pb.ListPartnersRequest(state=ACTIVE, name_contains=tag), timeout=T)
    assert {p.id for p in active.partners} == {made[0], *made[2:]}
    # a wildcard is a character, not a pattern
    assert not keys.ListPartners(pb.ListPartnersRequest(name_contains=f"{tag}%"), timeout=T).partners


@pytest.mark.parametrize(
    "request_",
    [
        pb.ListPartnersRequest(page_size=501),
        pb.ListPartnersRequest(page_size=-1),
        pb.ListPartnersRequest(page_token="not a token"),
        pb.ListPartnersRequest(page_token="bm90LWEtdG9rZW4="),  # base64 of something else
        pb.ListPartnersRequest(name_contains="x" * 201),
        pb.ListPartnersRequest(name_contains="a\x00b"),
        pb.ListPartnersRequest(page_token=base64.urlsafe_b64encode(b"1.a\x00b").decode()),
        pb.ListPartnersRequest(state=7),
    ],
)
def test_list_partners_refuses_what_it_cannot_read(keys, request_):
    assert code(lambda: keys.ListPartners(request_, timeout=T)) == grpc.StatusCode.INVALID_ARGUMENT


def test_update_partner_tier_name_and_refusals(keys, ledger):
    p = new_partner(keys, ledger, tier="starter")
    up = keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=p.id, tier="enterprise", name="Renamed"), timeout=T)
    assert (up.tier, up.fee_rate, up.name, up.state) == ("enterprise", "0.02", "Renamed", ACTIVE)
    quote = keys.QuoteKey(pb.QuoteKeyRequest(actor=pb.Actor(partner_id=p.id), budget_credits=100), timeout=T)
    assert quote.fee_rate == "0.02"
    same = keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=p.id), timeout=T)  # nothing set: unchanged
    assert (same.tier, same.name) == ("enterprise", "Renamed")
    assert code(lambda: keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=p.id, tier="gold"), timeout=T)) == INVALID
    assert code(lambda: keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=p.id, name=" "), timeout=T)) == INVALID
    assert code(lambda: keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=p.id, state=9), timeout=T)) == INVALID
    assert code(lambda: keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id="ptn_nope"), timeout=T)) == NOT_FOUND
    assert code(lambda: keys.UpdatePartner(pb.UpdatePartnerRequest(), timeout=T)) == NOT_FOUND
    for bad_id in ("a\x00b", "x" * 5000):
        assert code(lambda i=bad_id: keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=i), timeout=T)) == NOT_FOUND


def test_the_whole_catalog_with_no_actor(keys):
    every = keys.ListModels(pb.ListModelsRequest(), timeout=T)
    assert every.tier == "" and [c.category for c in every.categories] == ["budget", "mid", "premium"]
    ids = {m.id for c in every.categories for m in c.models}
    assert {"gpt-4o-mini", "gpt-4o"} <= ids


def test_suspending_a_partner_reaches_its_keys_login_and_the_bus(stack, keys, ledger):
    p = new_partner(keys, ledger)
    live, revoked = new_key(keys, p.id), new_key(keys, p.id)
    keys.RevokeKey(pb.RevokeKeyRequest(actor=pb.Actor(partner_id=p.id), key_id=revoked.key.id), timeout=T)

    def login() -> pb.AuthenticateKeyResponse:
        return keys.AuthenticateKey(pb.AuthenticateKeyRequest(key_hash=hash_secret(live.secret)), timeout=T)

    assert (login().partner_state, login().partner_status) == (ACTIVE, "active")

    async def watch_while(change) -> list[events_pb2.KeyChanged]:
        nc = await nats.connect(stack.nats_url)
        got: list[events_pb2.KeyChanged] = []

        async def append(msg) -> None:
            got.append(events_pb2.KeyChanged.FromString(msg.data))

        sub = await nc.subscribe(f"keys.{p.id}.>", cb=append)
        await nc.flush()
        await asyncio.to_thread(change)
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # anything else on its way
        await sub.unsubscribe()
        await nc.close()
        return got

    events = asyncio.run(
        watch_while(lambda: keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=p.id, state=SUSPENDED), timeout=T))
    )
    assert [(e.key_id, e.change) for e in events] == [(live.key.id, events_pb2.KEY_CHANGE_UPDATED)]
    assert (login().partner_state, login().partner_status) == (SUSPENDED, "suspended")
    assert login().key.status == pb.KEY_STATUS_ACTIVE  # the key itself is untouched

    again = asyncio.run(
        watch_while(lambda: keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=p.id, state=SUSPENDED), timeout=T))
    )
    assert again == []  # no change, nothing to drop
    asyncio.run(
        watch_while(lambda: keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=p.id, state=ACTIVE), timeout=T))
    )
    assert login().partner_state == ACTIVE


def test_a_suspended_partner_gets_no_new_keys_or_top_ups_and_nothing_moves(keys, ledger):
    p = new_partner(keys, ledger)
    actor = pb.Actor(partner_id=p.id)
    keys.UpdateSelfService(
        pb.UpdateSelfServiceRequest(
            actor=actor,
            settings=pb.SelfServiceSettings(
                enabled=True, apply_to_new_customers=True, default_profit_multiplier="2", ai_credit_price_cents="1"
            ),
        ),
        timeout=T,
    )
    customer = keys.CreateCustomer(pb.CreateCustomerRequest(actor=actor, name="C", ai_credits_enabled=True), timeout=T)
    cactor = pb.Actor(partner_id=p.id, customer_id=customer.id)
    key = new_key(keys, p.id)
    keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=p.id, state=SUSPENDED), timeout=T)

    def balance() -> int:
        return ledger.GetBalance(lpb.GetBalanceRequest(account=f"partner:{p.id}"), timeout=T).posted_ucr

    def top_up(idem: str) -> pb.TopUpKeyResponse:
        request = pb.TopUpKeyRequest(actor=actor, key_id=key.key.id, idempotency_key=idem, amount_credits=10)
        return keys.TopUpKey(request, timeout=T)

    def customer_key() -> pb.CreateKeyResponse:
        request = pb.CreateCustomerKeyRequest(
            actor=cactor, idempotency_key="ck", name="mine", allowed_models=["gpt-4o-mini"]
        )
        return keys.CreateCustomerKey(request, timeout=T)

    before = balance()
    refused = grpc.StatusCode.FAILED_PRECONDITION
    assert code(lambda: new_key(keys, p.id)) == refused
    assert code(lambda: top_up("t")) == refused
    assert code(customer_key) == refused
    assert balance() == before
    listed = keys.ListKeys(pb.ListKeysRequest(actor=actor, include_revoked=True), timeout=T)
    assert [k.id for k in listed.keys] == [key.key.id]

    keys.UpdatePartner(pb.UpdatePartnerRequest(partner_id=p.id, state=ACTIVE), timeout=T)
    top_up("t")  # the same idempotency key, refused before, now does its work once
    customer_key()
    assert new_key(keys, p.id).key.id
    assert balance() < before
