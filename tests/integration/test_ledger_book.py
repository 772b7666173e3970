"""The ledger's operations against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

import cg_ledger
from cg_ledger.accounts import usage_shard
from cg_ledger.book import Book
from cg_ledger.errors import Conflict, InsufficientFunds, InvalidArgument, NotFound, OutOfRange
from cg_ledger.reservations import Reservations
from cg_ledger.txrunner import runner_for
from cglib.db import make_engine, migrate
from cglib.money import UCR_PER_CREDIT as CREDIT

MIGRATIONS = Path(cg_ledger.__file__).parent / "migrations"
PRICE = ("1.00", "5.00", "v1")  # claude-haiku-4-5: 100 ucr per input token, 500 per output token


@pytest.fixture
async def engine(db_url):
    engine = make_engine(db_url)
    await migrate(engine, MIGRATIONS)
    await migrate(engine, MIGRATIONS)  # idempotent at every start
    yield engine
    await engine.dispose()


@pytest.fixture
def db(engine, db_url):
    runner = runner_for(db_url)
    yield runner
    runner.close()


@pytest.fixture
def book(db, engine):
    book = Book(db)
    book.engine = engine  # the tests' own reads (_sums)
    return book


@pytest.fixture
def res(db):
    return Reservations(db)


async def _funded_key(book: Book, credits: int, key: str = "key:k1") -> str:
    await book.deposit("dep-1", "partner:p1", 10_000 * CREDIT)
    await book.transfer(f"fund-{key}", "partner:p1", key, credits * CREDIT)
    return key


async def _sums(book: Book) -> tuple[int, int]:
    """(sum of posted balances, pending debits not backed by a pending reservation)."""
    async with book.engine.connect() as conn:
        posted = (await conn.execute(text("SELECT SUM(credits_posted - debits_posted) FROM accounts"))).scalar()
        pending = (await conn.execute(text("SELECT SUM(debits_pending) FROM accounts"))).scalar()
        held = (
            await conn.execute(
                text("SELECT COALESCE(SUM(held_ucr + customer_held_uai), 0) FROM reservations WHERE status = 'pending'")
            )
        ).scalar()
    return int(posted), int(pending) - int(held)


async def test_deposit_transfer_balance_and_conservation(book, res):
    key = await _funded_key(book, 50)
    assert (await book.balance("partner:p1")).posted == 9_950 * CREDIT
    assert (await book.balance(key)).available == 50 * CREDIT
    assert await _sums(book) == (0, 0)  # every credit has a debit


async def test_idempotency_ids_are_permanent(book, res):
    first = await book.deposit("dep-x", "partner:p1", 5 * CREDIT)
    again = await book.deposit("dep-x", "partner:p1", 5 * CREDIT)
    assert again.replayed and again.transfer_id == first.transfer_id
    assert (await book.balance("partner:p1")).posted == 5 * CREDIT
    with pytest.raises(Conflict):
        await book.deposit("dep-x", "partner:p1", 6 * CREDIT)


async def test_reserve_settle_below_hold_releases_the_rest(book, res):
    key = await _funded_key(book, 50)
    r = await res.reserve("req-1", key, "m", *PRICE, max_input_tokens=100, max_output_tokens=100)
    assert r.held_ucr == 100 * 100 + 100 * 500
    assert (await book.balance(key)).available == 50 * CREDIT - r.held_ucr
    s = await res.settle("req-1", 7, 16, "provider")
    assert (s.charged_ucr, s.released_ucr, s.unpaid_ucr) == (8_700, r.held_ucr - 8_700, 0)
    b = await book.balance(key)
    assert (b.posted, b.pending) == (50 * CREDIT - 8_700, 0)
    # a retried settlement is answered from the record and charges nothing more
    again = await res.settle("req-1", 7, 16, "provider")
    assert again.replayed and again.charged_ucr == 8_700
    assert (await book.balance(key)).posted == 50 * CREDIT - 8_700
    assert await _sums(book) == (0, 0)


async def test_settle_above_hold_takes_only_what_is_available(book, res):
    await book.deposit("dep-1", "partner:p1", 10 * CREDIT)
    await book.transfer("fund", "partner:p1", "key:k2", 1_000)  # 1,000 ucr budget
    await res.reserve("req-2", "key:k2", "m", *PRICE, max_input_tokens=1, max_output_tokens=1)  # holds 600
    s = await res.settle("req-2", 10, 10, "provider")  # costs 6,000
    assert (s.held_ucr, s.charged_ucr, s.unpaid_ucr) == (600, 1_000, 5_000)
    b = await book.balance("key:k2")
    assert (b.posted, b.available) == (0, 0)  # never negative


async def test_void_releases_and_is_idempotent(book, res):
    key = await _funded_key(book, 5)
    await res.reserve("req-3", key, "m", *PRICE, 10, 10)
    assert (await res.void("req-3", "upstream_error"))[1] is False
    assert (await res.void("req-3"))[1] is True
    b = await book.balance(key)
    assert (b.posted, b.pending) == (5 * CREDIT, 0)
    with pytest.raises(Conflict):
        await res.settle("req-3", 1, 1, "provider")


async def test_refusals_write_nothing(book, res):
    key = await _funded_key(book, 1)
    with pytest.raises(InsufficientFunds):
        await res.reserve("req-big", key, "m", *PRICE, 0, 10_000)  # 5 credits > 1
    with pytest.raises(InsufficientFunds):
        await book.transfer("t-big", key, "key:other", 2 * CREDIT)
    with pytest.raises(NotFound):
        await res.reserve("req-nf", "key:missing", "m", *PRICE, 1, 1)
    with pytest.raises(NotFound):
        await res.settle("req-never", 1, 1, "provider")
    for bad in (0, -5):
        with pytest.raises(InvalidArgument):
            await book.deposit(f"d{bad}", "partner:p1", bad)
    for huge in (10**15 + 1, 2**63 - 1, 2**63, 2**70):
        with pytest.raises(OutOfRange):
            await book.deposit(f"d{huge}", "partner:p1", huge)
    with pytest.raises(InvalidArgument):
        await book.deposit("d-acct", "not-an-account", 5)
    with pytest.raises(InvalidArgument):
        await book.deposit("d-key", key, 5)  # deposits go to partners only
    with pytest.raises(InvalidArgument):
        await res.reserve("req-price", key, "m", "nan", "1", "v", 1, 1)
    b = await book.balance(key)
    assert (b.posted, b.pending) == (1 * CREDIT, 0)
    assert await _sums(book) == (0, 0)


async def test_concurrent_reservations_never_overspend(book, res):
    """100 credits, 250 concurrent 1-credit holds: exactly 100 succeed."""
    key = await _funded_key(book, 100)
    one_credit = ("0", "100.00", "v1")  # 100 output tokens at $100/1M = $0.01 = 1 credit

    async def attempt(i: int) -> bool:
        try:
            await res.reserve(f"race-{i}", key, "m", *one_credit, 0, 100)
            return True
        except InsufficientFunds:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(250)))
    assert sum(results) == 100
    b = await book.balance(key)
    assert (b.available, b.pending) == (0, 100 * CREDIT)


async def test_concurrent_duplicate_settlements_charge_once(book, res):
    key = await _funded_key(book, 10)
    await res.reserve("dup", key, "m", *PRICE, 100, 100)
    outs = await asyncio.gather(*(res.settle("dup", 7, 16, "provider") for _ in range(10)), return_exceptions=True)
    assert all(not isinstance(o, Exception) for o in outs), outs
    assert sum(not o.replayed for o in outs) == 1
    assert (await book.balance(key)).posted == 10 * CREDIT - 8_700


async def test_a_sink_the_cache_wrongly_thinks_exists_is_created_not_skipped(book, res):
    # the first settlement creates its usage shard; a process whose cache says it exists
    # (the transaction that created it rolled back) must still credit it
    await book.deposit("d-sink", "partner:p-sink", 10 * CREDIT)
    await res.reserve("r-sink", "partner:p-sink", "haiku", *PRICE, 100, 100)
    res.known_sinks.add(usage_shard("r-sink"))
    out = await res.settle("r-sink", 10, 10, "provider")
    assert out.charged_ucr == 10 * 100 + 10 * 500
    assert (await book.balance("platform:usage")).posted == out.charged_ucr
