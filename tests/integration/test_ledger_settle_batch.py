"""A batch of settlements (``settlebatch``) leaves the books exactly as the same
settlements one by one would: the same counters, the same transfers (ids, kinds,
amounts, memos), each one failing alone. Two identical worlds in one database, ``a``
settled with ``Settle`` and ``b`` with one ``SettleBatch``, compared account by account
(the usage sink's shards summed, as every read of ``platform:usage`` does); then the
audit. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re

import grpc
import psycopg
import pytest
from sqlalchemy import text

from cg_ledger.accounts import USAGE_SHARDS
from cg_ledger.reservations import SettleOutcome
from cg_ledger.rows import Rows
from cg_ledger.settlebatch import Settlement, _settle_plain
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.ledger.v1 import ledger_pb2 as pb
from support.ledger import HAIKU, audit, running_ledger, seed_transfers

PROVIDER = pb.USAGE_SOURCE_PROVIDER
BILLING = dict(profit_multiplier="1.5", price_per_ai_credit_cents="1", floor_usd_per_mtok="0")


@pytest.fixture
async def ledger(db_url):
    async with running_ledger(db_url) as ledger:
        yield ledger


async def world(ledger, w: str) -> list[pb.SettleRequest]:
    """Partner, keys (k3 revoked with a hold in flight), a billed customer, reservations;
    the settlements to make, in order."""
    s = ledger.stub
    await s.Deposit(pb.DepositRequest(idempotency_id=f"{w}-dep", account=f"partner:{w}", amount_ucr=1_000 * CREDIT))
    for key in ("k1", "k2", "k3"):
        await s.FundKey(
            pb.FundKeyRequest(idempotency_id=f"{w}-fund-{key}", partner_id=w, key_id=f"{w}-{key}", budget_ucr=CREDIT)
        )
    await s.GrantAiCredits(
        pb.GrantAiCreditsRequest(idempotency_id=f"{w}-grant", customer_account=f"customer:{w}", amount_uai=10**9)
    )

    async def reserve(rid: str, key: str, billed: bool = False) -> None:
        customer = pb.CustomerBilling(customer_account=f"customer:{w}", revenue_account=f"partnerrev:{w}", **BILLING)
        await s.Reserve(
            pb.ReserveRequest(
                request_id=f"{w}-{rid}",
                account=f"key:{w}-{key}",
                model="haiku",
                price=HAIKU,
                max_input_tokens=100,
                max_output_tokens=100,
                **({"customer": customer} if billed else {}),
            )
        )

    for rid, key, billed in [
        ("r1", "k1", False),
        ("r2", "k1", False),
        ("r3", "k1", False),
        ("r4", "k2", True),
        ("r5", "k2", True),
        ("r6", "k3", False),
        ("r7", "k1", False),
    ]:
        await reserve(rid, key, billed)
    await s.Void(pb.VoidRequest(request_id=f"{w}-r7"))
    await s.RefundKey(pb.RefundKeyRequest(idempotency_id=f"{w}-revoke", partner_id=w, key_id=f"{w}-k3"))

    def settle(rid: str, tin: int, tout: int) -> pb.SettleRequest:
        return pb.SettleRequest(request_id=f"{w}-{rid}", input_tokens=tin, output_tokens=tout, usage_source=PROVIDER)

    return [
        settle("r1", 10, 20),  # plain
        settle("r2", 100, 100),  # the whole hold
        settle("r3", 100, 400),  # above the hold: from what is available
        settle("r4", 50, 50),  # billed to the customer
        settle("r5", 100, 300),  # billed, above both holds
        settle("r6", 5, 5),  # on a revoked key: the rest goes on to the partner
        settle("r7", 1, 1),  # voided: Conflict
        settle("r1", 10, 20),  # a second time: a replay
        settle("r0", 1, 1),  # no such reservation
    ]


async def snapshot(ledger, w: str) -> tuple[dict, set]:
    """World ``w``'s accounts (counters) and transfers, its name taken out, shards summed."""

    def plain(name: str | None) -> str:
        return re.sub(r"platform:usage:\d\d", "platform:usage", (name or "").replace(w, "W"))

    async with ledger.engine.connect() as conn:
        counters: dict[str, list[int]] = {}
        rows = await conn.execute(
            text("SELECT id, debits_pending, debits_posted, credits_posted FROM accounts WHERE id LIKE :w"),
            {"w": f"%{w}%"},
        )
        for row in rows:
            counters[plain(row[0])] = list(row[1:])
        transfers = {
            (plain(t[0]), t[1], t[2], plain(t[3]), plain(t[4]), t[5], t[6].replace(w, "W"))
            for t in await conn.execute(
                text(
                    "SELECT idempotency_id, kind, outcome, debit_account, credit_account, amount_ucr, memo"
                    " FROM transfers WHERE idempotency_id LIKE :w OR request_id LIKE :w"
                ),
                {"w": f"%{w}%"},
            )
        }
    return counters, transfers


async def test_a_batch_books_exactly_what_settling_one_by_one_books(ledger):
    singles = await world(ledger, "aa")
    batch = await world(ledger, "bb")
    one_by_one = []
    for s in singles:
        try:
            one_by_one.append((0, await ledger.stub.Settle(s)))
        except grpc.aio.AioRpcError as e:
            one_by_one.append((e.code().value[0], None))
    out = await ledger.stub.SettleBatch(pb.SettleBatchRequest(settlements=batch))
    assert [o.status_code for o in out.outcomes] == [code for code, _ in one_by_one]
    for o, (code, single) in zip(out.outcomes, one_by_one, strict=True):
        if not code:
            mine = pb.SettleResponse()
            mine.CopyFrom(o.settled)
            mine.request_id = single.request_id
            assert mine == single
    assert await snapshot(ledger, "aa") == await snapshot(ledger, "bb")
    # replayed as a batch: nothing moves, every outcome the same (replayed now)
    again = await ledger.stub.SettleBatch(pb.SettleBatchRequest(settlements=batch))
    assert [o.status_code for o in again.outcomes] == [o.status_code for o in out.outcomes]
    assert all(o.settled.replayed for o in again.outcomes if not o.status_code)
    assert await snapshot(ledger, "aa") == await snapshot(ledger, "bb")
    report = await audit(ledger)
    assert report.ok, report.discrepancies


async def test_many_settlements_of_one_hot_key_and_many_keys_add_up(ledger, caplog):
    s = ledger.stub
    await s.Deposit(pb.DepositRequest(idempotency_id="dep", account="partner:p", amount_ucr=1_000 * CREDIT))
    keys = ["hot"] * 150 + [f"k{i}" for i in range(150)]
    for key in set(keys):
        await s.FundKey(pb.FundKeyRequest(idempotency_id=f"f-{key}", partner_id="p", key_id=key, budget_ucr=CREDIT))
    for i, key in enumerate(keys):
        await s.Reserve(
            pb.ReserveRequest(
                request_id=f"r{i}",
                account=f"key:{key}",
                model="m",
                price=HAIKU,
                max_input_tokens=10,
                max_output_tokens=10,
            )
        )
    settlements = [
        pb.SettleRequest(request_id=f"r{i}", input_tokens=3, output_tokens=4, usage_source=PROVIDER)
        for i in range(len(keys))
    ]
    out = await s.SettleBatch(pb.SettleBatchRequest(settlements=settlements))
    assert all(o.status_code == 0 and not o.settled.replayed for o in out.outcomes)
    # in one batched transaction, not one by one after a failed batch
    assert not [r for r in caplog.records if "settling one by one" in r.getMessage()]
    charge = 3 * 100 + 4 * 500
    hot = await s.GetBalance(pb.GetBalanceRequest(account="key:hot"))
    assert (hot.posted_ucr, hot.pending_ucr) == (CREDIT - 150 * charge, 0)
    usage = await s.GetBalance(pb.GetBalanceRequest(account="platform:usage"))
    assert usage.posted_ucr == len(keys) * charge
    shards = await s.GetBalances(pb.GetBalancesRequest(accounts=list(USAGE_SHARDS)))
    assert len(shards.balances) > 1 and sum(b.posted_ucr for b in shards.balances) == usage.posted_ucr
    report = await audit(ledger)
    assert report.ok, report.discrepancies


async def test_the_usage_row_of_a_book_older_than_the_shards_still_counts(ledger):
    """A book from before the shards has provider cost in the single ``platform:usage``
    row: every read of the sink adds it to the shards', and the audit still balances."""
    await seed_transfers(ledger.engine, ("old-dep", "deposit", "external:credits", "partner:p", 10 * CREDIT))
    await seed_transfers(ledger.engine, ("old-usage", "post", "partner:p", "platform:usage", 700))
    s = ledger.stub
    await s.Reserve(
        pb.ReserveRequest(request_id="new", account="partner:p", model="m", price=HAIKU, max_output_tokens=10)
    )
    await s.Settle(pb.SettleRequest(request_id="new", output_tokens=2, usage_source=PROVIDER))
    usage = await s.GetBalance(pb.GetBalanceRequest(account="platform:usage"))
    assert usage.posted_ucr == 700 + 2 * 500
    statement = await s.ListTransfers(pb.ListTransfersRequest(account="platform:usage"))
    assert [t.idempotency_id for t in statement.transfers] == ["settle:new", "reserve:new", "old-usage"]
    report = await audit(ledger)
    assert report.ok, report.discrepancies


@pytest.fixture
def pg_url(pg_server):
    with pg_server.database() as dsn:
        yield dsn


async def test_a_batch_beside_an_uncommitted_one_that_created_the_usage_shards_settles_in_its_batch(pg_url):
    """PostgreSQL, a fresh book, two batches at once: the first creates the usage shards and
    has not committed when the second credits them. The second may not take the shards for
    existing (it would credit rows it cannot see yet, fail, and fall back to settling one by
    one): it creates them too, waits for the first to commit, and settles in its batch.
    The two transactions are driven by hand to make that interleaving certain."""
    async with running_ledger(pg_url) as ledger:
        s = ledger.stub
        await s.Deposit(pb.DepositRequest(idempotency_id="dep", account="partner:p", amount_ucr=10 * CREDIT))
        for key in ("a", "b"):
            await s.FundKey(pb.FundKeyRequest(idempotency_id=f"f-{key}", partner_id="p", key_id=key, budget_ucr=CREDIT))
            for i in range(40):
                await s.Reserve(
                    pb.ReserveRequest(
                        request_id=f"{key}{i}",
                        account=f"key:{key}",
                        model="m",
                        price=HAIKU,
                        max_input_tokens=10,
                        max_output_tokens=10,
                    )
                )

        def batch(key: str) -> dict[int, Settlement]:
            return {i: Settlement(f"{key}{i}", 3, 4, "provider") for i in range(40)}

        conninfo = ledger.db.conninfo  # type: ignore[attr-defined]
        with psycopg.connect(conninfo) as first, psycopg.connect(conninfo) as second:
            done_first, shards = _settle_plain(Rows(first, postgres=True), ledger.reservations, batch("a"))
            assert len(shards) == len(USAGE_SHARDS)  # 40 request ids: every shard, new to this book
            later = asyncio.create_task(
                asyncio.to_thread(_settle_plain, Rows(second, postgres=True), ledger.reservations, batch("b"))
            )
            await asyncio.sleep(0.3)  # the second now waits on the first's new shard rows
            first.commit()
            done_second, _ = await later
            second.commit()
        assert len(done_first) == len(done_second) == 40
        assert all(isinstance(o, SettleOutcome) for o in [*done_first.values(), *done_second.values()])
        usage = await s.GetBalance(pb.GetBalanceRequest(account="platform:usage"))
        assert usage.posted_ucr == 80 * (3 * 100 + 4 * 500)
        report = await audit(ledger)
        assert report.ok, report.discrepancies
