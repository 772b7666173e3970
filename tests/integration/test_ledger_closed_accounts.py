"""Issue 10, finding 10: a revoke no longer strands in-flight money.

RefundKey closes the key's account to its partner: what is available goes back at
once; a hold still in flight, whatever ends it (a settlement below, at or above the
hold, a void, an expiry, a late settlement after the expiry), sends what it frees to
the partner in the same transaction. A closed account takes no new hold and no new
money. Retries of all of it are replays. Through the real gRPC services, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.ledger.v1 import ledger_pb2 as pb
from support.ledger import HAIKU, audit, books, code_of, running_ledger

FP = grpc.StatusCode.FAILED_PRECONDITION
FAR = 10**13  # "now" for an expiry sweep: every hold is past it
PROVIDER = pb.USAGE_SOURCE_PROVIDER


@pytest.fixture
async def ledger(db_url):
    async with running_ledger(db_url) as ledger:
        yield ledger


async def balance(ledger, account: str) -> pb.Balance:
    return await ledger.stub.GetBalance(pb.GetBalanceRequest(account=account))


async def revoked_key_with_holds(ledger) -> int:
    """Partner p1 (100 credits) funds key k with 10 credits (fee 1), two requests hold
    51,000 (r1) and 60,000 (r2), then the key is revoked. Returns the refund."""
    s = ledger.stub
    await s.Deposit(pb.DepositRequest(idempotency_id="dep", account="partner:p1", amount_ucr=100 * CREDIT))
    await s.FundKey(
        pb.FundKeyRequest(idempotency_id="fund", partner_id="p1", key_id="k", budget_ucr=10 * CREDIT, fee_rate="0.1")
    )
    await s.Reserve(
        pb.ReserveRequest(
            request_id="r1",
            account="key:k",
            model="m",
            price=HAIKU,
            max_input_tokens=10,
            max_output_tokens=100,
            ttl_seconds=60,
        )
    )
    await s.Reserve(
        pb.ReserveRequest(
            request_id="r2",
            account="key:k",
            model="m",
            price=HAIKU,
            max_input_tokens=100,
            max_output_tokens=100,
            ttl_seconds=3600,
        )
    )
    refund = await s.RefundKey(pb.RefundKeyRequest(idempotency_id="refund:k", partner_id="p1", key_id="k"))
    assert refund.amount_ucr == 10 * CREDIT - 51_000 - 60_000
    return refund.amount_ucr


@pytest.mark.parametrize(
    "ending, charged",
    [
        ("settle below the hold", 11_000),
        ("settle at the hold", 51_000),
        ("settle above the hold", 51_000),  # the rest of the cost is unpaid: the key has nothing else
        ("void", 0),
        ("expire", 0),
        ("expire, then a late settlement", 0),  # usage after the expiry finds nothing left to take
    ],
)
async def test_every_credit_of_a_revoked_key_ends_with_its_partner(ledger, ending, charged):
    s = ledger.stub
    refund = await revoked_key_with_holds(ledger)
    key = await balance(ledger, "key:k")
    assert (key.closed_to, key.refunded_ucr, key.posted_ucr, key.pending_ucr) == (
        "partner:p1",
        refund,
        111_000,
        111_000,
    )
    tokens = {"settle below the hold": 20, "settle at the hold": 100, "settle above the hold": 500}
    if ending.startswith("settle"):
        out = await s.Settle(
            pb.SettleRequest(request_id="r1", input_tokens=10, output_tokens=tokens[ending], usage_source=PROVIDER)
        )
        assert out.charged_ucr == charged
    elif ending == "void":
        await s.Void(pb.VoidRequest(request_id="r1", reason="client went away"))
    else:
        await s.ExpireReservations(pb.ExpireReservationsRequest(now_unix_ms=(await _r1_expiry(ledger)) + 1))
        if ending.endswith("late settlement"):
            late = await s.Settle(
                pb.SettleRequest(request_id="r1", input_tokens=10, output_tokens=20, usage_source=PROVIDER)
            )
            assert (late.charged_ucr, late.unpaid_ucr) == (0, 11_000)
    freed = 51_000 - charged
    key = await balance(ledger, "key:k")
    assert (key.posted_ucr, key.pending_ucr, key.available_ucr) == (60_000, 60_000, 0)  # only r2 is left
    assert key.refunded_ucr == refund + freed
    partner = await balance(ledger, "partner:p1")
    assert partner.posted_ucr == 100 * CREDIT - 11 * CREDIT + refund + freed
    # the last hold ends: nothing of the key is left anywhere but at its partner (and the fee)
    await s.Void(pb.VoidRequest(request_id="r2"))
    key = await balance(ledger, "key:k")
    assert (key.posted_ucr, key.pending_ucr, key.refunded_ucr) == (0, 0, 10 * CREDIT - charged)
    assert (await balance(ledger, "partner:p1")).posted_ucr == 100 * CREDIT - CREDIT - charged
    assert (await audit(ledger)).ok
    # every retry is a replay: nothing moves twice
    before = await books(ledger.engine)
    await s.Void(pb.VoidRequest(request_id="r2"))
    if ending.startswith("settle") or ending.endswith("late settlement"):
        assert (
            await s.Settle(
                pb.SettleRequest(
                    request_id="r1", input_tokens=10, output_tokens=tokens.get(ending, 20), usage_source=PROVIDER
                )
            )
        ).replayed
    elif ending == "void":
        assert (await s.Void(pb.VoidRequest(request_id="r1"))).replayed
    assert (await s.ExpireReservations(pb.ExpireReservationsRequest(now_unix_ms=FAR))).expired == 0
    again = await s.RefundKey(pb.RefundKeyRequest(idempotency_id="refund:k", partner_id="p1", key_id="k"))
    assert (again.replayed, again.amount_ucr) == (True, refund)
    assert await books(ledger.engine) == before


async def _r1_expiry(ledger) -> int:
    from sqlalchemy import text

    async with ledger.engine.connect() as conn:
        return int(
            (await conn.execute(text("SELECT expires_at_ms FROM reservations WHERE request_id = 'r1'"))).scalar_one()
        )


async def test_the_forwarded_release_is_a_refund_transfer_named_after_the_reservation(ledger):
    await revoked_key_with_holds(ledger)
    await ledger.stub.Settle(
        pb.SettleRequest(request_id="r1", input_tokens=10, output_tokens=20, usage_source=PROVIDER)
    )
    await ledger.stub.ExpireReservations(pb.ExpireReservationsRequest(now_unix_ms=FAR))
    page = await ledger.stub.ListTransfers(pb.ListTransfersRequest(account="key:k"))
    refunds = {
        t.idempotency_id: (t.kind, t.debit_account, t.credit_account, t.amount, t.request_id)
        for t in page.transfers
        if t.kind == "refund"
    }
    assert refunds == {
        "refund:k": ("refund", "key:k", "partner:p1", 10 * CREDIT - 111_000, ""),
        "refund:settle:r1": ("refund", "key:k", "partner:p1", 40_000, "r1"),
        "refund:expire:r2": ("refund", "key:k", "partner:p1", 60_000, "r2"),
    }


async def test_a_closed_account_takes_no_hold_and_no_money(ledger):
    s = ledger.stub
    await revoked_key_with_holds(ledger)
    await s.Deposit(pb.DepositRequest(idempotency_id="dep2", account="partner:p2", amount_ucr=10 * CREDIT))
    before = await books(ledger.engine)
    refusals = [
        s.Reserve(
            pb.ReserveRequest(request_id="r-after", account="key:k", model="m", price=HAIKU, max_output_tokens=1)
        ),
        s.FundKey(pb.FundKeyRequest(idempotency_id="topup", partner_id="p1", key_id="k", budget_ucr=CREDIT)),
        s.Transfer(
            pb.TransferRequest(
                idempotency_id="t", debit_account="partner:p2", credit_account="key:k", amount_ucr=CREDIT
            )
        ),
    ]
    for call in refusals:
        assert await code_of(call) == FP
    assert await books(ledger.engine) == before  # no hold, no stored refusal, no money
    # a retry is refused the same way; a reservation made before the close still replays
    assert (
        await code_of(
            s.Reserve(
                pb.ReserveRequest(request_id="r-after", account="key:k", model="m", price=HAIKU, max_output_tokens=1)
            )
        )
        == FP
    )
    replay = await s.Reserve(
        pb.ReserveRequest(
            request_id="r1", account="key:k", model="m", price=HAIKU, max_input_tokens=10, max_output_tokens=100
        )
    )
    assert replay.replayed and replay.held_ucr == 51_000


async def test_refund_with_a_new_id_or_another_partner(ledger):
    s = ledger.stub
    await revoked_key_with_holds(ledger)
    # closed to p1 already: a new id moves what is available then (nothing)
    later = await s.RefundKey(pb.RefundKeyRequest(idempotency_id="refund:k:again", partner_id="p1", key_id="k"))
    assert (later.amount_ucr, later.replayed) == (0, False)
    assert (
        await code_of(s.RefundKey(pb.RefundKeyRequest(idempotency_id="refund:k:p2", partner_id="p2", key_id="k")))
        == grpc.StatusCode.ABORTED
    )
    assert (await balance(ledger, "key:k")).closed_to == "partner:p1"


async def test_customer_billing_on_a_closed_key(ledger):
    """The key's rest goes to the partner; the customer's AI-credit hold is simply
    released back to the customer (its account is not closed)."""
    s = ledger.stub
    await s.Deposit(pb.DepositRequest(idempotency_id="dep", account="partner:p1", amount_ucr=100 * CREDIT))
    await s.FundKey(pb.FundKeyRequest(idempotency_id="fund", partner_id="p1", key_id="k", budget_ucr=10 * CREDIT))
    await s.GrantAiCredits(
        pb.GrantAiCreditsRequest(idempotency_id="g", customer_account="customer:c1", amount_uai=5 * CREDIT)
    )
    billing = pb.CustomerBilling(
        customer_account="customer:c1",
        revenue_account="partnerrev:p1",
        profit_multiplier="2",
        price_per_ai_credit_cents="1",
    )
    r = await s.Reserve(
        pb.ReserveRequest(
            request_id="rc",
            account="key:k",
            model="m",
            price=HAIKU,
            max_input_tokens=100,
            max_output_tokens=100,
            customer=billing,
        )
    )
    assert (r.held_ucr, r.customer_held_uai) == (60_000, 120_000)
    await s.RefundKey(pb.RefundKeyRequest(idempotency_id="refund:k", partner_id="p1", key_id="k"))
    out = await s.Settle(pb.SettleRequest(request_id="rc", input_tokens=10, output_tokens=20, usage_source=PROVIDER))
    assert (out.charged_ucr, out.customer_charged_uai) == (11_000, 22_000)
    key = await balance(ledger, "key:k")
    assert (key.posted_ucr, key.refunded_ucr) == (0, 10 * CREDIT - 11_000)
    customer = await balance(ledger, "customer:c1")
    assert (customer.posted_ucr, customer.pending_ucr, customer.closed_to) == (5 * CREDIT - 22_000, 0, "")
    assert (await audit(ledger)).ok


async def test_balances_show_closed_to_and_refunded_only_for_closed_accounts(ledger):
    refund = await revoked_key_with_holds(ledger)
    await ledger.stub.FundKey(
        pb.FundKeyRequest(idempotency_id="fund2", partner_id="p1", key_id="open", budget_ucr=CREDIT)
    )
    out = await ledger.stub.GetBalances(pb.GetBalancesRequest(accounts=["key:k", "key:open", "partner:p1"]))
    got = {b.account: (b.closed_to, b.refunded_ucr) for b in out.balances}
    assert got == {"key:k": ("partner:p1", refund), "key:open": ("", 0), "partner:p1": ("", 0)}
    none = await ledger.stub.GetBalances(pb.GetBalancesRequest(accounts=[]))  # no "IN ()" on PostgreSQL
    assert list(none.balances) == []


async def test_a_revoke_racing_with_reservations_strands_nothing(ledger):
    """Reserves and the refund race; whichever holds got in, once they end the key is
    empty and everything is back with the partner."""
    s = ledger.stub
    await s.Deposit(pb.DepositRequest(idempotency_id="dep", account="partner:p1", amount_ucr=100 * CREDIT))
    await s.FundKey(pb.FundKeyRequest(idempotency_id="fund", partner_id="p1", key_id="k", budget_ucr=CREDIT))

    async def reserve(i: int) -> str | None:
        try:
            await s.Reserve(
                pb.ReserveRequest(
                    request_id=f"race-{i}",
                    account="key:k",
                    model="m",
                    price=HAIKU,
                    max_input_tokens=10,
                    max_output_tokens=100,
                )
            )
            return f"race-{i}"
        except grpc.aio.AioRpcError as e:
            assert e.code() == FP
            return None

    results = await asyncio.gather(
        *(reserve(i) for i in range(15)),
        s.RefundKey(pb.RefundKeyRequest(idempotency_id="refund:k", partner_id="p1", key_id="k")),
        *(reserve(i) for i in range(15, 30)),
    )
    held = [r for r in results if isinstance(r, str)]
    for i, rid in enumerate(held):
        if i % 2:
            await s.Void(pb.VoidRequest(request_id=rid))
        else:
            await s.Settle(pb.SettleRequest(request_id=rid, input_tokens=10, output_tokens=10, usage_source=PROVIDER))
    charged = 6_000 * len(held[::2])
    key = await balance(ledger, "key:k")
    assert (key.posted_ucr, key.pending_ucr, key.refunded_ucr) == (0, 0, CREDIT - charged)
    assert (await balance(ledger, "partner:p1")).posted_ucr == 100 * CREDIT - charged
    assert (await audit(ledger)).ok
