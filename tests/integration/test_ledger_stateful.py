"""A property-based stateful test of the ledger (hypothesis ``RuleBasedStateMachine``).

Random deposits, key funding with fees, reservations, settlements below / equal /
above the hold, voids, expiries, refunds that close keys (their in-flight holds then
release to the partner), and replayed or conflicting calls run against the real ledger
(SQLite and PostgreSQL) and a plain Python model of what should happen. Amounts are
drawn up to and beyond the one-amount bound (10^15), up to int64 and past it, and the
books can be pushed to the int64 edge (as years of traffic would: seeded rows), so that
deposits, transfers and settlements that would overflow a counter are tried too.

After every step: every account's counters equal the model; each is an integer (on
SQLite: ``typeof``); per unit the posted balances sum to zero; no request is charged
twice; and the ledger's own audit (``AuditBooks``) finds nothing. After every refused
call: nothing was written — no counter moved, no transfer or reservation appeared —
except the stored insufficient-funds outcome, which moves no money.

Budget leases (acquire, extend, release, ``SettleLeased`` batches with retries, after a
release, an expiry or a revoke) run among all of this: their rules and their invariant
(grants = used + freed + still held, per lease) are ``support.ledger_lease_model``.
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
from cg_ledger.accounts import USAGE_SHARDS, usage_shard
from cg_ledger.audit import Audit
from cg_ledger.book import Book
from cg_ledger.errors import AccountClosed, Conflict, InsufficientFunds, InvalidArgument, NotFound, OutOfRange
from cg_ledger.limits import MAX_AMOUNT
from cg_ledger.reservations import Reservations
from cg_ledger.txrunner import runner_for
from cglib.db import make_engine, migrate
from cglib.pricing import platform_fee_ucr
from support.ledger import churn, seed_transfers
from support.ledger_lease_model import LeaseRules

MIGRATIONS = Path(cg_ledger.__file__).parent / "migrations"
INT64 = 2**63 - 1
EXTERNAL = "external:credits"
SINK, FEES = "platform:usage", "platform:fees"
PARTNERS = ["p0", "p1"]
KEYS = {"k0": "p0", "k1": "p0", "k2": "p1"}
# (input, output) ucr per token, and the prices as the catalog gives them
PRICES = {"haiku": ((100, 500), ("1.00", "5.00", "v1")), "pricey": ((100_000, 100_000), ("1000", "1000", "v1"))}
COUNTERS = ("credits_posted", "debits_posted", "debits_pending")

EDGES = [0, -1, MAX_AMOUNT - 1, MAX_AMOUNT, MAX_AMOUNT + 1, INT64 - 1, INT64, INT64 + 1, 2**64]
AMOUNTS = st.one_of(st.integers(1, 300_000), st.sampled_from(EDGES), st.integers(MAX_AMOUNT - 1000, MAX_AMOUNT + 1000))
BUDGETS = st.one_of(st.integers(1, 150_000), st.sampled_from(EDGES))
# mostly requests a key can pay for; a quarter at the edges (the bound at the pricey price
# is 10^10 output tokens; 10^12 is the most a request may claim)
REQUESTS = st.one_of(
    st.tuples(st.just("haiku"), st.integers(0, 120)),
    st.tuples(st.just("haiku"), st.integers(0, 120)),
    st.tuples(st.just("haiku"), st.integers(0, 120)),
    st.tuples(
        st.sampled_from(["haiku", "pricey"]), st.sampled_from([10**10 - 1, 10**10, 10**10 + 1, 10**12, 10**12 + 1])
    ),
)


class LedgerMachine(LeaseRules, RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    engine = None
    db_url = ""
    prices, requests = PRICES, REQUESTS  # for the lease rules

    def __init__(self) -> None:
        super().__init__()
        self.run(self._truncate())
        self.db = runner_for(self.db_url)
        self.book = Book(self.db)
        self.res = Reservations(self.db)
        self.audit = Audit(self.db)
        self.credits: dict[str, int] = defaultdict(int)
        self.debits: dict[str, int] = defaultdict(int)
        self.pending: dict[str, int] = defaultdict(int)
        self.exists: set[str] = set()
        self.closed: dict[str, str] = {}  # key account -> partner account
        self.seeded: set[str] = set()
        self.reservations: dict[str, dict] = {}
        self.history: list[tuple] = []  # (call, args, expected "ok" | a permanent refusal)
        self.n = 0
        self._lease_model()

    def teardown(self) -> None:
        self.db.close()

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _truncate(self) -> None:
        async with self.engine.begin() as conn:
            for table in ("transfers", "reservations", "accounts"):
                await conn.execute(text(f"DELETE FROM {table}"))

    def _id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n}"

    def posted(self, account: str) -> int:
        return self.credits[account] - self.debits[account]

    def available(self, account: str) -> int:
        return self.posted(account) - self.pending[account]

    def fits(self, account: str, amount: int) -> bool:
        """Whether crediting ``amount`` keeps the account's credits within int64."""
        return self.credits[account] + amount <= INT64

    async def _books(self):
        """(every account's counters, the last transfer id, how many reservations)."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        f"SELECT id, {', '.join(COUNTERS)} FROM accounts UNION ALL SELECT '', "
                        "(SELECT COALESCE(MAX(id), 0) FROM transfers), (SELECT COUNT(*) FROM reservations), 0"
                    )
                )
            ).all()
        accounts = {r[0]: tuple(r[1:]) for r in rows if r[0]}
        top, reservations = next(tuple(r[1:3]) for r in rows if not r[0])
        return accounts, int(top), int(reservations)

    def _call(self, expected, fn, *args):
        """Calls the ledger and checks the outcome kind is the model's. A refusal must
        leave the books as they were (a stored insufficient-funds outcome aside)."""
        if expected == "ok":
            return self.run(fn(*args))
        accounts, top, reservations = self.run(self._books())
        with pytest.raises(expected):
            self.run(fn(*args))
        after, after_top, after_reservations = self.run(self._books())
        assert (after, after_reservations) == (accounts, reservations), f"{fn.__name__} refused but wrote"
        if after_top != top:
            assert expected is InsufficientFunds, f"{fn.__name__} refused ({expected.__name__}) but stored a transfer"
            rows = self.run(self._transfers_after(top))
            assert len(rows) == 1 and rows[0] != "ok", rows
        return None

    async def _transfers_after(self, top: int) -> list[str]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(text("SELECT outcome FROM transfers WHERE id > :t"), {"t": top})).scalars())

    def _move(self, debit: str, credit: str, amount: int) -> None:
        self.debits[debit] += amount
        self.credits[credit] += amount
        self.exists.update((debit, credit))

    def _release(self, r: dict, held: int, posted: int) -> None:
        """The model of a release: ``posted`` of the hold posted, the rest freed; on a
        closed key what was freed goes on to the partner."""
        account = r["account"]
        self.pending[account] -= held
        self.debits[account] += posted
        freed = held - posted
        if account in self.closed and freed > 0:
            self._move(account, self.closed[account], freed)

    def _target(self, call: str):
        return self.res if call == "reserve" else self.leases if call in ("acquire", "extend", "release") else self.book

    def _forward_fits(self, r: dict, freed: int) -> bool:
        partner = self.closed.get(r["account"])
        return not partner or freed <= 0 or self.fits(partner, freed)

    # -- rules ---------------------------------------------------------------------

    @initialize(
        deposits=st.lists(st.integers(200_000, 2_000_000), min_size=2, max_size=2),
        budgets=st.lists(st.integers(20_000, 300_000), min_size=3, max_size=3),
        leases=st.lists(st.integers(0, 100_000), min_size=2, max_size=2),
    )
    def open_books(self, deposits, budgets, leases):
        """Partners with credits, funded keys and two leases (on a key, on a partner's
        balance), so every rule has something to act on."""
        for p, amount in zip(PARTNERS, deposits, strict=True):
            self.deposit(p, amount)
        for k, budget in zip(sorted(KEYS), budgets, strict=True):
            self.fund_key(k, budget, "0.05")
        for payer, want in zip(("key:k0", "partner:p0"), leases, strict=True):
            self.acquire_lease(payer, want, 0)

    @rule(p=st.sampled_from(PARTNERS), amount=AMOUNTS)
    def deposit(self, p, amount):
        idem, partner = self._id("dep"), f"partner:{p}"
        args = (idem, partner, amount)
        if amount <= 0:
            expected = InvalidArgument
        elif amount > MAX_AMOUNT or self.debits[EXTERNAL] + amount > INT64 or not self.fits(partner, amount):
            expected = OutOfRange
        else:
            expected = "ok"
        out = self._call(expected, self.book.deposit, *args)
        if out is not None:
            assert (out.amount, out.replayed) == (amount, False)
            self._move(EXTERNAL, partner, amount)
            self.history.append(("deposit", args, "ok"))

    @rule(k=st.sampled_from(sorted(KEYS)), budget=BUDGETS, rate=st.sampled_from(["0", "0.05", "0.1"]))
    def fund_key(self, k, budget, rate):
        partner, key = f"partner:{KEYS[k]}", f"key:{k}"
        idem = self._id("fund")
        args = (idem, KEYS[k], k, budget, rate)
        fee = platform_fee_ucr(budget, Decimal(rate)) if budget > 0 else 0
        if budget <= 0:
            expected = InvalidArgument
        elif budget + fee > MAX_AMOUNT:
            expected = OutOfRange
        elif partner not in self.exists:
            expected = NotFound
        elif key in self.closed:
            expected = AccountClosed
        elif self.available(partner) < budget + fee:
            expected = InsufficientFunds
        elif not self.fits(key, budget) or not self.fits(FEES, fee):
            expected = OutOfRange
        else:
            expected = "ok"
        out = self._call(expected, self.book.fund_key, *args)
        if out is not None:
            assert (out.budget_ucr, out.fee_ucr, out.replayed) == (budget, fee, False)
            self._move(partner, key, budget)
            if fee:
                self._move(partner, FEES, fee)
            self.exists.add(FEES)
        if expected in ("ok", InsufficientFunds, AccountClosed):
            self.history.append(("fund_key", args, expected))

    @rule(k=st.sampled_from(sorted(KEYS)), tin=st.integers(0, 40), request=REQUESTS)
    def reserve(self, k, tin, request):
        key, rid = f"key:{k}", self._id("req")
        price, tout = request
        (p_in, p_out), catalog = PRICES[price]
        args = (rid, key, "m", *catalog, tin, tout)
        held = tin * p_in + tout * p_out
        if tout > 10**12:
            expected = InvalidArgument
        elif held > MAX_AMOUNT:
            expected = OutOfRange
        elif key not in self.exists:
            expected = NotFound
        elif key in self.closed:
            expected = AccountClosed
        elif self.available(key) < held:
            expected = InsufficientFunds
        else:
            expected = "ok"
        out = self._call(expected, self.res.reserve, *args)
        if out is not None:
            assert out.held_ucr == held and not out.replayed
            self.pending[key] += held
            self.reservations[rid] = {"account": key, "held": held, "status": "pending", "p_out": p_out}
        if expected in ("ok", InsufficientFunds, AccountClosed):
            self.history.append(("reserve", args, expected))

    @precondition(lambda self: self.reservations)
    @rule(data=st.data(), relation=st.sampled_from(["below", "equal", "above"]))
    def settle(self, data, relation):
        rid = data.draw(st.sampled_from(sorted(self.reservations)))
        r = self.reservations[rid]
        held, p_out = r["held"], r["p_out"]
        extra = data.draw(st.integers(1, 100))
        tout = {"below": held // (2 * p_out), "equal": held // p_out, "above": held // p_out + extra}[relation]
        args = (rid, 0, tout, "provider")
        if tout > 10**12:
            self._call(InvalidArgument, self.res.settle, *args)
            return
        if r["status"] == "voided":
            self._call(Conflict, self.res.settle, *args)
            return
        if r["status"] == "posted":
            out = self._call("ok", self.res.settle, *args)
            assert out.replayed and out.charged_ucr == r["charged"]
            return
        charge = tout * p_out
        account = r["account"]
        hold = held if r["status"] == "pending" else 0
        from_hold = min(charge, hold)
        after_release = self.available(account) + hold - from_hold
        take = min(charge - from_hold, max(after_release, 0))
        sink = usage_shard(rid)  # the usage sink's shard of this request
        if charge > MAX_AMOUNT or not self._forward_fits(r, hold - from_hold) or not self.fits(sink, from_hold + take):
            self._call(OutOfRange, self.res.settle, *args)
            return
        self._release(r, hold, from_hold)
        self.debits[account] += take
        self.credits[sink] += from_hold + take
        self.exists.add(sink)
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
        if r["status"] == "pending" and not self._forward_fits(r, r["held"]):
            self._call(OutOfRange, self.res.void, rid)
            return
        released, replayed = self.run(self.res.void(rid))
        assert (released, replayed) == (r["held"], r["status"] == "voided")
        if r["status"] == "pending":
            self._release(r, r["held"], 0)
            r["status"] = "voided"

    @rule()
    def expire_all(self):
        """Every pending hold expires, leases' too, except one whose release could not go
        on to its partner without passing int64 (it stays pending; which of several such
        holds fit first is the sweep's order, so the outcome is read back)."""
        due = {rid: r for rid, r in self.reservations.items() if r["status"] == "pending"}
        leases = [lid for lid, lease in self.lease_book.items() if lease["status"] == "open"]
        count, released = self.run(self.res.expire(now_ms=10**13))
        statuses = self.run(self._statuses([*due, *leases]))
        expired = [rid for rid in due if statuses[rid] == "expired"]
        lease_count = sum(statuses[lid] == "expired" for lid in leases)
        lease_released = self._expire_leases(statuses)
        assert (count, released) == (
            len(expired) + lease_count,
            sum(due[rid]["held"] for rid in expired) + lease_released,
        )
        for rid in expired:
            self._release(due[rid], due[rid]["held"], 0)
            due[rid]["status"] = "expired"
        for rid, r in due.items():
            if r["status"] == "pending":
                assert not self._forward_fits(r, r["held"]), rid

    async def _statuses(self, rids: list[str]) -> dict[str, str]:
        if not rids:
            return {}
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT request_id, status FROM reservations"))
            return {rid: status for rid, status in rows if rid in set(rids)}

    # a revoke is most telling with requests in flight (and closes the key for good)
    @precondition(lambda self: any(r["status"] == "pending" for r in self.reservations.values()))
    @rule(k=st.sampled_from(sorted(KEYS)))
    def refund(self, k):
        key, partner, idem = f"key:{k}", f"partner:{KEYS[k]}", self._id("refund")
        args = (idem, KEYS[k], k)
        amount = max(self.available(key), 0)
        if key not in self.exists:
            self._call(NotFound, self.book.refund_key, *args)
            return
        if not self.fits(partner, amount):
            self._call(OutOfRange, self.book.refund_key, *args)
            return
        out = self._call("ok", self.book.refund_key, *args)
        assert out.amount == amount
        self._move(key, partner, amount)
        self.closed[key] = partner
        self.history.append(("refund_key", args, "ok"))

    @rule(k=st.sampled_from(sorted(KEYS)), outputs=st.lists(st.integers(0, 60), min_size=1, max_size=3))
    def revoke_with_requests_in_flight(self, k, outputs):
        """Requests reserve, then the key is revoked while they are in flight: whatever
        ends them later sends what they free on to the partner."""
        for tout in outputs:
            self.reserve(k, 0, ("haiku", tout))
        self.refund(k)

    @precondition(lambda self: len(self.seeded) < 3)
    @rule(where=st.sampled_from(["external", "partner:p0", SINK]), margin=st.integers(0, 3 * MAX_AMOUNT))
    def push_to_the_int64_edge(self, where, margin):
        """Years of traffic, written straight into the tables: the outside world's debits,
        a partner's or the usage sink's credits come within ``margin`` of int64."""
        if where in self.seeded:
            return
        self.seeded.add(where)
        if where == "external":
            amount = INT64 - margin - self.debits[EXTERNAL]
            if amount > 0:
                self.run(seed_transfers(self.engine, ("seed:whale", "deposit", EXTERNAL, "partner:whale", amount)))
                self._move(EXTERNAL, "partner:whale", amount)
            return
        for target in USAGE_SHARDS if where == SINK else (where,):  # the sink: every shard of it
            amount = INT64 - margin - self.credits[target]
            if amount > 0:
                other = f"partner:churn-{target.split(':', 1)[1].replace(':', '-')}"
                self.run(churn(self.engine, target, other, amount))
                self._move(target, other, amount)
                self._move(other, target, amount)

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def replay(self, data):
        """A retried call (a lost reply, a redelivered message) changes nothing."""
        call, args, expected = data.draw(st.sampled_from(self.history))
        target = self._target(call)
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
        target = self._target(call)
        self._call(expected, getattr(target, call), *args)

    @precondition(lambda self: any(h[0] == "deposit" for h in self.history))
    @rule(data=st.data())
    def conflicting_replay(self, data):
        _, (idem, account, amount), _ = data.draw(st.sampled_from([h for h in self.history if h[0] == "deposit"]))
        expected = OutOfRange if amount + 1 > MAX_AMOUNT else Conflict
        self._call(expected, self.book.deposit, idem, account, amount + 1)

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def books_agree_with_the_model_and_pass_the_audit(self):
        async def read():
            async with self.engine.connect() as conn:
                accounts = (await conn.execute(text(f"SELECT id, unit, {', '.join(COUNTERS)} FROM accounts"))).all()
                charged_twice = (
                    await conn.execute(
                        text(
                            "SELECT COUNT(*) FROM (SELECT request_id FROM transfers WHERE kind = 'post'"
                            " GROUP BY request_id HAVING COUNT(*) > 1) twice"
                        )
                    )
                ).scalar_one()
            return accounts, charged_twice

        (accounts, charged_twice), report = self.run(read()), self.run(self.audit.audit())
        stored = {a[0]: tuple(a[2:]) for a in accounts}
        assert set(stored) >= self.exists
        for account, counters in stored.items():
            assert all(isinstance(v, int) and 0 <= v <= INT64 for v in counters), (account, counters)
            assert counters == (self.credits[account], self.debits[account], self.pending[account]), account
        # debits = credits: posted balances sum to zero per unit (external = minus deposits)
        by_unit = Counter()
        for _account, unit, credits, debits, _ in accounts:
            by_unit[unit] += credits - debits
        assert all(v == 0 for v in by_unit.values()), by_unit
        # each request charged at most once
        assert charged_twice == 0
        # the ledger's own audit: integer counters (SQLite: typeof), conservation, no
        # overdraft or negative counter, journal = counters, open holds = pending debits
        assert report.ok, report.discrepancies


@pytest.mark.parametrize("examples", [30])
def test_ledger_state_machine(db_url, examples):
    loop = asyncio.new_event_loop()
    engine = make_engine(db_url)
    loop.run_until_complete(migrate(engine, MIGRATIONS))
    LedgerMachine.loop, LedgerMachine.engine, LedgerMachine.db_url = loop, engine, db_url
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
