"""Budget leases in the ledger (docs/leases.md), through the real gRPC services, on SQLite
and PostgreSQL: a lease is a hold like a reservation's, so spend plus leases never pass
the payer's money; settlements from a lease are exact and idempotent; releases, revokes
and expiries give every unused credit back once; the audit balances after each story.
"""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest

from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.ledger.v1 import ledger_pb2 as pb
from support.ledger import HAIKU, audit, code_of, running_ledger

FP = grpc.StatusCode.FAILED_PRECONDITION
ABORTED = grpc.StatusCode.ABORTED
FAR = 10**13  # "now" for an expiry sweep: every hold is past it
PROVIDER = pb.USAGE_SOURCE_PROVIDER
# HAIKU prices: 1 USD / 5 USD per 1M tokens -> 100 ucr per input token, 500 per output token
PAIR = 10 * 100 + 20 * 500  # 10 in + 20 out = 11,000 ucr


@pytest.fixture
async def ledger(db_url):
    async with running_ledger(db_url) as ledger:
        yield ledger


async def funded(ledger, budget_ucr: int, key: str = "k") -> None:
    s = ledger.stub
    await s.Deposit(pb.DepositRequest(idempotency_id=f"dep-{key}", account="partner:p1", amount_ucr=1000 * CREDIT))
    await s.FundKey(
        pb.FundKeyRequest(
            idempotency_id=f"fund-{key}", partner_id="p1", key_id=key, budget_ucr=budget_ucr, fee_rate="0"
        )
    )


async def available(ledger, account: str) -> int:
    return (await ledger.stub.GetBalance(pb.GetBalanceRequest(account=account))).available_ucr


def acquire(lease_id: str, want: int, least: int = 0, account: str = "key:k", **kw) -> pb.AcquireLeaseRequest:
    return pb.AcquireLeaseRequest(
        lease_id=lease_id, account=account, want_ucr=want, min_ucr=least, ttl_seconds=60, **kw
    )


def leased(lease_id: str, request_id: str, inp: int = 10, out: int = 20) -> pb.LeasedSettlement:
    return pb.LeasedSettlement(
        lease_id=lease_id,
        request_id=request_id,
        model="claude-haiku",
        price=HAIKU,
        input_tokens=inp,
        output_tokens=out,
        usage_source=PROVIDER,
    )


async def settle(ledger, *items: pb.LeasedSettlement) -> list[pb.SettleOutcome]:
    return list((await ledger.stub.SettleLeased(pb.SettleLeasedRequest(settlements=items))).outcomes)


async def test_a_lease_holds_a_fraction_and_its_settlements_post_exactly_once(ledger):
    await funded(ledger, 80 * CREDIT)
    got = await ledger.stub.AcquireLease(acquire("L1", want=50 * CREDIT, least=PAIR))
    assert got.changed_ucr == got.held_ucr == 10 * CREDIT  # at most 1/8 of the 80 available
    assert got.status == "open" and not got.replayed
    assert await available(ledger, "key:k") == 70 * CREDIT
    again = await ledger.stub.AcquireLease(acquire("L1", want=50 * CREDIT, least=PAIR))
    assert again.replayed and again.changed_ucr == 10 * CREDIT
    assert await available(ledger, "key:k") == 70 * CREDIT  # a replay holds nothing more

    first = await settle(ledger, leased("L1", "r1"), leased("L1", "r2", 0, 0), leased("L1", "r3"))
    assert [o.settled.charged_ucr for o in first] == [PAIR, 0, PAIR]
    replay = await settle(ledger, leased("L1", "r1"), leased("L1", "r3"))
    assert all(o.settled.replayed for o in replay) and [o.settled.charged_ucr for o in replay] == [PAIR, PAIR]
    key = await ledger.stub.GetBalance(pb.GetBalanceRequest(account="key:k"))
    assert key.posted_ucr == 80 * CREDIT - 2 * PAIR
    assert key.pending_ucr == 10 * CREDIT - 2 * PAIR  # the lease holds what it did not spend
    usage = await ledger.stub.GetBalance(pb.GetBalanceRequest(account="platform:usage"))
    assert usage.posted_ucr == 2 * PAIR

    freed = await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="L1:r", lease_id="L1"))
    assert freed.changed_ucr == 10 * CREDIT - 2 * PAIR and freed.status == "closed" and freed.held_ucr == 0
    assert (await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="L1:r", lease_id="L1"))).replayed
    assert await available(ledger, "key:k") == 80 * CREDIT - 2 * PAIR
    assert (await audit(ledger)).ok


async def test_the_minimum_stays_grantable_to_the_last_credit_and_no_further(ledger):
    await funded(ledger, 3 * PAIR + 5)
    leases = [await ledger.stub.AcquireLease(acquire(f"L{i}", want=10 * PAIR, least=PAIR)) for i in range(3)]
    assert sum(g.changed_ucr for g in leases) == 3 * PAIR  # each got the minimum: 1/8 is less
    assert await code_of(ledger.stub.AcquireLease(acquire("L3", want=PAIR, least=PAIR))) == FP
    assert await code_of(ledger.stub.AcquireLease(acquire("L3", want=PAIR, least=PAIR))) == FP  # the refusal stands
    outcomes = await settle(ledger, *(leased(f"L{i}", f"r{i}") for i in range(3)))
    assert [o.settled.charged_ucr for o in outcomes] == [PAIR] * 3
    assert await available(ledger, "key:k") == 5
    assert (await audit(ledger)).ok


async def test_extend_adds_by_the_same_rule_and_refuses_a_closed_lease(ledger):
    await funded(ledger, 80 * CREDIT)
    await ledger.stub.AcquireLease(acquire("L1", want=CREDIT))
    grown = await ledger.stub.ExtendLease(
        pb.ExtendLeaseRequest(extension_id="x1", lease_id="L1", want_ucr=2 * CREDIT, ttl_seconds=60)
    )
    assert grown.changed_ucr == 2 * CREDIT and grown.held_ucr == 3 * CREDIT
    replay = await ledger.stub.ExtendLease(
        pb.ExtendLeaseRequest(extension_id="x1", lease_id="L1", want_ucr=2 * CREDIT, ttl_seconds=60)
    )
    assert replay.replayed and replay.changed_ucr == 2 * CREDIT and replay.held_ucr == 3 * CREDIT
    renew = await ledger.stub.ExtendLease(pb.ExtendLeaseRequest(extension_id="x2", lease_id="L1", ttl_seconds=600))
    assert renew.changed_ucr == 0 and renew.expires_at_unix_ms > grown.expires_at_unix_ms
    keep = await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="r1", lease_id="L1", keep_ucr=CREDIT))
    assert keep.changed_ucr == 2 * CREDIT and keep.held_ucr == CREDIT and keep.status == "open"
    await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="r2", lease_id="L1"))
    closed = pb.ExtendLeaseRequest(extension_id="x3", lease_id="L1", want_ucr=CREDIT, ttl_seconds=60)
    assert await code_of(ledger.stub.ExtendLease(closed)) == FP
    assert await available(ledger, "key:k") == 80 * CREDIT
    assert (await audit(ledger)).ok


async def test_a_lease_id_is_not_a_request(ledger):
    await funded(ledger, 10 * CREDIT)
    await ledger.stub.AcquireLease(acquire("L1", want=CREDIT))
    settle_one = pb.SettleRequest(request_id="L1", input_tokens=1, output_tokens=1, usage_source=PROVIDER)
    assert await code_of(ledger.stub.Settle(settle_one)) == ABORTED
    assert await code_of(ledger.stub.Void(pb.VoidRequest(request_id="L1"))) == ABORTED
    batch = await ledger.stub.SettleBatch(pb.SettleBatchRequest(settlements=[settle_one]))
    assert batch.outcomes[0].status_code == ABORTED.value[0]
    reserve = pb.ReserveRequest(
        request_id="L1", account="key:k", model="m", price=HAIKU, max_input_tokens=1, max_output_tokens=1
    )
    assert await code_of(ledger.stub.Reserve(reserve)) == ABORTED
    unknown = await settle(ledger, leased("nope", "r1"))
    assert unknown[0].status_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert (await audit(ledger)).ok


async def test_a_revoked_key_gets_every_credit_back_once_its_leases_end(ledger):
    await funded(ledger, 16 * CREDIT)
    partner_before = await available(ledger, "partner:p1")
    await ledger.stub.AcquireLease(acquire("A", want=CREDIT))
    await ledger.stub.AcquireLease(acquire("B", want=CREDIT))
    refund = await ledger.stub.RefundKey(pb.RefundKeyRequest(idempotency_id="revoke", partner_id="p1", key_id="k"))
    assert refund.amount_ucr == 14 * CREDIT  # what is not held goes back at once
    assert await code_of(ledger.stub.AcquireLease(acquire("C", want=CREDIT))) == FP  # a closed key takes no lease
    extend = pb.ExtendLeaseRequest(extension_id="Ax", lease_id="A", want_ucr=CREDIT, ttl_seconds=60)
    assert await code_of(ledger.stub.ExtendLease(extend)) == FP
    # a request in flight on A still settles from A's hold; then A is released, B expires
    assert (await settle(ledger, leased("A", "r1")))[0].settled.charged_ucr == PAIR
    await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="Ar", lease_id="A"))
    await ledger.stub.ExpireReservations(pb.ExpireReservationsRequest(now_unix_ms=FAR))
    assert await available(ledger, "partner:p1") == partner_before + 16 * CREDIT - PAIR
    key = await ledger.stub.GetBalance(pb.GetBalanceRequest(account="key:k"))
    assert key.available_ucr == 0 and key.pending_ucr == 0
    # retries change nothing
    await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="Ar", lease_id="A"))
    await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="Br", lease_id="B"))
    assert await available(ledger, "partner:p1") == partner_before + 16 * CREDIT - PAIR
    assert (await audit(ledger)).ok


async def test_a_settlement_after_its_lease_expired_is_paid_from_what_is_left(ledger):
    await funded(ledger, 8 * PAIR)
    await ledger.stub.AcquireLease(acquire("L1", want=PAIR, least=PAIR))
    expired = await ledger.stub.ExpireReservations(pb.ExpireReservationsRequest(now_unix_ms=FAR))
    assert expired.expired == 1 and expired.released_ucr == PAIR
    late = await settle(ledger, leased("L1", "r1"))
    assert late[0].settled.charged_ucr == PAIR and late[0].settled.unpaid_ucr == 0
    assert await available(ledger, "key:k") == 7 * PAIR
    assert (await audit(ledger)).ok


async def test_a_customer_key_lease_holds_and_charges_ai_credits(ledger):
    s = ledger.stub
    await funded(ledger, 10 * CREDIT)
    await s.GrantAiCredits(
        pb.GrantAiCreditsRequest(idempotency_id="g", customer_account="customer:c1", amount_uai=100 * 10**6)
    )
    billing = pb.CustomerBilling(
        customer_account="customer:c1",
        revenue_account="partnerrev:p1",
        profit_multiplier="2",
        price_per_ai_credit_cents="1",
    )
    got = await s.AcquireLease(
        pb.AcquireLeaseRequest(
            lease_id="L1",
            account="key:k",
            customer=billing,
            want_ucr=CREDIT,
            min_ucr=PAIR,
            want_uai=10 * 10**6,
            min_uai=10**6,
            ttl_seconds=60,
        )
    )
    assert got.changed_uai == 10 * 10**6  # 1/8 of 100 AI credits is more: want wins
    out = (await settle(ledger, leased("L1", "r1")))[0].settled
    # $0.00011 provider cost x2 = $0.00022 = 0.022 AI credits at 1 cent each
    assert out.charged_ucr == PAIR and out.customer_charged_uai == 22_000
    freed = await s.ReleaseLease(pb.ReleaseLeaseRequest(release_id="r", lease_id="L1"))
    assert freed.changed_uai == 10 * 10**6 - 22_000
    cust = await s.GetBalance(pb.GetBalanceRequest(account="customer:c1"))
    assert cust.available_ucr == 100 * 10**6 - 22_000 and cust.pending_ucr == 0
    assert (await audit(ledger)).ok


async def test_three_workers_leasing_one_key_never_spend_past_its_budget(ledger):
    """Three workers each lease, spend, extend and release at random against one key that
    can afford exactly N requests; whatever the interleaving, exactly N are paid, none is
    unpaid, and every lease ends released."""
    n = 40
    await funded(ledger, n * PAIR + PAIR - 1)
    rng = random.Random(7)
    paid: list[int] = []

    async def worker(w: int, requests: int) -> None:
        lease, seq, free = "", 0, 0
        for i in range(requests):
            if not lease or free < PAIR:
                if lease:
                    await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id=f"{lease}:r", lease_id=lease))
                seq += 1
                lease = f"w{w}:{seq}"
                try:
                    got = await ledger.stub.AcquireLease(acquire(lease, want=rng.randint(1, 6) * PAIR, least=PAIR))
                except grpc.aio.AioRpcError as e:
                    assert e.code() == FP
                    return  # nothing left to lease (while the others hold theirs)
                free = got.changed_ucr
            free -= PAIR  # the request's bound, taken locally
            out = (await settle(ledger, leased(lease, f"w{w}-{i}")))[0].settled
            assert out.unpaid_ucr == 0
            paid.append(out.charged_ucr)
            await asyncio.sleep(rng.random() * 0.003)
        if lease:
            await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id=f"{lease}:r", lease_id=lease))

    await asyncio.gather(*(worker(w, 30) for w in range(3)))
    await worker(3, 10 * n)  # then one alone takes what the others left, to the last request
    assert len(paid) == n and sum(paid) == n * PAIR
    key = await ledger.stub.GetBalance(pb.GetBalanceRequest(account="key:k"))
    assert key.pending_ucr == 0 and key.available_ucr == PAIR - 1
    assert (await audit(ledger)).ok


async def test_an_extension_or_release_id_used_again_elsewhere_is_a_conflict(ledger):
    """Found by the stateful model: the id of a release was answered as a replay when it
    came again as an extension of the same lease, or as a release of another lease of the
    same key — nothing done, and the caller told it was."""
    await funded(ledger, 80 * CREDIT)
    await ledger.stub.AcquireLease(acquire("A", want=CREDIT))
    await ledger.stub.AcquireLease(acquire("B", want=CREDIT))
    await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="r", lease_id="A", keep_ucr=1))
    await ledger.stub.ExtendLease(pb.ExtendLeaseRequest(extension_id="x", lease_id="A", ttl_seconds=60))
    before = await available(ledger, "key:k")
    again = [
        ledger.stub.ExtendLease(pb.ExtendLeaseRequest(extension_id="r", lease_id="A", want_ucr=CREDIT, ttl_seconds=60)),
        ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="r", lease_id="B")),
        ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="x", lease_id="A")),
        ledger.stub.ExtendLease(pb.ExtendLeaseRequest(extension_id="x", lease_id="B", ttl_seconds=60)),
    ]
    assert [await code_of(call) for call in again] == [ABORTED] * 4
    assert await available(ledger, "key:k") == before  # and nothing moved
    # the ids still replay what they named
    assert (await ledger.stub.ReleaseLease(pb.ReleaseLeaseRequest(release_id="r", lease_id="A", keep_ucr=1))).replayed
    assert (
        await ledger.stub.ExtendLease(pb.ExtendLeaseRequest(extension_id="x", lease_id="A", ttl_seconds=60))
    ).replayed
    assert (await audit(ledger)).ok
