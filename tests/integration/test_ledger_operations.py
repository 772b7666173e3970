"""Key funding, refunds, deposits, AI credits, expiry, statements and quotes, on SQLite
and PostgreSQL, through the real gRPC servicer in-process."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

import cg_ledger
from cg_ledger.book import Book
from cg_ledger.reservations import Reservations
from cg_ledger.servicer import ERROR_CODES, LedgerServicer
from cg_ledger.txrunner import runner_for
from cglib.db import make_engine, migrate
from cglib.grpc_client import insecure_channel
from cglib.grpc_server import create_server
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.ledger.v1 import ledger_pb2 as pb
from creditgate.ledger.v1 import ledger_pb2_grpc

MIGRATIONS = Path(cg_ledger.__file__).parent / "migrations"
HAIKU = pb.Price(input_usd_per_mtok="1.00", output_usd_per_mtok="5.00", price_book_version="v1")
SERVICE = pb.DESCRIPTOR.services_by_name["LedgerService"].full_name


@pytest.fixture
async def ledger(db_url):
    engine = make_engine(db_url)
    await migrate(engine, MIGRATIONS)
    await engine.dispose()
    db = runner_for(db_url)
    reservations = Reservations(db)
    servicer = LedgerServicer(Book(db), reservations)
    server, port, _ = create_server(
        "127.0.0.1:0",
        lambda s: ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, s),
        [SERVICE],
        ERROR_CODES,
    )
    await server.start()
    channel = insecure_channel(f"127.0.0.1:{port}")
    stub = ledger_pb2_grpc.LedgerServiceStub(channel)
    stub.reservations = reservations
    yield stub
    await channel.close()
    await server.stop(0)
    db.close()


async def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value.code()


async def balance(stub, account: str) -> pb.Balance:
    return await stub.GetBalance(pb.GetBalanceRequest(account=account))


async def funded_partner(stub, credits: int = 1_000, pid: str = "p1") -> str:
    await stub.Deposit(
        pb.DepositRequest(idempotency_id=f"dep-{pid}", account=f"partner:{pid}", amount_ucr=credits * CREDIT)
    )
    return pid


async def test_fund_key_moves_budget_and_fee_atomically(ledger):
    await funded_partner(ledger, 1_000)
    quote = await ledger.QuoteKeyFunding(pb.QuoteKeyFundingRequest(budget_ucr=100 * CREDIT, fee_rate="0.05"))
    assert (quote.budget_ucr, quote.fee_ucr, quote.total_ucr) == (100 * CREDIT, 5 * CREDIT, 105 * CREDIT)
    out = await ledger.FundKey(
        pb.FundKeyRequest(
            idempotency_id="create:k1", partner_id="p1", key_id="k1", budget_ucr=100 * CREDIT, fee_rate="0.05"
        )
    )
    assert (out.total_ucr, out.replayed) == (105 * CREDIT, False)
    assert (await balance(ledger, "partner:p1")).posted_ucr == 895 * CREDIT
    assert (await balance(ledger, "key:k1")).posted_ucr == 100 * CREDIT
    assert (await balance(ledger, "platform:fees")).posted_ucr == 5 * CREDIT
    again = await ledger.FundKey(
        pb.FundKeyRequest(
            idempotency_id="create:k1", partner_id="p1", key_id="k1", budget_ucr=100 * CREDIT, fee_rate="0.05"
        )
    )
    assert again.replayed and (await balance(ledger, "partner:p1")).posted_ucr == 895 * CREDIT
    # too much: nothing partial happens (neither budget nor fee moves)
    assert (
        await code_of(
            ledger.FundKey(
                pb.FundKeyRequest(
                    idempotency_id="topup:k1:1", partner_id="p1", key_id="k1", budget_ucr=890 * CREDIT, fee_rate="0.05"
                )
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert (await balance(ledger, "partner:p1")).posted_ucr == 895 * CREDIT
    assert (await balance(ledger, "platform:fees")).posted_ucr == 5 * CREDIT


async def test_a_failed_idempotency_id_stays_failed_after_a_top_up(ledger):
    await funded_partner(ledger, 10)
    req = pb.FundKeyRequest(idempotency_id="create:k2", partner_id="p1", key_id="k2", budget_ucr=50 * CREDIT)
    assert await code_of(ledger.FundKey(req)) == grpc.StatusCode.FAILED_PRECONDITION
    await ledger.Deposit(pb.DepositRequest(idempotency_id="dep-more", account="partner:p1", amount_ucr=100 * CREDIT))
    assert await code_of(ledger.FundKey(req)) == grpc.StatusCode.FAILED_PRECONDITION
    assert (await balance(ledger, "partner:p1")).posted_ucr == 110 * CREDIT
    # the same for a refused reservation
    await ledger.FundKey(pb.FundKeyRequest(idempotency_id="create:k3", partner_id="p1", key_id="k3", budget_ucr=CREDIT))
    big = pb.ReserveRequest(request_id="r-big", account="key:k3", model="m", price=HAIKU, max_output_tokens=10_000)
    assert await code_of(ledger.Reserve(big)) == grpc.StatusCode.FAILED_PRECONDITION
    await ledger.FundKey(
        pb.FundKeyRequest(idempotency_id="topup:k3", partner_id="p1", key_id="k3", budget_ucr=50 * CREDIT)
    )
    assert await code_of(ledger.Reserve(big)) == grpc.StatusCode.FAILED_PRECONDITION
    assert (await balance(ledger, "key:k3")).pending_ucr == 0
    # and a replay with other fields is refused, not silently replayed
    assert (
        await code_of(ledger.Deposit(pb.DepositRequest(idempotency_id="dep-more", account="partner:p1", amount_ucr=1)))
        == grpc.StatusCode.ABORTED
    )


async def test_refund_returns_unused_budget_now_and_in_flight_holds_when_they_settle(ledger):
    await funded_partner(ledger, 100)
    await ledger.FundKey(
        pb.FundKeyRequest(idempotency_id="c", partner_id="p1", key_id="k", budget_ucr=10 * CREDIT, fee_rate="0.10")
    )
    await ledger.Reserve(
        pb.ReserveRequest(
            request_id="r1", account="key:k", model="m", price=HAIKU, max_input_tokens=10, max_output_tokens=100
        )
    )  # holds 51,000
    refund = await ledger.RefundKey(pb.RefundKeyRequest(idempotency_id="revoke:k", partner_id="p1", key_id="k"))
    assert refund.amount_ucr == 10 * CREDIT - 51_000
    again = await ledger.RefundKey(pb.RefundKeyRequest(idempotency_id="revoke:k", partner_id="p1", key_id="k"))
    assert again.replayed and again.amount_ucr == refund.amount_ucr
    s = await ledger.Settle(
        pb.SettleRequest(request_id="r1", input_tokens=10, output_tokens=20, usage_source=pb.USAGE_SOURCE_PROVIDER)
    )
    assert s.charged_ucr == 11_000
    # the fee is not refunded; the rest of the in-flight hold went back with the settlement
    assert (await balance(ledger, "partner:p1")).posted_ucr == 100 * CREDIT - 1 * CREDIT - 11_000
    key = await balance(ledger, "key:k")
    assert (key.posted_ucr, key.closed_to, key.refunded_ucr) == (0, "partner:p1", 10 * CREDIT - 11_000)
    # nothing is left for a later refund (closed to the same partner: moves what is there)
    late = await ledger.RefundKey(pb.RefundKeyRequest(idempotency_id="revoke:k:final", partner_id="p1", key_id="k"))
    assert late.amount_ucr == 0


async def test_key_deposit_hold_and_release(ledger):
    await funded_partner(ledger, 1_500)
    await ledger.HoldKeyDeposit(
        pb.KeyDepositRequest(idempotency_id="hold:c1", partner_id="p1", key_id="c1", amount_ucr=1_000 * CREDIT)
    )
    assert (await balance(ledger, "partner:p1")).available_ucr == 500 * CREDIT
    assert (
        await code_of(
            ledger.HoldKeyDeposit(
                pb.KeyDepositRequest(idempotency_id="hold:c2", partner_id="p1", key_id="c2", amount_ucr=1_000 * CREDIT)
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    rel = await ledger.ReleaseKeyDeposit(
        pb.KeyDepositRequest(idempotency_id="release:c1", partner_id="p1", key_id="c1")
    )
    assert rel.amount_ucr == 1_000 * CREDIT
    assert (await balance(ledger, "partner:p1")).available_ucr == 1_500 * CREDIT


async def test_customer_billing_holds_and_charges_ai_credits(ledger):
    await funded_partner(ledger, 100)
    await ledger.FundKey(pb.FundKeyRequest(idempotency_id="c", partner_id="p1", key_id="k", budget_ucr=10 * CREDIT))
    await ledger.GrantAiCredits(
        pb.GrantAiCreditsRequest(idempotency_id="g", customer_account="customer:c1", amount_uai=5 * CREDIT)
    )
    billing = pb.CustomerBilling(
        customer_account="customer:c1",
        revenue_account="partnerrev:p1",
        profit_multiplier="2",
        price_per_ai_credit_cents="1",
    )
    # provider hold: 100*100 + 100*500 = 60,000 ucr = $0.0006; customer: x2 = $0.0012 = 0.12 AI credits
    r = await ledger.Reserve(
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
    assert (await balance(ledger, "customer:c1")).available_ucr == 5 * CREDIT - 120_000
    s = await ledger.Settle(
        pb.SettleRequest(request_id="rc", input_tokens=10, output_tokens=20, usage_source=pb.USAGE_SOURCE_PROVIDER)
    )
    assert (s.charged_ucr, s.customer_charged_uai) == (11_000, 22_000)
    c = await balance(ledger, "customer:c1")
    assert (c.posted_ucr, c.pending_ucr) == (5 * CREDIT - 22_000, 0)
    assert (await balance(ledger, "partnerrev:p1")).posted_ucr == 22_000
    # a customer without enough AI credits is refused even though the key budget could pay
    await ledger.GrantAiCredits(
        pb.GrantAiCreditsRequest(idempotency_id="g2", customer_account="customer:poor", amount_uai=1)
    )
    poor = pb.CustomerBilling(
        customer_account="customer:poor",
        revenue_account="partnerrev:p1",
        profit_multiplier="2",
        price_per_ai_credit_cents="1",
    )
    assert (
        await code_of(
            ledger.Reserve(
                pb.ReserveRequest(
                    request_id="rp", account="key:k", model="m", price=HAIKU, max_output_tokens=10, customer=poor
                )
            )
        )
        == grpc.StatusCode.FAILED_PRECONDITION
    )
    assert (await balance(ledger, "key:k")).pending_ucr == 0


async def test_expired_hold_is_released_and_a_late_settlement_posts_once(ledger):
    await funded_partner(ledger, 100)
    await ledger.FundKey(pb.FundKeyRequest(idempotency_id="c", partner_id="p1", key_id="k", budget_ucr=CREDIT))
    await ledger.Reserve(
        pb.ReserveRequest(
            request_id="old", account="key:k", model="m", price=HAIKU, max_output_tokens=100, ttl_seconds=1
        )
    )
    far = 10**13
    out = await ledger.ExpireReservations(pb.ExpireReservationsRequest(now_unix_ms=far))
    assert (out.expired, out.released_ucr) == (1, 50_000)
    assert (await ledger.ExpireReservations(pb.ExpireReservationsRequest(now_unix_ms=far))).expired == 0
    assert (await balance(ledger, "key:k")).pending_ucr == 0
    settle = pb.SettleRequest(request_id="old", input_tokens=0, output_tokens=10, usage_source=pb.USAGE_SOURCE_PROVIDER)
    s = await ledger.Settle(settle)
    assert (s.held_ucr, s.charged_ucr, s.replayed) == (0, 5_000, False)
    assert (await ledger.Settle(settle)).replayed
    assert (await balance(ledger, "key:k")).posted_ucr == CREDIT - 5_000
    assert await code_of(ledger.Void(pb.VoidRequest(request_id="old"))) == grpc.StatusCode.ABORTED


async def test_statement_pages_newest_first(ledger):
    await funded_partner(ledger, 100)
    for i in range(5):
        await ledger.Transfer(
            pb.TransferRequest(
                idempotency_id=f"t{i}", debit_account="partner:p1", credit_account="key:k", amount_ucr=i + 1
            )
        )
    first = await ledger.ListTransfers(pb.ListTransfersRequest(account="key:k", page_size=3))
    assert [t.amount for t in first.transfers] == [5, 4, 3] and first.next_page_token
    second = await ledger.ListTransfers(
        pb.ListTransfersRequest(account="key:k", page_size=3, page_token=first.next_page_token)
    )
    assert [t.amount for t in second.transfers] == [2, 1] and not second.next_page_token
    assert await code_of(ledger.ListTransfers(pb.ListTransfersRequest(account="key:none"))) == grpc.StatusCode.NOT_FOUND


async def test_quote_and_billing_preview(ledger):
    billing = pb.CustomerBilling(profit_multiplier="1.5", price_per_ai_credit_cents="2", floor_usd_per_mtok="0.50")
    mini = pb.Price(input_usd_per_mtok="0.15", output_usd_per_mtok="0.60")
    q = await ledger.Quote(pb.QuoteRequest(price=mini, input_tokens=1000, output_tokens=500, billing=billing))
    assert (q.provider_cost_ucr, q.customer_price_ucr, q.customer_price_uai, q.partner_margin_ucr) == (
        45_000,
        75_000,
        37_500,
        30_000,
    )
    preview = await ledger.BillingPreview(
        pb.BillingPreviewRequest(
            models=[
                pb.ModelPrice(model="gpt-4o-mini", price=mini),
                pb.ModelPrice(model="claude-haiku-4-5", price=HAIKU),
            ],
            sample_input_tokens=1_000_000,
            sample_output_tokens=1_000_000,
            billing=pb.CustomerBilling(profit_multiplier="2", price_per_ai_credit_cents="1"),
        )
    )
    rows = {r.model: r.quote for r in preview.rows}
    assert rows["gpt-4o-mini"].provider_cost_ucr == 75 * CREDIT  # $0.75
    assert rows["gpt-4o-mini"].partner_margin_ucr == 75 * CREDIT
    assert rows["claude-haiku-4-5"].customer_price_uai == 1_200 * CREDIT  # $12 at 1 cent per AI credit


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.Deposit(pb.DepositRequest(idempotency_id="x", account="partner:p1", amount_ucr=0)),
        lambda s: s.Deposit(pb.DepositRequest(idempotency_id="x", account="partner:p1", amount_ucr=-5)),
        lambda s: s.Deposit(pb.DepositRequest(idempotency_id="", account="partner:p1", amount_ucr=5)),
        lambda s: s.Deposit(pb.DepositRequest(idempotency_id="x", account="partner:" + "p" * 200, amount_ucr=5)),
        lambda s: s.FundKey(
            pb.FundKeyRequest(idempotency_id="x", partner_id="p1", key_id="k", budget_ucr=5, fee_rate="2")
        ),
        lambda s: s.Reserve(pb.ReserveRequest(request_id="x", account="key:k", price=HAIKU, max_input_tokens=-1)),
        lambda s: s.Reserve(pb.ReserveRequest(request_id="x", account="key:k", price=HAIKU, max_output_tokens=2**62)),
        lambda s: s.Reserve(pb.ReserveRequest(request_id="x", account="key:k", price=pb.Price(input_usd_per_mtok="x"))),
        lambda s: s.Reserve(
            pb.ReserveRequest(
                request_id="x",
                account="key:k",
                price=HAIKU,
                customer=pb.CustomerBilling(
                    customer_account="customer:c",
                    revenue_account="partnerrev:p",
                    profit_multiplier="0",
                    price_per_ai_credit_cents="1",
                ),
            )
        ),
        lambda s: s.Settle(pb.SettleRequest(request_id="x", input_tokens=1)),  # no usage source
        lambda s: s.GrantAiCredits(
            pb.GrantAiCreditsRequest(idempotency_id="x", customer_account="partner:p1", amount_uai=5)
        ),
    ],
)
async def test_bad_input_is_invalid_argument_and_writes_nothing(ledger, call):
    await funded_partner(ledger, 10)
    before = await ledger.ListTransfers(pb.ListTransfersRequest(account="partner:p1"))
    assert await code_of(call(ledger)) == grpc.StatusCode.INVALID_ARGUMENT
    after = await ledger.ListTransfers(pb.ListTransfersRequest(account="partner:p1"))
    assert after == before
    assert (await balance(ledger, "partner:p1")).posted_ucr == 10 * CREDIT


async def test_unknown_accounts_are_not_found(ledger):
    nf = grpc.StatusCode.NOT_FOUND
    assert await code_of(ledger.GetBalance(pb.GetBalanceRequest(account="key:nope"))) == nf
    assert await code_of(ledger.Reserve(pb.ReserveRequest(request_id="r", account="key:nope", price=HAIKU))) == nf
    assert await code_of(ledger.Settle(pb.SettleRequest(request_id="r", usage_source=pb.USAGE_SOURCE_PROVIDER))) == nf
    assert (
        await code_of(
            ledger.FundKey(pb.FundKeyRequest(idempotency_id="f", partner_id="ghost", key_id="k", budget_ucr=5))
        )
        == nf
    )
    assert (
        await code_of(
            ledger.Transfer(
                pb.TransferRequest(
                    idempotency_id="t", debit_account="partner:ghost", credit_account="key:k", amount_ucr=5
                )
            )
        )
        == nf
    )


async def test_settle_batch_settles_each_on_its_own(ledger):
    await funded_partner(ledger, 100)
    for rid in ("b1", "b2"):
        await ledger.Reserve(
            pb.ReserveRequest(
                request_id=rid,
                account="partner:p1",
                model="haiku",
                price=HAIKU,
                max_input_tokens=1000,
                max_output_tokens=1000,
            )
        )
    usage = dict(input_tokens=100, output_tokens=10, usage_source=pb.USAGE_SOURCE_PROVIDER)
    out = await ledger.SettleBatch(
        pb.SettleBatchRequest(
            settlements=[
                pb.SettleRequest(request_id="b1", **usage),
                pb.SettleRequest(request_id="nope", **usage),
                pb.SettleRequest(request_id="b1", **usage),
                pb.SettleRequest(request_id="b2", input_tokens=1, output_tokens=1),  # no usage source
            ]
        )
    )
    codes = [o.status_code for o in out.outcomes]
    assert codes == [0, grpc.StatusCode.NOT_FOUND.value[0], 0, grpc.StatusCode.INVALID_ARGUMENT.value[0]]
    first, replay = out.outcomes[0].settled, out.outcomes[2].settled
    assert first.charged_ucr == replay.charged_ucr == 150 * 100  # 100 x $1 + 10 x $5 per Mtok = 150 µ$
    assert [first.replayed, replay.replayed] == [False, True]
    assert "usage_source" in out.outcomes[3].error
    # b2 failed alone: still pending, and settles later
    later = await ledger.SettleBatch(pb.SettleBatchRequest(settlements=[pb.SettleRequest(request_id="b2", **usage)]))
    assert later.outcomes[0].status_code == 0 and not later.outcomes[0].settled.replayed
    assert (await balance(ledger, "partner:p1")).posted_ucr == 100 * CREDIT - 2 * 150 * 100
    too_many = pb.SettleBatchRequest(settlements=[pb.SettleRequest(request_id=f"x{i}", **usage) for i in range(1001)])
    assert await code_of(ledger.SettleBatch(too_many)) == grpc.StatusCode.INVALID_ARGUMENT
