"""The ledger's operations against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

import cg_ledger
from cg_ledger.book import Book, Conflict, InsufficientFunds, InvalidArgument, NotFound
from cglib.db import make_engine, migrate

MIGRATIONS = Path(cg_ledger.__file__).parent / "migrations"
CREDIT = 1_000_000
PRICE = ("1.00", "5.00", "v1")  # claude-haiku-4-5: 100 ucr per input token, 500 per output token


@pytest.fixture
async def book(db_url):
    engine = make_engine(db_url)
    await migrate(engine, MIGRATIONS)
    await migrate(engine, MIGRATIONS)  # idempotent at every start
    yield Book(engine)
    await engine.dispose()


async def _funded_key(book: Book, credits: int, key: str = "key:k1") -> str:
    await book.deposit("dep-1", "partner:p1", 10_000 * CREDIT)
    await book.transfer(f"fund-{key}", "partner:p1", key, credits * CREDIT)
    return key


async def _sums(book: Book) -> tuple[int, int]:
    async with book.engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT SUM(credits_posted - debits_posted), SUM(debits_pending - credits_pending) FROM accounts"
        ))).one()
    return int(row[0]), int(row[1])


async def test_deposit_transfer_balance_and_conservation(book):
    key = await _funded_key(book, 50)
    assert (await book.balance("partner:p1")).posted_ucr == 9_950 * CREDIT
    assert (await book.balance(key)).available_ucr == 50 * CREDIT
    assert await _sums(book) == (0, 0)  # every credit has a debit


async def test_idempotency_ids_are_permanent(book):
    first = await book.deposit("dep-x", "partner:p1", 5 * CREDIT)
    again = await book.deposit("dep-x", "partner:p1", 5 * CREDIT)
    assert again.replayed and again.transfer_id == first.transfer_id
    assert (await book.balance("partner:p1")).posted_ucr == 5 * CREDIT
    with pytest.raises(Conflict):
        await book.deposit("dep-x", "partner:p1", 6 * CREDIT)


async def test_reserve_settle_below_hold_releases_the_rest(book):
    key = await _funded_key(book, 50)
    r = await book.reserve("req-1", key, "m", *PRICE, max_input_tokens=100, max_output_tokens=100)
    assert r.held_ucr == 100 * 100 + 100 * 500
    assert (await book.balance(key)).available_ucr == 50 * CREDIT - r.held_ucr
    s = await book.settle("req-1", 7, 16, "provider")
    assert (s.charged_ucr, s.released_ucr, s.unpaid_ucr) == (8_700, r.held_ucr - 8_700, 0)
    b = await book.balance(key)
    assert (b.posted_ucr, b.pending_ucr) == (50 * CREDIT - 8_700, 0)
    # a retried settlement is answered from the record and charges nothing more
    again = await book.settle("req-1", 7, 16, "provider")
    assert again.replayed and again.charged_ucr == 8_700
    assert (await book.balance(key)).posted_ucr == 50 * CREDIT - 8_700
    assert await _sums(book) == (0, 0)


async def test_settle_above_hold_takes_only_what_is_available(book):
    await book.deposit("dep-1", "partner:p1", 10 * CREDIT)
    await book.transfer("fund", "partner:p1", "key:k2", 1_000)  # 1,000 ucr budget
    await book.reserve("req-2", "key:k2", "m", *PRICE, max_input_tokens=1, max_output_tokens=1)  # holds 600
    s = await book.settle("req-2", 10, 10, "provider")  # costs 6,000
    assert (s.held_ucr, s.charged_ucr, s.unpaid_ucr) == (600, 1_000, 5_000)
    b = await book.balance("key:k2")
    assert (b.posted_ucr, b.available_ucr) == (0, 0)  # never negative


async def test_void_releases_and_is_idempotent(book):
    key = await _funded_key(book, 5)
    await book.reserve("req-3", key, "m", *PRICE, 10, 10)
    assert (await book.void("req-3", "upstream_error"))[1] is False
    assert (await book.void("req-3"))[1] is True
    b = await book.balance(key)
    assert (b.posted_ucr, b.pending_ucr) == (5 * CREDIT, 0)
    with pytest.raises(Conflict):
        await book.settle("req-3", 1, 1, "provider")


async def test_refusals_write_nothing(book):
    key = await _funded_key(book, 1)
    with pytest.raises(InsufficientFunds):
        await book.reserve("req-big", key, "m", *PRICE, 0, 10_000)  # 5 credits > 1
    with pytest.raises(InsufficientFunds):
        await book.transfer("t-big", key, "key:other", 2 * CREDIT)
    with pytest.raises(NotFound):
        await book.reserve("req-nf", "key:missing", "m", *PRICE, 1, 1)
    with pytest.raises(NotFound):
        await book.settle("req-never", 1, 1, "provider")
    for bad in (0, -5, 2**63):
        with pytest.raises(InvalidArgument):
            await book.deposit(f"d{bad}", "partner:p1", bad)
    with pytest.raises(InvalidArgument):
        await book.deposit("d-acct", "not-an-account", 5)
    with pytest.raises(InvalidArgument):
        await book.reserve("req-price", key, "m", "nan", "1", "v", 1, 1)
    b = await book.balance(key)
    assert (b.posted_ucr, b.pending_ucr) == (1 * CREDIT, 0)
    assert await _sums(book) == (0, 0)


async def test_concurrent_reservations_never_overspend(book):
    """100 credits, 250 concurrent 1-credit holds: exactly 100 succeed."""
    key = await _funded_key(book, 100)
    one_credit = ("0", "100.00", "v1")  # 100 output tokens at $100/1M = $0.01 = 1 credit

    async def attempt(i: int) -> bool:
        try:
            await book.reserve(f"race-{i}", key, "m", *one_credit, 0, 100)
            return True
        except InsufficientFunds:
            return False

    results = await asyncio.gather(*(attempt(i) for i in range(250)))
    assert sum(results) == 100
    b = await book.balance(key)
    assert (b.available_ucr, b.pending_ucr) == (0, 100 * CREDIT)


async def test_concurrent_duplicate_settlements_charge_once(book):
    key = await _funded_key(book, 10)
    await book.reserve("dup", key, "m", *PRICE, 100, 100)
    outs = await asyncio.gather(*(book.settle("dup", 7, 16, "provider") for _ in range(10)), return_exceptions=True)
    assert all(not isinstance(o, Exception) for o in outs), outs
    assert sum(not o.replayed for o in outs) == 1
    assert (await book.balance(key)).posted_ucr == 10 * CREDIT - 8_700
