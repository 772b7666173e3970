"""Two-phase reservations: hold an upper bound, then post the real cost.

A reservation holds on the account paying the provider cost (a key budget or, for a
customer-created key, the partner's balance) and, with customer billing, on the
customer's AI credits, both in one transaction. ``settle`` posts the real cost and
releases the rest; a cost above the hold is taken from what is available, never
more (the shortfall is recorded as unpaid, never a negative balance). ``void``
releases everything; ``expire`` voids holds past their expiry, and a settlement that
arrives after that is still posted, once, from what is available, so usage is never lost.

Each call is one synchronous function of a ``HotSQL`` run in a transaction off the
event loop (``hotsql`` says why, ``txrunner`` how). A reservation
may carry a rate limit (``ratelimits``), checked and counted in the same transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal

import psycopg
from sqlalchemy.ext.asyncio import AsyncEngine

from cg_ledger import accounts
from cg_ledger.accounts import USAGE_SINK
from cg_ledger.book import FAILED_FUNDS, check_id, decimal_or_invalid
from cg_ledger.errors import Conflict, InsufficientFunds, InvalidArgument, NotFound
from cg_ledger.hotsql import HotSQL
from cg_ledger.hotsql import now_ms as clock_ms
from cg_ledger.ratelimits import WINDOW_MS, RateLimit, RateState, evaluate
from cg_ledger.txrunner import runner_for
from cglib.faults import crash_point
from cg_ledger.pricing import (
    MAX_UCR,
    CustomerBilling,
    ai_credits_uai,
    customer_price_usd,
    provider_cost_usd,
    usd_to_ucr,
)

MAX_TOKENS = 10**12


@dataclass(frozen=True)
class Billing:
    customer_account: str
    revenue_account: str
    terms: CustomerBilling


@dataclass(frozen=True)
class ReserveOutcome:
    request_id: str
    held_ucr: int
    customer_held_uai: int
    available_ucr: int
    replayed: bool
    rate: RateState = field(default_factory=RateState)


@dataclass(frozen=True)
class SettleOutcome:
    request_id: str
    held_ucr: int
    charged_ucr: int
    released_ucr: int
    unpaid_ucr: int
    customer_charged_uai: int
    customer_unpaid_uai: int
    price_book_version: str
    replayed: bool


def parse_billing(customer_account: str, revenue_account: str, multiplier: str, cents: str, floor: str) -> Billing:
    customer = accounts.parse(customer_account, "customer.customer_account", kinds={"customer"})
    revenue = accounts.parse(revenue_account, "customer.revenue_account", kinds={"partnerrev"})
    try:
        terms = CustomerBilling(
            decimal_or_invalid(multiplier, "customer.profit_multiplier"),
            decimal_or_invalid(cents, "customer.price_per_ai_credit_cents"),
            decimal_or_invalid(floor, "customer.floor_usd_per_mtok", default="0"),
        )
    except ValueError as e:
        raise InvalidArgument(f"customer.{e}") from e
    return Billing(customer.id, revenue.id, terms)


def _tokens(value: int, field: str) -> int:
    if value < 0 or value > MAX_TOKENS:
        raise InvalidArgument(f"{field}: between 0 and {MAX_TOKENS}")
    return value


def _costs(r_in: str, r_out: str, billing: Billing | None, input_tokens: int, output_tokens: int) -> tuple[int, int]:
    """(provider cost in ucr, customer price in uai) for these token counts."""
    usd = provider_cost_usd(input_tokens, output_tokens, Decimal(r_in), Decimal(r_out))
    ucr = usd_to_ucr(usd)
    uai = 0
    if billing is not None:
        uai = ai_credits_uai(customer_price_usd(usd, input_tokens + output_tokens, billing.terms), billing.terms)
    if ucr > MAX_UCR or uai > MAX_UCR:
        raise InvalidArgument("amount too large")
    return ucr, uai


def _billing_of(r) -> Billing | None:
    if not r.customer_account:
        return None
    return Billing(
        r.customer_account,
        r.revenue_account,
        CustomerBilling(Decimal(r.profit_multiplier), Decimal(r.price_per_ai_credit_cents), Decimal(r.floor_usd_per_mtok)),
    )


class RateLimited(Exception):
    """Internal: the window is full; the transaction is rolled back, nothing is stored."""

    def __init__(self, state: RateState) -> None:
        super().__init__(state.limited_by)
        self.state = state


class Reservations:
    def __init__(self, engine: AsyncEngine, default_ttl_s: int = 600, sqlite_synchronous: str = "FULL") -> None:
        self.engine = engine
        self.default_ttl_s = default_ttl_s
        self.runner = runner_for(engine.url.render_as_string(hide_password=False), sqlite_synchronous)
        self._known_accounts: set[str] = set()  # credit sinks known to exist (never deleted)

    def close(self) -> None:
        self.runner.close()

    async def reserve(
        self,
        request_id: str,
        account: str,
        model: str,
        input_usd_per_mtok: str,
        output_usd_per_mtok: str,
        price_book_version: str,
        max_input_tokens: int,
        max_output_tokens: int,
        ttl_s: int = 0,
        billing: Billing | None = None,
        rate_limit: RateLimit | None = None,
    ) -> ReserveOutcome:
        check_id(request_id, "request_id")
        payer = accounts.parse(account, kinds={"key", "partner"})
        in_price = decimal_or_invalid(input_usd_per_mtok, "price.input_usd_per_mtok")
        out_price = decimal_or_invalid(output_usd_per_mtok, "price.output_usd_per_mtok")
        _tokens(max_input_tokens, "max_input_tokens")
        _tokens(max_output_tokens, "max_output_tokens")
        if ttl_s < 0 or ttl_s > 7 * 24 * 3600:
            raise InvalidArgument("ttl_seconds: between 0 and one week")
        held, held_uai = _costs(str(in_price), str(out_price), billing, max_input_tokens, max_output_tokens)
        row = dict(
            request_id=request_id,
            account=payer.id,
            credit_account=USAGE_SINK,
            model=model[:120],
            input_usd_per_mtok=str(in_price),
            output_usd_per_mtok=str(out_price),
            price_book_version=price_book_version[:60],
            held_ucr=held,
            customer_account=billing.customer_account if billing else "",
            revenue_account=billing.revenue_account if billing else "",
            profit_multiplier=str(billing.terms.profit_multiplier) if billing else "",
            price_per_ai_credit_cents=str(billing.terms.price_per_ai_credit_cents) if billing else "",
            floor_usd_per_mtok=str(billing.terms.floor_usd_per_mtok) if billing else "",
            customer_held_uai=held_uai,
            rate_key=rate_limit.key if rate_limit else "",
        )
        ttl_ms = (ttl_s or self.default_ttl_s) * 1000
        try:
            out = await self.runner.run(self._reserve, row, billing, rate_limit, ttl_ms)
        except RateLimited as limited:
            return ReserveOutcome(request_id, 0, 0, 0, replayed=False, rate=limited.state)
        except InsufficientFunds:
            # a concurrent call with this id may have stored the same refusal (or won): its outcome stands
            with contextlib.suppress(sqlite3.IntegrityError, psycopg.IntegrityError):
                await self.runner.run(self._store_refusal, request_id, payer.id, held)
            raise
        except (sqlite3.IntegrityError, psycopg.IntegrityError):
            return await self.runner.run(self._after_conflict, request_id, payer.id)
        if not out.replayed:
            crash_point("reserve:after_commit")
        return out

    @staticmethod
    def _reserve(db: HotSQL, row: dict, billing: Billing | None, rate_limit: RateLimit | None,
                 ttl_ms: int) -> ReserveOutcome:
        request_id, payer, held, held_uai = row["request_id"], row["account"], row["held_ucr"], row["customer_held_uai"]
        # With a rate limit, lock the payer first: every reservation of the key waits here,
        # and a concurrent duplicate of this id then sees it reserved (a replay, not "limited").
        available = db.available(payer, lock=rate_limit is not None)
        existing = db.reservation(request_id)
        if existing is not None:
            return Reservations._replay(db, existing, payer)
        if db.transfer(f"reserve:{request_id}") is not None:
            raise InsufficientFunds(f"request {request_id!r} was refused before")
        now = clock_ms()
        rate = RateState()
        if rate_limit is not None:
            rate = evaluate(rate_limit, db.window(rate_limit.key, now - WINDOW_MS), now)
            if rate.limited:
                raise RateLimited(rate)
        if not db.debit(payer, pending=held):
            raise InsufficientFunds(f"account {payer!r} has {available} available, needs {held}")
        if billing is not None:
            have = db.available(billing.customer_account)
            if not db.debit(billing.customer_account, pending=held_uai):
                raise InsufficientFunds(f"customer has {have} uai available, needs {held_uai}")
        db.insert_reservation(**row, expires_at_ms=now + ttl_ms, created_at_ms=now)
        db.insert_transfer(f"reserve:{request_id}", "pending", payer, USAGE_SINK, held, request_id=request_id,
                           memo=row["model"])
        if billing is not None:
            db.insert_transfer(f"reserve:{request_id}:customer", "pending", billing.customer_account,
                               billing.revenue_account, held_uai, request_id=request_id, memo=row["model"])
        crash_point("reserve:before_commit")
        return ReserveOutcome(request_id, held, held_uai, available - held, replayed=False, rate=rate)

    @staticmethod
    def _store_refusal(db: HotSQL, request_id: str, account: str, held: int) -> None:
        if db.reservation(request_id) is not None:
            return  # a concurrent call with this id succeeded; that outcome stands
        if db.transfer(f"reserve:{request_id}") is None:
            db.insert_transfer(f"reserve:{request_id}", "pending", account, USAGE_SINK, held, request_id=request_id,
                               outcome=FAILED_FUNDS)

    @staticmethod
    def _after_conflict(db: HotSQL, request_id: str, account: str) -> ReserveOutcome:
        """A concurrent call with the same id won the insert: replay its outcome."""
        existing = db.reservation(request_id)
        if existing is None:
            if db.transfer(f"reserve:{request_id}") is not None:
                raise InsufficientFunds(f"request {request_id!r} was refused")
            raise Conflict(f"request id {request_id!r} is being reserved concurrently")
        return Reservations._replay(db, existing, account)

    @staticmethod
    def _replay(db: HotSQL, row, account: str) -> ReserveOutcome:
        if row.account != account:
            raise Conflict(f"request id {row.request_id!r} was reserved on another account")
        return ReserveOutcome(row.request_id, row.held_ucr, row.customer_held_uai, db.available(account),
                              replayed=True)

    async def settle(self, request_id: str, input_tokens: int, output_tokens: int, usage_source: str) -> SettleOutcome:
        check_id(request_id, "request_id")
        _tokens(input_tokens, "input_tokens")
        _tokens(output_tokens, "output_tokens")
        out = await self.runner.run(self._settle, request_id, input_tokens, output_tokens, usage_source)
        crash_point("settle:after_commit")
        return out

    def _credit_sink(self, db: HotSQL, account: str, amount: int) -> None:
        """Credits a credit-only sink, creating it the first time. The cache of sinks known
        to exist only saves the INSERT: a credit that finds no row (the transaction that
        created it rolled back after all) creates it and credits again."""
        if account not in self._known_accounts:
            db.ensure_account(accounts.parse(account))
        if not db.credit(account, amount):
            db.ensure_account(accounts.parse(account))
            if not db.credit(account, amount):
                raise Conflict(f"account {account!r} could not be credited")  # cannot happen
        self._known_accounts.add(account)

    def _settle(self, db: HotSQL, request_id: str, input_tokens: int, output_tokens: int,
                usage_source: str) -> SettleOutcome:
        r = db.reservation(request_id, lock=True)
        if r is None:
            raise NotFound(f"reservation {request_id!r} not found")
        if r.status == "posted":
            return self._settled(r, replayed=True)
        if r.status == "voided":
            raise Conflict(f"reservation {request_id!r} was voided")
        billing = _billing_of(r)
        charge, charge_uai = _costs(r.input_usd_per_mtok, r.output_usd_per_mtok, billing, input_tokens, output_tokens)
        pending = r.status == "pending"  # an expired hold was already released
        held = r.held_ucr if pending else 0
        held_uai = r.customer_held_uai if pending else 0
        paid = self._post(db, r.account, held, charge)
        paid_uai = self._post(db, r.customer_account, held_uai, charge_uai) if billing else 0
        # credit-only sinks last: they are the hottest rows
        self._credit_sink(db, USAGE_SINK, paid)
        if billing:
            self._credit_sink(db, billing.revenue_account, paid_uai)
        values = dict(
            charged_ucr=paid, unpaid_ucr=charge - paid, customer_charged_uai=paid_uai,
            customer_unpaid_uai=charge_uai - paid_uai, usage_source=usage_source,
            input_tokens=input_tokens, output_tokens=output_tokens,
        )
        db.mark_settled(request_id, **values)
        memo = f"{usage_source} usage {input_tokens}+{output_tokens} tokens, prices {r.price_book_version}"
        db.insert_transfer(f"settle:{request_id}", "post", r.account, USAGE_SINK, paid, request_id=request_id,
                           memo=memo)
        if billing:
            db.insert_transfer(f"settle:{request_id}:customer", "post", r.customer_account, billing.revenue_account,
                               paid_uai, request_id=request_id, memo=memo)
        crash_point("settle:before_commit")
        return self._settled(r, replayed=False, held=held, values=values)

    @staticmethod
    def _post(db: HotSQL, account: str, held: int, charge: int) -> int:
        """Posts ``charge`` against a hold of ``held``; returns what was actually paid."""
        from_hold = min(charge, held)
        db.post_pending(account, held, from_hold)
        extra = charge - from_hold
        if extra <= 0:
            return from_hold
        take = min(extra, max(db.available(account, lock=True), 0))
        if take and not db.debit(account, posted=take):
            raise Conflict("account changed under a locked settlement")  # cannot happen
        return from_hold + take

    @staticmethod
    def _settled(r, replayed: bool, held: int | None = None, values: dict | None = None) -> SettleOutcome:
        v = values or {}
        charged = v.get("charged_ucr", r.charged_ucr)
        h = r.held_ucr if held is None else held
        return SettleOutcome(
            request_id=r.request_id,
            held_ucr=h,
            charged_ucr=charged,
            released_ucr=max(h - charged, 0),
            unpaid_ucr=v.get("unpaid_ucr", r.unpaid_ucr),
            customer_charged_uai=v.get("customer_charged_uai", r.customer_charged_uai),
            customer_unpaid_uai=v.get("customer_unpaid_uai", r.customer_unpaid_uai),
            price_book_version=r.price_book_version,
            replayed=replayed,
        )

    @staticmethod
    def _release(db: HotSQL, r, kind: str, reason: str) -> None:
        db.post_pending(r.account, r.held_ucr, 0)
        if r.customer_account:
            db.post_pending(r.customer_account, r.customer_held_uai, 0)
        db.set_status(r.request_id, "voided" if kind == "void" else "expired")
        db.insert_transfer(f"{kind}:{r.request_id}", kind, r.account, r.credit_account, r.held_ucr,
                           request_id=r.request_id, memo=reason)

    async def void(self, request_id: str, reason: str = "") -> tuple[int, bool]:
        """Releases a pending hold. Returns ``(released_ucr, replayed)``."""
        check_id(request_id, "request_id")
        return await self.runner.run(self._void, request_id, reason[:200])

    @classmethod
    def _void(cls, db: HotSQL, request_id: str, reason: str) -> tuple[int, bool]:
        r = db.reservation(request_id, lock=True)
        if r is None:
            raise NotFound(f"reservation {request_id!r} not found")
        if r.status == "voided":
            return r.held_ucr, True
        if r.status != "pending":
            raise Conflict(f"reservation {request_id!r} is {r.status}")
        cls._release(db, r, "void", reason)
        return r.held_ucr, False

    async def expire(self, now_ms: int = 0, limit: int = 500) -> tuple[int, int]:
        """Voids pending reservations past their expiry. Safe on many replicas at once:
        each row is re-checked under its lock. Returns ``(count, released_ucr)``."""
        now = now_ms or clock_ms()
        due = await self.runner.run(lambda db: db.due(now, min(max(limit, 1), 5000)))
        count = released = 0
        for request_id in due:
            held = await self.runner.run(self._expire_one, request_id, now)
            if held is not None:
                count += 1
                released += held
        return count, released

    @classmethod
    def _expire_one(cls, db: HotSQL, request_id: str, now: int) -> int | None:
        r = db.reservation(request_id, lock=True)
        if r is None or r.status != "pending" or r.expires_at_ms > now:
            return None
        cls._release(db, r, "expire", "reservation expired")
        return r.held_ucr

