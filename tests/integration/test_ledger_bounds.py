"""Issue 10, finding 1 (and the 3 MB memo of finding 5): every amount and counter is
bounded and every stored string has a maximum, on SQLite and PostgreSQL.

- One amount is at most 10^15 (a billion credits): above it OUT_OF_RANGE, nothing
  written; zero or negative stays INVALID_ARGUMENT (malformed).
- No account counter leaves int64: the SQL that adds to one refuses, the transaction
  rolls back, OUT_OF_RANGE. Behind it, the columns themselves cannot hold a non-integer
  (a CHECK on SQLite, BIGINT on PostgreSQL), and a database range error is OUT_OF_RANGE
  too, never INTERNAL / UNKNOWN.
- A string longer than its maximum is INVALID_ARGUMENT naming the field, never cut.
"""

from __future__ import annotations

import re
import time

import grpc
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from cg_ledger.accounts import usage_shard
from cg_ledger.errors import OutOfRange
from cg_ledger.limits import MAX_AMOUNT
from cglib.db import make_engine, migrate, sync_url
from cglib.money import UCR_PER_CREDIT as CREDIT
from creditgate.ledger.v1 import ledger_pb2 as pb
from support.ledger import (
    HAIKU,
    INT64_MAX,
    MIGRATIONS,
    audit,
    books,
    churn,
    code_of,
    refusal,
    running_ledger,
    seed_transfers,
    sql,
)

OOR = grpc.StatusCode.OUT_OF_RANGE
BAD = grpc.StatusCode.INVALID_ARGUMENT
PRICEY = pb.Price(input_usd_per_mtok="1000", output_usd_per_mtok="1000", price_book_version="v1")  # 10^5 ucr/token


@pytest.fixture
async def ledger(db_url):
    async with running_ledger(db_url) as ledger:
        yield ledger


async def funded(ledger, partner: str = "p1", credits: int = 1_000, key: str = "") -> None:
    await ledger.stub.Deposit(
        pb.DepositRequest(idempotency_id=f"dep-{partner}", account=f"partner:{partner}", amount_ucr=credits * CREDIT)
    )
    if key:
        await ledger.stub.FundKey(
            pb.FundKeyRequest(
                idempotency_id=f"fund-{key}", partner_id=partner, key_id=key, budget_ucr=credits * CREDIT // 2
            )
        )


async def test_the_probers_deposit_of_int64_max_is_out_of_range_and_writes_nothing(ledger):
    before = await books(ledger.engine)
    code, details = await refusal(
        ledger.stub.Deposit(pb.DepositRequest(idempotency_id="probe", account="partner:p1", amount_ucr=INT64_MAX))
    )
    assert code == OOR and "amount_ucr" in details
    assert await books(ledger.engine) == before  # not even the accounts were created
    assert (
        await code_of(ledger.stub.GetBalance(pb.GetBalanceRequest(account="partner:p1"))) == grpc.StatusCode.NOT_FOUND
    )


async def test_one_amount_at_the_bound_twice_to_one_account_is_fine(ledger):
    for i in range(2):
        await ledger.stub.Deposit(
            pb.DepositRequest(idempotency_id=f"big-{i}", account="partner:p1", amount_ucr=MAX_AMOUNT)
        )
    b = await ledger.stub.GetBalance(pb.GetBalanceRequest(account="partner:p1"))
    assert (b.posted_ucr, b.available_ucr) == (2 * MAX_AMOUNT, 2 * MAX_AMOUNT)
    # a whole bound into a key, the fee on top of it would not fit: the budget must leave room
    await ledger.stub.FundKey(pb.FundKeyRequest(idempotency_id="f", partner_id="p1", key_id="k", budget_ucr=MAX_AMOUNT))
    assert (
        await code_of(
            ledger.stub.FundKey(
                pb.FundKeyRequest(
                    idempotency_id="f2", partner_id="p1", key_id="k", budget_ucr=MAX_AMOUNT, fee_rate="0.01"
                )
            )
        )
        == OOR
    )
    assert (await audit(ledger)).ok


ABOVE_THE_BOUND = [
    (
        "deposit",
        lambda s: s.Deposit(pb.DepositRequest(idempotency_id="x", account="partner:p1", amount_ucr=MAX_AMOUNT + 1)),
    ),
    (
        "grant",
        lambda s: s.GrantAiCredits(
            pb.GrantAiCreditsRequest(idempotency_id="x", customer_account="customer:c", amount_uai=2**62)
        ),
    ),
    (
        "transfer",
        lambda s: s.Transfer(
            pb.TransferRequest(
                idempotency_id="x", debit_account="partner:p1", credit_account="key:k", amount_ucr=MAX_AMOUNT + 1
            )
        ),
    ),
    (
        "fund: budget",
        lambda s: s.FundKey(
            pb.FundKeyRequest(idempotency_id="x", partner_id="p1", key_id="k", budget_ucr=2**63 - 9, fee_rate="0.5")
        ),
    ),
    (
        "fund: budget + fee",
        lambda s: s.FundKey(
            pb.FundKeyRequest(idempotency_id="x", partner_id="p1", key_id="k", budget_ucr=MAX_AMOUNT, fee_rate="0.05")
        ),
    ),
    ("quote funding", lambda s: s.QuoteKeyFunding(pb.QuoteKeyFundingRequest(budget_ucr=MAX_AMOUNT, fee_rate="0.5"))),
    (
        "key deposit",
        lambda s: s.HoldKeyDeposit(
            pb.KeyDepositRequest(idempotency_id="x", partner_id="p1", key_id="c", amount_ucr=INT64_MAX)
        ),
    ),
    (
        "hold from tokens",
        lambda s: s.Reserve(
            pb.ReserveRequest(request_id="x", account="partner:p1", price=PRICEY, max_output_tokens=10**10 + 1)
        ),
    ),
    (
        "customer hold",
        lambda s: s.Reserve(
            pb.ReserveRequest(
                request_id="x",
                account="partner:p1",
                price=HAIKU,
                max_output_tokens=1000,
                customer=pb.CustomerBilling(
                    customer_account="customer:c",
                    revenue_account="partnerrev:p1",
                    profit_multiplier="1000000000000",
                    price_per_ai_credit_cents="0.0001",
                ),
            )
        ),
    ),
    (
        "a price beyond arithmetic",
        lambda s: s.Reserve(
            pb.ReserveRequest(
                request_id="x",
                account="partner:p1",
                price=pb.Price(input_usd_per_mtok="1e999980", output_usd_per_mtok="0"),
                max_input_tokens=10**12,
            )
        ),
    ),
    ("quote", lambda s: s.Quote(pb.QuoteRequest(price=PRICEY, input_tokens=10**12))),
]


async def test_an_amount_above_the_bound_is_out_of_range_and_writes_nothing(ledger):
    await funded(ledger)
    before = await books(ledger.engine)
    for name, call in ABOVE_THE_BOUND:
        start = time.monotonic()
        assert await code_of(call(ledger.stub)) == OOR, name
        assert time.monotonic() - start < 2, name  # refused at once, whatever the digits
        assert await books(ledger.engine) == before, name
    assert (await audit(ledger)).ok


async def test_a_hold_of_exactly_the_bound_is_allowed(ledger):
    await ledger.stub.Deposit(pb.DepositRequest(idempotency_id="d", account="partner:p1", amount_ucr=MAX_AMOUNT))
    r = await ledger.stub.Reserve(
        pb.ReserveRequest(request_id="r", account="partner:p1", price=PRICEY, max_output_tokens=10**10)
    )
    assert (r.held_ucr, r.available_ucr) == (MAX_AMOUNT, 0)
    # a settlement priced above the bound is refused and the hold stays as it was
    assert (
        await code_of(
            ledger.stub.Settle(
                pb.SettleRequest(request_id="r", output_tokens=10**10 + 1, usage_source=pb.USAGE_SOURCE_PROVIDER)
            )
        )
        == OOR
    )
    assert (await ledger.stub.GetBalance(pb.GetBalanceRequest(account="partner:p1"))).pending_ucr == MAX_AMOUNT
    s = await ledger.stub.Settle(
        pb.SettleRequest(request_id="r", output_tokens=10**10, usage_source=pb.USAGE_SOURCE_PROVIDER)
    )
    assert s.charged_ucr == MAX_AMOUNT


async def test_external_debits_at_the_int64_edge_refuse_the_next_deposit(ledger):
    # years of deposits: the outside world has given up all but 100 ucr of int64
    await seed_transfers(ledger.engine, ("old", "deposit", "external:credits", "partner:whale", INT64_MAX - 100))
    before = await books(ledger.engine)
    code, details = await refusal(
        ledger.stub.Deposit(pb.DepositRequest(idempotency_id="one-too-many", account="partner:p2", amount_ucr=101))
    )
    assert code == OOR and "external:credits" in details
    assert await books(ledger.engine) == before  # partner:p2 was not even created
    await ledger.stub.Deposit(pb.DepositRequest(idempotency_id="exactly", account="partner:p2", amount_ucr=100))
    ext = await ledger.stub.GetBalance(pb.GetBalanceRequest(account="external:credits"))
    assert ext.posted_ucr == -INT64_MAX  # at the edge, still an integer, still readable
    assert (await audit(ledger)).ok


async def test_a_credit_past_int64_is_refused_and_the_debit_before_it_rolled_back(ledger):
    await funded(ledger, "p2", credits=10)
    await churn(ledger.engine, "partner:p1", "partner:p3", INT64_MAX - 100)  # p1 can take 100 more ucr of credits
    before = await books(ledger.engine)
    code, details = await refusal(
        ledger.stub.Transfer(
            pb.TransferRequest(
                idempotency_id="t", debit_account="partner:p2", credit_account="partner:p1", amount_ucr=101
            )
        )
    )
    assert code == OOR and "partner:p1" in details
    assert await books(ledger.engine) == before  # p2's debit, made first, is gone with the rest
    # not stored as a refusal either: the same id goes through once it fits
    await ledger.stub.Transfer(
        pb.TransferRequest(idempotency_id="t", debit_account="partner:p2", credit_account="partner:p1", amount_ucr=100)
    )
    accounts, _, _ = await books(ledger.engine)
    assert accounts["partner:p1"][3] == INT64_MAX
    assert (await audit(ledger)).ok


async def test_a_settlement_whose_sink_would_pass_int64_is_refused_and_rolled_back(ledger):
    await funded(ledger, "p1", key="k")
    await churn(ledger.engine, "partner:big", usage_shard("r"), INT64_MAX - 10)
    await ledger.stub.Reserve(
        pb.ReserveRequest(request_id="r", account="key:k", model="m", price=HAIKU, max_output_tokens=100)
    )
    before = await books(ledger.engine)
    settle = pb.SettleRequest(request_id="r", output_tokens=1, usage_source=pb.USAGE_SOURCE_PROVIDER)  # 500 ucr
    assert await code_of(ledger.stub.Settle(settle)) == OOR
    batch = await ledger.stub.SettleBatch(pb.SettleBatchRequest(settlements=[settle]))
    assert batch.outcomes[0].status_code == OOR.value[0]
    assert await books(ledger.engine) == before  # the hold is still there, nothing posted
    # the hold can still be voided: releasing never adds to a counter
    await ledger.stub.Void(pb.VoidRequest(request_id="r"))
    assert (await audit(ledger)).ok


async def test_a_database_range_error_is_out_of_range_never_internal(ledger):
    """The safety net behind the guards: what the database refuses (an overflow on
    PostgreSQL, a CHECK on either) reaches the caller as OutOfRange, in both layers."""
    await funded(ledger)
    before = await books(ledger.engine)

    def overflow(db):  # what a missing guard would do
        db.query(f"UPDATE accounts SET credits_posted = credits_posted + {INT64_MAX} WHERE id = :id", id="partner:p1")

    with pytest.raises(OutOfRange):
        await ledger.book._once("net-1", "deposit", "external:credits", "partner:p1", 1, overflow)
    with pytest.raises(OutOfRange):  # the hot path: a release of more than is held breaks a CHECK
        await ledger.db.run(lambda db: db.release("partner:p1", 5, 0))
    assert await books(ledger.engine) == before


async def test_the_columns_cannot_hold_a_non_integer(ledger, db_url):
    await funded(ledger)
    await ledger.stub.Reserve(pb.ReserveRequest(request_id="r", account="partner:p1", price=HAIKU, max_output_tokens=1))
    if db_url.startswith("sqlite"):  # SQLite stores what it is given, unless a CHECK says no
        for table, column in (
            ("accounts", "credits_posted"),
            ("transfers", "amount_ucr"),
            ("reservations", "held_ucr"),
        ):
            with pytest.raises(IntegrityError, match="integer"):
                await sql(ledger.engine, f"UPDATE {table} SET {column} = 1.5")
            with pytest.raises(IntegrityError, match="integer"):
                await sql(ledger.engine, f"UPDATE {table} SET {column} = {column} + {INT64_MAX}")
        return
    async with ledger.engine.connect() as conn:
        types = dict(
            (
                await conn.execute(
                    text(
                        "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                        " WHERE table_name IN ('accounts', 'transfers', 'reservations')"
                    )
                )
            ).all()
        )
    for column in (
        "accounts.debits_pending",
        "accounts.debits_posted",
        "accounts.credits_pending",
        "accounts.credits_posted",
        "transfers.amount_ucr",
        "transfers.id",
        "reservations.held_ucr",
        "reservations.customer_held_uai",
        "reservations.charged_ucr",
        "reservations.unpaid_ucr",
    ):
        assert types[column] == "bigint", column


# -- strings -------------------------------------------------------------------------

LONG_DECIMAL = "1." + "0" * 39  # 41 characters, a valid number


TOO_LONG = [
    (
        "memo",
        lambda s: s.Deposit(pb.DepositRequest(idempotency_id="x", account="partner:p1", amount_ucr=1, memo="m" * 201)),
    ),
    (
        "memo",
        lambda s: s.Deposit(pb.DepositRequest(idempotency_id="x", account="partner:p1", amount_ucr=1, memo="nul\x00")),
    ),
    (
        "memo",
        lambda s: s.Transfer(
            pb.TransferRequest(
                idempotency_id="x", debit_account="partner:p1", credit_account="key:k", amount_ucr=1, memo="m" * 100_000
            )
        ),
    ),
    (
        "memo",
        lambda s: s.GrantAiCredits(
            pb.GrantAiCreditsRequest(idempotency_id="x", customer_account="customer:c", amount_uai=1, memo="m" * 201)
        ),
    ),
    (
        "idempotency_id",
        lambda s: s.Deposit(pb.DepositRequest(idempotency_id="i" * 121, account="partner:p1", amount_ucr=1)),
    ),
    (
        "account",
        lambda s: s.Deposit(pb.DepositRequest(idempotency_id="x", account="partner:" + "p" * 80, amount_ucr=1)),
    ),
    (
        "key_id",
        lambda s: s.FundKey(pb.FundKeyRequest(idempotency_id="x", partner_id="p1", key_id="k" * 65, budget_ucr=1)),
    ),
    (
        "fee_rate",
        lambda s: s.FundKey(
            pb.FundKeyRequest(idempotency_id="x", partner_id="p1", key_id="k", budget_ucr=1, fee_rate="0." + "0" * 39)
        ),
    ),
    (
        "model",
        lambda s: s.Reserve(pb.ReserveRequest(request_id="x", account="partner:p1", price=HAIKU, model="m" * 121)),
    ),
    (
        "price.price_book_version",
        lambda s: s.Reserve(
            pb.ReserveRequest(
                request_id="x",
                account="partner:p1",
                price=pb.Price(input_usd_per_mtok="1", output_usd_per_mtok="1", price_book_version="v" * 61),
            )
        ),
    ),
    (
        "price.input_usd_per_mtok",
        lambda s: s.Reserve(
            pb.ReserveRequest(
                request_id="x",
                account="partner:p1",
                price=pb.Price(input_usd_per_mtok="1." + "0" * 100_000, output_usd_per_mtok="1"),
            )
        ),
    ),
    (
        "customer.profit_multiplier",
        lambda s: s.Reserve(
            pb.ReserveRequest(
                request_id="x",
                account="partner:p1",
                price=HAIKU,
                customer=pb.CustomerBilling(
                    customer_account="customer:c",
                    revenue_account="partnerrev:p1",
                    profit_multiplier=LONG_DECIMAL,
                    price_per_ai_credit_cents="1",
                ),
            )
        ),
    ),
    (
        "rate_limit.key",
        lambda s: s.Reserve(
            pb.ReserveRequest(
                request_id="x", account="partner:p1", price=HAIKU, rate_limit=pb.RateLimit(key="k\x00", rpm=5)
            )
        ),
    ),
    ("reason", lambda s: s.Void(pb.VoidRequest(request_id="r-open", reason="r" * 201))),
]


async def test_a_string_over_its_maximum_is_refused_naming_the_field(ledger):
    await funded(ledger)
    await ledger.stub.Reserve(
        pb.ReserveRequest(request_id="r-open", account="partner:p1", price=HAIKU, max_output_tokens=1)
    )
    before = await books(ledger.engine)
    for field, call in TOO_LONG:
        code, details = await refusal(call(ledger.stub))
        assert (code, details.split(":")[0]) == (BAD, field), details
        assert await books(ledger.engine) == before, field


async def test_a_caller_cannot_take_an_id_the_ledger_derives(ledger):
    """A deposit under ``settle:r`` would have blocked r's settlement for good (the
    unique id taken), and ``f:fee`` the fee of a funding with id ``f``."""
    await funded(ledger, key="k")
    await ledger.stub.Reserve(pb.ReserveRequest(request_id="r", account="key:k", price=HAIKU, max_output_tokens=1))
    for taken in ("settle:r", "reserve:r2", "void:r", "expire:r", "refund:settle:r", "refund:void:r", "f:fee"):
        code, details = await refusal(
            ledger.stub.Deposit(pb.DepositRequest(idempotency_id=taken, account="partner:p1", amount_ucr=1))
        )
        assert (code, details.split(":")[0]) == (BAD, "idempotency_id"), taken
    await ledger.stub.Settle(pb.SettleRequest(request_id="r", output_tokens=1, usage_source=pb.USAGE_SOURCE_PROVIDER))
    await ledger.stub.FundKey(
        pb.FundKeyRequest(idempotency_id="f", partner_id="p1", key_id="k", budget_ucr=100, fee_rate="0.5")
    )
    # the keys service's own ids stay the caller's
    await ledger.stub.RefundKey(pb.RefundKeyRequest(idempotency_id="refund:k", partner_id="p1", key_id="k"))


async def test_strings_at_their_maximum_are_stored_whole(ledger):
    await ledger.stub.GrantAiCredits(
        pb.GrantAiCreditsRequest(idempotency_id="g", customer_account="customer:c", amount_uai=CREDIT)
    )
    await ledger.stub.Deposit(
        pb.DepositRequest(idempotency_id="i" * 120, account="partner:p1", amount_ucr=CREDIT, memo="é" * 200)
    )
    await ledger.stub.Reserve(
        pb.ReserveRequest(
            request_id="r" * 120,
            account="partner:p1",
            model="m" * 120,
            max_output_tokens=1,
            price=pb.Price(
                input_usd_per_mtok="0." + "0" * 37 + "1", output_usd_per_mtok="1", price_book_version="v" * 60
            ),
            customer=pb.CustomerBilling(
                customer_account="customer:c",
                revenue_account="partnerrev:p1",
                profit_multiplier="1",
                price_per_ai_credit_cents="1",
            ),
        )
    )
    page = await ledger.stub.ListTransfers(pb.ListTransfersRequest(account="partner:p1"))
    assert {t.memo for t in page.transfers} == {"é" * 200, "m" * 120}
    # the ids the ledger derives from a 120-character one fit too (reserve:<id>:customer)
    async with ledger.engine.connect() as conn:
        ids = (await conn.execute(text("SELECT idempotency_id FROM transfers"))).scalars().all()
    assert f"reserve:{'r' * 120}:customer" in ids


async def test_the_probers_3_mb_decimal_is_refused_not_stored(ledger):
    """A prober stored 3 MB in the ledger: not in a memo (cut to 200 then), but in the
    price strings of a reservation, kept as given. (Over gRPC such a request is now
    larger than a service accepts; the ledger refuses it on its own as well.)"""
    await funded(ledger)
    with pytest.raises(Exception) as e:
        await ledger.reservations.reserve("r", "partner:p1", "m", "1." + "0" * 3_000_000, "1", "v", 1, 1)
    assert "price.input_usd_per_mtok" in str(e.value)
    _, transfers, reservations = await books(ledger.engine)
    assert reservations == 0


# -- the migration -------------------------------------------------------------------


def _upgrade_to(db_url: str, revision: str) -> None:
    engine = create_engine(sync_url(db_url))
    try:
        with engine.begin() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    finally:
        engine.dispose()


async def test_the_migration_closes_keys_refunded_before_it(db_url):
    _upgrade_to(db_url, "0003")
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO accounts (id, kind, unit, debits_must_not_exceed_credits, debits_pending, debits_posted,"
                    " credits_pending, credits_posted, created_at_ms) VALUES"
                    " ('key:old', 'key', 'credits', true, 0, 10, 0, 10, 0),"
                    " ('key:live', 'key', 'credits', true, 0, 0, 0, 10, 0)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO transfers (idempotency_id, kind, outcome, debit_account, credit_account, amount_ucr,"
                    " memo, created_at_ms) VALUES ('refund:old', 'refund', 'ok', 'key:old', 'partner:p', 10, '', 0)"
                )
            )
        await migrate(engine, MIGRATIONS)
        async with engine.connect() as conn:
            closed = dict((await conn.execute(text("SELECT id, closed_to FROM accounts"))).all())
        assert closed == {"key:old": "partner:p", "key:live": ""}
    finally:
        await engine.dispose()


async def test_the_migration_refuses_a_book_whose_counters_became_floats(tmp_path):
    """The prober's database: a counter SQLite turned into a REAL. The upgrade stops and
    names it instead of rounding it silently."""
    db_url = f"sqlite:///{tmp_path / 'broken.db'}"
    _upgrade_to(db_url, "0003")
    engine = make_engine(db_url)
    try:
        await sql(
            engine,
            "INSERT INTO accounts (id, kind, unit, debits_must_not_exceed_credits, debits_pending,"
            " debits_posted, credits_pending, credits_posted, created_at_ms)"
            f" VALUES ('partner:p', 'partner', 'credits', 1, 0, 0, 0, {INT64_MAX}, 0)",
        )
        await sql(engine, "UPDATE accounts SET credits_posted = credits_posted + 1")  # SQLite: now a REAL
        with pytest.raises(RuntimeError, match=r"accounts\.credits_posted of 'partner:p'"):
            await migrate(engine, MIGRATIONS)
    finally:
        await engine.dispose()


async def test_every_operation_runs_the_one_guarded_sql():
    """One definition of the money rules: ``rows`` executes ``sql``'s texts, and a batch
    of settlements their ``executemany`` forms, cut from the same texts."""
    from cg_ledger import rows
    from cg_ledger import sql as ledger_sql

    assert set(rows._PSYCOPG) == set(ledger_sql.STATEMENTS)
    assert all(ledger_sql.STATEMENTS[name].startswith(text) for name, text in ledger_sql.BATCH.items())
    # PostgreSQL's array forms: the UPDATEs are BATCH's texts over arrays (rows the batch
    # has locked already: no guarded counter), the INSERT of transfers only journals rows
    assert set(ledger_sql.PG_ARRAYS) == {"release", "settled", "insert_transfer"}
    for name in ledger_sql.PG_ARRAY_KEYS:
        head = ledger_sql.BATCH[name].partition(" WHERE ")[0]
        assert ledger_sql.PG_ARRAYS[name].startswith(re.sub(r"(?<!:):(\w+)", r"v.p_\1", head) + " FROM unnest(")
    assert ":limit" in ledger_sql.STATEMENTS["credit"] and ":limit" in ledger_sql.STATEMENTS["debit"]
