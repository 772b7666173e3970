"""Auto top-up compares the threshold with the *settled* remaining budget: a hold in
flight never triggers one, and the settlement that crosses the threshold triggers
exactly one, however often the worker looks. Deterministic: the test makes the hold
and the settlement itself (straight in the ledger) and tells the worker when to look
(usage events for the key), over the whole stack on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid

import nats

from cg_devstack import Stack
from cg_devstack.seed import Seeder
from cglib import natsx
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.events.v1 import events_pb2
from creditgate.keys.v1 import keys_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2 as lpb
from helpers import eventually

T = 10
ONE_UCR_PER_TOKEN = lpb.Price(input_usd_per_mtok="0.01", output_usd_per_mtok="0.01")


def nudge_worker(stack: Stack, partner_id: str, key_id: str, times: int = 3) -> None:
    """Usage events for the key: each makes the worker re-read it and apply its rules."""

    async def publish():
        nc = await nats.connect(stack.nats_url)
        js = nc.jetstream()
        for _ in range(times):
            event = events_pb2.UsageEvent(
                request_id=uuid.uuid4().hex,
                key_id=key_id,
                partner_id=partner_id,
                model="gpt-4o-mini",
                outcome=events_pb2.USAGE_OUTCOME_OK,
            )
            await js.publish(natsx.usage_subject(partner_id, key_id), event.SerializeToString())
        await nc.drain()

    asyncio.run(publish())


def reserve(seeder: Seeder, account: str, amount_ucr: int) -> str:
    rid = uuid.uuid4().hex
    seeder.ledger.Reserve(
        lpb.ReserveRequest(
            request_id=rid, account=account, model="m", price=ONE_UCR_PER_TOKEN, max_input_tokens=amount_ucr
        ),
        timeout=T,
    )
    return rid


def settle(seeder: Seeder, rid: str, amount_ucr: int) -> None:
    seeder.ledger.Settle(
        lpb.SettleRequest(request_id=rid, input_tokens=amount_ucr, usage_source=lpb.USAGE_SOURCE_PROVIDER), timeout=T
    )


def test_holds_never_trigger_a_top_up_and_a_settled_crossing_triggers_one(stack: Stack, seeder: Seeder):
    partner = seeder.partner("settled-threshold", credits=10_000, tier="enterprise")
    key = seeder.funded_key(
        partner,
        600,
        ["gpt-4o-mini"],
        name="auto",
        auto_topup=pb.AutoTopUp(enabled=True, threshold_usd="5", amount_usd="20"),
    )
    actor = pb.Actor(partner_id=partner)

    def detail() -> pb.KeyDetail:
        return seeder.keys.GetKey(pb.GetKeyRequest(actor=actor, key_id=key.key_id), timeout=T)

    settle(seeder, reserve(seeder, key.account, 99 * CREDIT), 99 * CREDIT)  # 501 credits settled
    in_flight = reserve(seeder, key.account, 400 * CREDIT)  # a large hold: 101 available
    d = detail()
    assert (d.settled_remaining_ucr, d.reserved_ucr, d.remaining_ucr) == (501 * CREDIT, 400 * CREDIT, 101 * CREDIT)
    partner_before = seeder.balance_ucr(f"partner:{partner}")

    nudge_worker(stack, partner, key.key_id)
    time.sleep(2.5)  # the worker's chance to do what it must not
    assert detail().key.funded_ucr == 600 * CREDIT, "a hold in flight triggered a top-up"

    settle(seeder, in_flight, 2 * CREDIT)  # settled: 499 credits, below the $5 threshold
    nudge_worker(stack, partner, key.key_id)
    eventually(lambda: detail().key.funded_ucr == 2_600 * CREDIT, what="the top-up after the settled crossing")
    nudge_worker(stack, partner, key.key_id, times=5)
    time.sleep(2.5)
    d = detail()
    assert d.key.funded_ucr == 2_600 * CREDIT and d.settled_remaining_ucr == 2_499 * CREDIT
    # $20 = 2,000 credits plus the enterprise tier's 2% fee, taken once
    assert seeder.balance_ucr(f"partner:{partner}") == partner_before - 2_040 * CREDIT
