"""The worker over real NATS, keys, ledger and proxy processes: auto top-up once per
crossing (five replicas racing, or killed mid-way), exhaustion by the cheapest request,
the deposit line, and duplicated events that change nothing."""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import nats
import pytest

from cg_devstack import Stack, StackConfig
from cg_devstack.seed import Seeder
from cglib import natsx
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2 as kpb
from creditgate.ledger.v1 import ledger_pb2 as lpb
from helpers import eventually, quiet_balance

T = 10
# gpt-4o: $2.50 per 1M input tokens = 250 ucr a token; 5,000 words cost ~1.27 credits
EXPENSIVE = {"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "word " * 5000}]}
CHEAP = {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def stack(request):
    with tempfile.TemporaryDirectory(prefix="cg-worker-") as var:
        # a short ack wait so a crashed worker's event comes back quickly
        env = {"worker": {"CG_WORKER_ACK_WAIT_S": "2"}}
        failed_before = request.session.testsfailed
        with Stack(StackConfig(var_dir=Path(var), env=env)) as s:
            yield s
            if request.session.testsfailed > failed_before:  # say what the workers saw
                for name, proc in s.procs.items():
                    if name.startswith("worker") or name == "keys":
                        tail = [line[:400] for line in proc.log_text().splitlines() if '"level": "info"' not in line][
                            -15:
                        ]
                        print(f"--- {name} (warnings and errors) ---", *tail, sep="\n")


@pytest.fixture(scope="module")
def seeder(stack):
    s = Seeder(stack.keys_addr, stack.ledger_addr)
    yield s
    s.close()


def call(stack, secret, body=EXPENSIVE) -> int:
    return httpx.post(
        f"{stack.proxy_url}/v1/chat/completions", json=body, timeout=30, headers={"Authorization": f"Bearer {secret}"}
    ).status_code


def key_detail(seeder, key) -> kpb.KeyDetail:
    return seeder.keys.GetKey(
        kpb.GetKeyRequest(actor=kpb.Actor(partner_id=key.partner_id), key_id=key.key_id), timeout=T
    )


def auto_key(seeder, ref: str):
    """501 credits, auto top-up of $20 (2,000 credits) below $5 (500 credits)."""
    partner = seeder.partner(ref, credits=10_000, tier="enterprise")
    return seeder.funded_key(
        partner,
        501,
        ["gpt-4o", "gpt-4o-mini"],
        name="auto",
        auto_topup=kpb.AutoTopUp(enabled=True, threshold_usd="5", amount_usd="20"),
    )


def funded(seeder, key) -> int:
    return key_detail(seeder, key).key.funded_ucr


def settle_a_moment(seconds: float = 2.5) -> None:
    time.sleep(seconds)  # the worker's chance to do something it must not do


def test_one_crossing_one_top_up_with_five_replicas_racing(stack: Stack, seeder):
    replicas = [stack.start_replica("worker", f"worker-{i}")[0] for i in range(2, 6)]
    try:
        key = auto_key(seeder, "race")
        with ThreadPoolExecutor(8) as pool:  # eight requests cross the line together
            assert set(pool.map(lambda _: call(stack, key.secret), range(8))) == {200}
        eventually(lambda: funded(seeder, key) == 2_501 * CREDIT, what="the auto top-up")
        settle_a_moment()
        assert funded(seeder, key) == 2_501 * CREDIT
        # 501 + 2,000 credits, each with the enterprise tier's 2% fee, left the partner once
        assert seeder.balance_ucr(f"partner:{key.partner_id}") == (10_000 - 511.02 - 2_040) * CREDIT
        logs = "".join(p.log_text() for p in [stack.procs["worker"], *replicas])
        assert logs.count('"msg": "auto top-up"') == 1
    finally:
        for proc in replicas:
            proc.stop()


@pytest.mark.parametrize(
    "point, topped_up_before_restart", [("topup:after_ledger", True), ("topup:before_ledger", False)]
)
def test_a_worker_killed_mid_top_up_leaves_exactly_one(stack: Stack, seeder, point, topped_up_before_restart):
    stack.stop_service("worker")
    try:
        doomed, _ = stack.start_replica("worker", "worker-doomed", {"CG_CRASH_AT": point})
        key = auto_key(seeder, f"crash-{point}")
        assert call(stack, key.secret) == 200
        assert doomed.popen.wait(20) == 137
        assert funded(seeder, key) == (2_501 if topped_up_before_restart else 501) * CREDIT
    finally:
        stack.start_service("worker")  # gets the unacknowledged event again
    try:
        eventually(lambda: funded(seeder, key) == 2_501 * CREDIT, timeout_s=30, what="the top-up after the restart")
    except AssertionError:

        async def consumer_state():
            nc = await nats.connect(stack.nats_url)
            info = await nc.jetstream().consumer_info("USAGE", "worker-usage")
            await nc.close()
            return info

        print(asyncio.run(consumer_state()))
        for name in ("worker", "worker-doomed"):
            print(name, "\n".join(line[:300] for line in stack.procs[name].log_text().splitlines()[-8:]))
        raise
    settle_a_moment(4)  # past the ack wait: any redelivery has been seen
    assert funded(seeder, key) == 2_501 * CREDIT


def test_a_refused_top_up_is_recorded_on_the_key(stack: Stack, seeder):
    partner = seeder.partner("poor-auto", credits=600, tier="enterprise")
    key = seeder.funded_key(
        partner,
        501,
        ["gpt-4o"],
        name="auto",
        auto_topup=kpb.AutoTopUp(enabled=True, threshold_usd="5", amount_usd="20"),
    )
    assert call(stack, key.secret) == 200
    detail = eventually(
        lambda: (d := key_detail(seeder, key)).key.auto_topup.last_error and d, what="the failure on the key"
    )
    assert "cannot cover" in detail.key.auto_topup.last_error and detail.key.auto_topup.last_error_unix > 0
    assert detail.key.funded_ucr == 501 * CREDIT


def spend_exactly(seeder, account: str, amount_ucr: int) -> None:
    """Spends an exact amount from an account, straight in the ledger (1 ucr a token)."""
    rid, price = uuid.uuid4().hex, lpb.Price(input_usd_per_mtok="0.01", output_usd_per_mtok="0.01")
    seeder.ledger.Reserve(
        lpb.ReserveRequest(request_id=rid, account=account, model="m", price=price, max_input_tokens=amount_ucr),
        timeout=T,
    )
    seeder.ledger.Settle(
        lpb.SettleRequest(request_id=rid, input_tokens=amount_ucr, usage_source=lpb.USAGE_SOURCE_PROVIDER), timeout=T
    )


def nudge(stack, key) -> None:
    """A usage event for the key: the worker re-reads it and applies its rules."""

    async def publish():
        nc = await nats.connect(stack.nats_url)
        event = events_pb2.UsageEvent(
            request_id=uuid.uuid4().hex,
            key_id=key.key_id,
            partner_id=key.partner_id,
            model="gpt-4o-mini",
            outcome=events_pb2.USAGE_OUTCOME_OK,
        )
        await nc.jetstream().publish(natsx.usage_subject(key.partner_id, key.key_id), event.SerializeToString())
        await nc.drain()

    asyncio.run(publish())


def test_a_key_that_cannot_pay_its_cheapest_request_is_exhausted_and_a_top_up_revives_it(stack: Stack, seeder):
    partner = seeder.partner("exhaust", credits=100, tier="enterprise")
    key = seeder.funded_key(partner, 7, ["gpt-4o", "gpt-4o-mini"], name="small")
    assert call(stack, key.secret) == 200  # ~1.27 credits: what is left still pays for requests
    cheapest = key_detail(seeder, key).min_request_ucr
    assert cheapest == 75  # gpt-4o-mini, 1 token in and 1 out: ($0.15 + $0.60) x 100 ucr
    # down to exactly the cheapest request: not exhausted
    spend_exactly(seeder, key.account, quiet_balance(seeder, key.account) - cheapest)
    nudge(stack, key)
    settle_a_moment()
    assert key_detail(seeder, key).key.status == kpb.KEY_STATUS_ACTIVE
    # one micro-credit less: it cannot pay for any request
    spend_exactly(seeder, key.account, 1)
    nudge(stack, key)
    eventually(lambda: key_detail(seeder, key).key.status == kpb.KEY_STATUS_EXHAUSTED, what="exhausted")
    eventually(lambda: call(stack, key.secret, CHEAP) == 403, timeout_s=10, what="the proxy refusing it")
    seeder.keys.TopUpKey(
        kpb.TopUpKeyRequest(
            actor=kpb.Actor(partner_id=partner), key_id=key.key_id, idempotency_key="again", amount_credits=10
        ),
        timeout=T,
    )
    eventually(lambda: call(stack, key.secret, CHEAP) == 200, timeout_s=10, what="the key back")


def test_the_deposit_line_suspends_and_resumes_exactly_the_customer_keys(stack: Stack, seeder):
    partner = seeder.partner("line", credits=3_300, tier="growth")
    actor = kpb.Actor(partner_id=partner)
    seeder.keys.UpdateSelfService(
        kpb.UpdateSelfServiceRequest(
            actor=actor,
            settings=kpb.SelfServiceSettings(
                enabled=True, apply_to_new_customers=True, default_profit_multiplier="1.5", ai_credit_price_cents="1"
            ),
        ),
        timeout=T,
    )
    customer = seeder.keys.CreateCustomer(
        kpb.CreateCustomerRequest(actor=actor, name="C", ai_credits_enabled=True), timeout=T
    )
    seeder.ledger.GrantAiCredits(
        lpb.GrantAiCreditsRequest(
            idempotency_id=uuid.uuid4().hex, customer_account=f"customer:{customer.id}", amount_uai=1_000 * CREDIT
        ),
        timeout=T,
    )
    cactor = kpb.Actor(partner_id=partner, customer_id=customer.id)
    made = [
        seeder.keys.CreateCustomerKey(
            kpb.CreateCustomerKeyRequest(
                actor=cactor, idempotency_key=uuid.uuid4().hex, name=f"c{i}", allowed_models=["gpt-4o-mini"]
            ),
            timeout=T,
        )
        for i in range(3)
    ]
    kept, revoked, other = made
    seeder.keys.SuspendKey(kpb.SuspendKeyRequest(actor=actor, key_id=other.key.id, note="abuse review"), timeout=T)
    # three deposits hold 3,000: 300 available, below the 1,000 line
    eventually(lambda: call(stack, kept.secret, CHEAP) == 403, timeout_s=10, what="suspension at the proxy")
    # (a call made before the worker suspended the key was paid by the partner: count from here)
    before = quiet_balance(seeder, f"partner:{partner}")
    assert before <= 300 * CREDIT
    seeder.keys.RevokeKey(kpb.RevokeKeyRequest(actor=actor, key_id=revoked.key.id), timeout=T)  # releases 1,000
    assert (
        seeder.ledger.GetBalance(lpb.GetBalanceRequest(account=f"partner:{partner}"), timeout=T).available_ucr
        == before + 1_000 * CREDIT
    )
    eventually(lambda: call(stack, kept.secret, CHEAP) == 200, timeout_s=10, what="resumed above the line")
    # spending below the line again: funding a partner key takes 400 + 5% fee
    start = time.monotonic()
    seeder.funded_key(partner, 400, ["gpt-4o-mini"], name="spend")
    eventually(lambda: call(stack, kept.secret, CHEAP) == 403, timeout_s=2, what="suspension within 2 s")
    print(f"deposit line: customer key refused {1000 * (time.monotonic() - start):.0f} ms after the spend")
    seeder.ledger.Deposit(
        lpb.DepositRequest(idempotency_id=uuid.uuid4().hex, account=f"partner:{partner}", amount_ucr=500 * CREDIT),
        timeout=T,
    )
    eventually(lambda: call(stack, kept.secret, CHEAP) == 200, timeout_s=10, what="resumed after a deposit")
    assert call(stack, revoked.secret, CHEAP) == 401  # revoked meanwhile: stays revoked
    assert call(stack, other.secret, CHEAP) == 403  # suspended for another reason: stays
    status = {
        k.id: (k.status, k.suspension, k.status_reason)
        for k in seeder.keys.ListKeys(kpb.ListKeysRequest(actor=actor, include_revoked=True), timeout=T).keys
    }
    assert status[other.key.id] == (kpb.KEY_STATUS_SUSPENDED, kpb.SUSPENSION_REASON_BY_PARTNER, "abuse review")
    assert status[kept.key.id] == (kpb.KEY_STATUS_ACTIVE, kpb.SUSPENSION_REASON_UNSPECIFIED, "")


def test_redelivered_and_duplicated_events_change_nothing(stack: Stack, seeder):
    key = auto_key(seeder, "dupes")
    assert call(stack, key.secret) == 200
    eventually(lambda: funded(seeder, key) == 2_501 * CREDIT, what="the auto top-up")
    before = seeder.balance_ucr(f"partner:{key.partner_id}")

    async def replay():
        nc = await nats.connect(stack.nats_url)
        js = nc.jetstream()
        below = events_pb2.UsageEvent(
            request_id="dup",
            key_id=key.key_id,
            partner_id=key.partner_id,
            model="gpt-4o",
            charged_ucr=1,
            outcome=events_pb2.USAGE_OUTCOME_OK,
        )
        for i in range(5):  # the same event, re-sent under new message ids
            await js.publish(
                natsx.usage_subject(key.partner_id, key.key_id),
                below.SerializeToString(),
                headers={"Nats-Msg-Id": f"dup-{i}"},
            )
        balance = events_pb2.BalanceChanged(account=f"partner:{key.partner_id}", partner_id=key.partner_id)
        for _ in range(3):
            await js.publish(natsx.balance_subject(key.partner_id), balance.SerializeToString())
        await js.publish(natsx.usage_subject(key.partner_id, key.key_id), b"\x00 not a protobuf \xff")
        await nc.drain()

    asyncio.run(replay())
    settle_a_moment()
    assert funded(seeder, key) == 2_501 * CREDIT
    assert seeder.balance_ucr(f"partner:{key.partner_id}") == before
    assert stack.procs["worker"].running
