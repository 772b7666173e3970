"""A property-based stateful test of the ledger (hypothesis ``RuleBasedStateMachine``).

Random deposits, key funding with fees, reservations, settlements below / equal /
above the hold, voids, expiries, refunds and replayed or conflicting calls run against
the real ledger (SQLite and PostgreSQL) and a plain Python model of what should happen.
After every step: every account equals the model; debits = credits (the sum of all
posted balances is zero, so the accounts sum to net external deposits); no constrained
account is negative; no request is charged twice; and replaying the journal of
transfers rebuilds every stored balance.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

import cg_ledger
from cg_ledger.book import Book
from cg_ledger.errors import Conflict, InsufficientFunds, NotFound
from cg_ledger.pricing import platform_fee_ucr
from cg_ledger.reservations import Reservations
from cglib.db import make_engine, migrate

MIGRATIONS = Path(cg_ledger.__file__).parent / "migrations"
EXTERNAL = "external:credits"
SINK, FEES = "platform:usage", "platform:fees"
PARTNERS = ["p0", "p1"]
KEYS = {"k0": "p0", "k1": "p0", "k2": "p1"}
PRICE = ("1.00", "5.00", "v1")  # 100 ucr per input token, 500 per output token
POSTING_KINDS = ("deposit", "grant", "transfer", "fund", "fee", "refund", "hold_deposit", "release_deposit", "post")


def cost(tin: int, tout: int) -> int:
    return tin * 100 + tout * 500


class LedgerMachine(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    engine = None

    def __init__(self) -> None:
        super().__init__()
        self.run(self._truncate())
        self.book = Book(self.engine)
        self.res = Reservations(self.engine)
        self.posted: dict[str, int] = defaultdict(int)
        self.pending: dict[str, int] = defaultdict(int)
        self.exists: set[str] = set()
        self.reservations: dict[str, dict] = {}
        self.history: list[tuple] = []  # (call, args, expected "ok" | exception type)
        self.n = 0

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _truncate(self) -> None:
        async with self.engine.begin() as conn:
            for table in ("transfers", "reservations", "accounts"):
                await conn.execute(text(f"DELETE FROM {table}"))

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"

    def available(self, account: str) -> int:
        return self.posted[account] - self.pending[account]

    def _call(self, expected, fn, *args):
        """Calls the ledger; checks the outcome kind matches the model's expectation."""
        if expected == "ok":
            return self.run(fn(*args))
        with pytest.raises(expected):
            self.run(fn(*args))
        return None

    def _move(self, debit: str, credit: str, amount: int) -> None:
        self.posted[debit] -= amount
        self.posted[credit] += amount
        self.exists.update((debit, credit))

    # -- rules ---------------------------------------------------------------------

    @initialize(deposits=st.lists(st.integers(200_000, 2_000_000), min_size=2, max_size=2),
                budgets=st.lists(st.integers(20_000, 300_000), min_size=3, max_size=3))
    def open_books(self, deposits, budgets):
        """Partners with credits and funded keys, so every rule has something to act on."""
        for p, amount in zip(PARTNERS, deposits):
            self.deposit(p, amount)
        for k, budget in zip(sorted(KEYS), budgets):
            self.fund_key(k, budget, "0.05")

    @rule(p=st.sampled_from(PARTNERS), amount=st.integers(1, 300_000))
    def deposit(self, p, amount):
        idem = self._id("dep")
        self._call("ok", self.book.deposit, idem, f"partner:{p}", amount)
        self._move(EXTERNAL, f"partner:{p}", amount)
        self.history.append(("deposit", (idem, f"partner:{p}", amount), "ok"))

    @rule(k=st.sampled_from(sorted(KEYS)), budget=st.integers(1, 150_000), rate=st.sampled_from(["0", "0.05", "0.1"]))
    def fund_key(self, k, budget, rate):
        partner, key = f"partner:{KEYS[k]}", f"key:{k}"
        fee = platform_fee_ucr(budget, Decimal(rate))
        idem = self._id("fund")
        args = (idem, KEYS[k], k, budget, rate)
        if partner not in self.exists:
            self._call(NotFound, self.book.fund_key, *args)
            return
        expected = "ok" if self.available(partner) >= budget + fee else InsufficientFunds
        out = self._call(expected, self.book.fund_key, *args)
        if out is not None:
            assert (out.budget_ucr, out.fee_ucr, out.replayed) == (budget, fee, False)
            self._move(partner, key, budget)
            if fee:
                self._move(partner, FEES, fee)
            self.exists.add(FEES)
        self.history.append(("fund_key", args, expected))

    @rule(k=st.sampled_from(sorted(KEYS)), tin=st.integers(0, 40), tout=st.integers(0, 120))
    def reserve(self, k, tin, tout):
        key, rid = f"key:{k}", self._id("req")
        args = (rid, key, "m", *PRICE, tin, tout)
        if key not in self.exists:
            self._call(NotFound, self.res.reserve, *args)
            return
        held = cost(tin, tout)
        expected = "ok" if self.available(key) >= held else InsufficientFunds
        out = self._call(expected, self.res.reserve, *args)
        if out is not None:
            assert out.held_ucr == held and not out.replayed
            self.pending[key] += held
            self.reservations[rid] = {"account": key, "held": held, "status": "pending"}
        self.history.append(("reserve", args, expected))

    @precondition(lambda self: self.reservations)
    @rule(data=st.data(), relation=st.sampled_from(["below", "equal", "above"]))
    def settle(self, data, relation):
        rid = data.draw(st.sampled_from(sorted(self.reservations)))
        r = self.reservations[rid]
        held = r["held"]
        tout = {"below": held // 1000, "equal": held // 500, "above": held // 500 + data.draw(st.integers(1, 100))}[relation]
        args = (rid, 0, tout, "provider")
        if r["status"] == "voided":
            self._call(Conflict, self.res.settle, *args)
            return
        if r["status"] == "posted":
            out = self._call("ok", self.res.settle, *args)
            assert out.replayed and out.charged_ucr == r["charged"]
            return
        charge = cost(0, tout)
        account = r["account"]
        hold = held if r["status"] == "pending" else 0
        from_hold = min(charge, hold)
        self.pending[account] -= hold
        self.posted[account] -= from_hold
        take = min(charge - from_hold, max(self.available(account), 0))
        self.posted[account] -= take
        self.posted[SINK] += from_hold + take
        self.exists.add(SINK)
        out = self._call("ok", self.res.settle, *args)
        assert (out.charged_ucr, out.unpaid_ucr, out.replayed) == (from_hold + take, charge - from_hold - take, False)
        r.update(status="posted", charged=from_hold + take)

    @precondition(lambda self: self.reservations)
    @rule(data=st.data())
    def void(self, data):
        rid = data.draw(st.sampled_from(sorted(self.reservations)))
        r = self.reservations[rid]
        if r["status"] in ("posted", "expired"):
            self._call(Conflict, self.res.void, rid)
            return
        released, replayed = self.run(self.res.void(rid))
        assert (released, replayed) == (r["held"], r["status"] == "voided")
        if r["status"] == "pending":
            self.pending[r["account"]] -= r["held"]
            r["status"] = "voided"

    @rule()
    def expire_all(self):
        due = [r for r in self.reservations.values() if r["status"] == "pending"]
        count, released = self.run(self.res.expire(now_ms=10**13))
        assert (count, released) == (len(due), sum(r["held"] for r in due))
        for r in due:
            self.pending[r["account"]] -= r["held"]
            r["status"] = "expired"

    @rule(k=st.sampled_from(sorted(KEYS)))
    def refund(self, k):
        key, partner, idem = f"key:{k}", f"partner:{KEYS[k]}", self._id("refund")
        if key not in self.exists:
            self._call(NotFound, self.book.refund_key, idem, KEYS[k], k)
            return
        amount = max(self.available(key), 0)
        out = self._call("ok", self.book.refund_key, idem, KEYS[k], k)
        assert out.amount == amount
        self._move(key, partner, amount)
        self.history.append(("refund_key", (idem, KEYS[k], k), "ok"))

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def replay(self, data):
        """A retried call (a lost reply, a redelivered message) changes nothing."""
        call, args, expected = data.draw(st.sampled_from(self.history))
        target = self.res if call == "reserve" else self.book
        out = self._call(expected, getattr(target, call), *args)
        if out is not None:
            assert out.replayed

    @precondition(lambda self: any(h[2] != "ok" for h in self.history))
    @rule(data=st.data(), amount=st.integers(1_000_000, 5_000_000))
    def top_up_then_retry_a_refused_call(self, data, amount):
        """A refused idempotency id stays refused, even once the money is there."""
        call, args, expected = data.draw(st.sampled_from([h for h in self.history if h[2] != "ok"]))
        for p in PARTNERS:
            self.deposit(p, amount)
        target = self.res if call == "reserve" else self.book
        self._call(expected, getattr(target, call), *args)

    @precondition(lambda self: any(h[0] == "deposit" for h in self.history))
    @rule(data=st.data())
    def conflicting_replay(self, data):
        _, (idem, account, amount), _ = data.draw(st.sampled_from([h for h in self.history if h[0] == "deposit"]))
        self._call(Conflict, self.book.deposit, idem, account, amount + 1)

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def books_agree_with_the_model_and_the_journal(self):
        async def read():
            async with self.engine.connect() as conn:
                accounts = (await conn.execute(text(
                    "SELECT id, unit, credits_posted - debits_posted, debits_pending, debits_must_not_exceed_credits "
                    "FROM accounts"))).all()
                transfers = (await conn.execute(text(
                    "SELECT kind, debit_account, credit_account, amount_ucr, request_id, outcome FROM transfers"))).all()
                holds = (await conn.execute(text(
                    "SELECT account, held_ucr FROM reservations WHERE status = 'pending'"))).all()
            return accounts, transfers, holds

        accounts, transfers, holds = self.run(read())
        stored = {a[0]: (a[2], a[3]) for a in accounts}
        # every account is what the model says
        assert set(stored) >= self.exists
        for account, (posted, pending) in stored.items():
            assert (posted, pending) == (self.posted[account], self.pending[account]), account
        # debits = credits: posted balances sum to zero per unit (external = minus deposits)
        by_unit = Counter()
        for a in accounts:
            by_unit[a[1]] += a[2]
        assert all(v == 0 for v in by_unit.values()), by_unit
        # nothing constrained below zero, pending included
        for a in accounts:
            if a[4]:
                assert a[2] - a[3] >= 0, a[0]
        # each request charged at most once
        posts = Counter(t[4] for t in transfers if t[0] == "post")
        assert all(n == 1 for n in posts.values())
        # the journal rebuilds the balances
        rebuilt = Counter()
        for kind, debit, credit, amount, _, outcome in transfers:
            if outcome == "ok" and kind in POSTING_KINDS:
                rebuilt[debit] -= amount
                rebuilt[credit] += amount
        held = Counter()
        for account, amount in holds:
            held[account] += amount
        for account, (posted, pending) in stored.items():
            assert (rebuilt[account], held[account]) == (posted, pending), account


@pytest.mark.parametrize("examples", [30])
def test_ledger_state_machine(db_url, examples):
    loop = asyncio.new_event_loop()
    engine = make_engine(db_url)
    loop.run_until_complete(migrate(engine, MIGRATIONS))
    LedgerMachine.loop, LedgerMachine.engine = loop, engine
    try:
        run_state_machine_as_test(
            LedgerMachine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                derandomize=True,
            ),
        )
    finally:
        loop.run_until_complete(engine.dispose())
        loop.close()
